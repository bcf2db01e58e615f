"""closed tickets: when a ticket was closed (the reopen window) and follow-up links

Revision ID: 0013_followups
Revises: 0012_participants
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_followups"
down_revision: str | Sequence[str] | None = "0012_participants"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tticket_tickets") as batch:
        batch.add_column(sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("followup_of_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_tticket_tickets_followup_of_id", "tticket_tickets", ["followup_of_id"], ["id"]
        )
        batch.create_index("ix_tticket_tickets_followup_of_id", ["followup_of_id"])
    # Tickets closed before this column existed: their best known closing time.
    op.execute(
        "UPDATE tticket_tickets SET closed_at = COALESCE(resolved_at, updated_at)"
        " WHERE status IN ('resolved', 'closed')"
    )


def downgrade() -> None:
    with op.batch_alter_table("tticket_tickets") as batch:
        batch.drop_index("ix_tticket_tickets_followup_of_id")
        batch.drop_constraint("fk_tticket_tickets_followup_of_id", type_="foreignkey")
        batch.drop_column("followup_of_id")
        batch.drop_column("closed_at")
