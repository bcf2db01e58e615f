"""live sources: IMAP ledger and source leases

Revision ID: 0003_live
Revises: 0001_core
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_live"
down_revision: str | Sequence[str] | None = "0002_outbox"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mailticket_imap_ledger",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mailbox", sa.String(length=255), nullable=False),
        sa.Column("folder", sa.String(length=255), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column(
            "stored_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column("server_done", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ux_imap_ledger_uid",
        "mailticket_imap_ledger",
        ["mailbox", "folder", "uidvalidity", "uid"],
        unique=True,
    )
    op.create_index(
        "ix_imap_ledger_pending", "mailticket_imap_ledger", ["mailbox", "folder", "server_done"]
    )
    op.create_table(
        "mailticket_source_leases",
        sa.Column("name", sa.String(length=600), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("mailticket_source_leases")
    op.drop_index("ix_imap_ledger_pending", table_name="mailticket_imap_ledger")
    op.drop_index("ux_imap_ledger_uid", table_name="mailticket_imap_ledger")
    op.drop_table("mailticket_imap_ledger")
