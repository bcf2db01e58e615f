"""a ticket's participants as people changed them (added / removed)

Revision ID: 0012_participants
Revises: 0011_customers_wiring
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_participants"
down_revision: str | Sequence[str] | None = "0011_customers_wiring"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mailticket_participants",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("tticket_tickets.id"), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False,
            server_default=sa.text("CURRENT_TIMESTAMP"),
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False,
            server_default=sa.text("CURRENT_TIMESTAMP"),
        ),
        sa.UniqueConstraint("ticket_id", "address", name="uq_participant"),
    )
    op.create_index(
        "ix_mailticket_participants_ticket_id", "mailticket_participants", ["ticket_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_mailticket_participants_ticket_id", table_name="mailticket_participants")
    op.drop_table("mailticket_participants")
