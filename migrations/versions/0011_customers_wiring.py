"""multi-ticket threading (message <-> ticket links) and event-triggered workflow runs

Revision ID: 0011_customers_wiring
Revises: 0009_customers_sla
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_customers_wiring"
down_revision: str | Sequence[str] | None = "0009_customers_sla"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mailticket_email_tickets",
        sa.Column(
            "email_log_id", sa.Integer(), sa.ForeignKey("tticket_email_log.id"), nullable=False
        ),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("tticket_tickets.id"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("CURRENT_TIMESTAMP"),
        ),
        sa.PrimaryKeyConstraint("email_log_id", "ticket_id"),
    )
    op.create_index(
        "ix_mailticket_email_tickets_ticket_id", "mailticket_email_tickets", ["ticket_id"]
    )
    with op.batch_alter_table("email_workflow_executions") as batch:
        batch.add_column(sa.Column("trigger", sa.String(length=48), nullable=True))
        batch.add_column(
            sa.Column(
                "ticket_id",
                sa.Integer(),
                sa.ForeignKey(
                    "tticket_tickets.id", name="fk_email_workflow_executions_ticket_id"
                ),
                nullable=True,
            )
        )
        batch.create_index("ix_email_workflow_executions_trigger", ["trigger"])
        batch.create_index("ix_email_workflow_executions_ticket_id", ["ticket_id"])


def downgrade() -> None:
    with op.batch_alter_table("email_workflow_executions") as batch:
        batch.drop_index("ix_email_workflow_executions_ticket_id")
        batch.drop_index("ix_email_workflow_executions_trigger")
        batch.drop_constraint("fk_email_workflow_executions_ticket_id", type_="foreignkey")
        batch.drop_column("ticket_id")
        batch.drop_column("trigger")
    op.drop_index("ix_mailticket_email_tickets_ticket_id", table_name="mailticket_email_tickets")
    op.drop_table("mailticket_email_tickets")
