"""API tokens scoped to one customer (customer isolation)

Revision ID: 0014_scoped_tokens
Revises: 0011_customers_wiring
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_scoped_tokens"
down_revision: str | Sequence[str] | None = "0013_followups"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("mailticket_api_tokens") as batch:
        batch.add_column(
            sa.Column(
                "customer_id",
                sa.Integer(),
                sa.ForeignKey("mailticket_customers.id", name="fk_api_tokens_customer_id"),
                nullable=True,
            )
        )
        batch.create_index("ix_mailticket_api_tokens_customer_id", ["customer_id"])


def downgrade() -> None:
    with op.batch_alter_table("mailticket_api_tokens") as batch:
        batch.drop_index("ix_mailticket_api_tokens_customer_id")
        batch.drop_constraint("fk_api_tokens_customer_id", type_="foreignkey")
        batch.drop_column("customer_id")
