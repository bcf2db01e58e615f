"""backends: remote links, remote comment ids, webhook deliveries, polling cursors

Revision ID: 0005_backends
Revises: 0003_live
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_backends"
down_revision: str | Sequence[str] | None = "0004_api"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NOW = sa.text("CURRENT_TIMESTAMP")


def upgrade() -> None:
    op.create_table(
        "mailticket_remote_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("tticket_tickets.id"), nullable=False),
        sa.Column("backend", sa.String(length=64), nullable=False),
        sa.Column("remote_id", sa.String(length=255), nullable=True),
        sa.Column("remote_key", sa.String(length=255), nullable=True),
        sa.Column("remote_url", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("broken_reason", sa.Text(), nullable=True),
        sa.Column("last_status_raw", sa.String(length=255), nullable=True),
        sa.Column("last_status", sa.String(length=16), nullable=True),
        sa.Column("last_synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("backend", "remote_id", name="uq_remote_link_remote"),
    )
    op.create_index(
        "ix_remote_link_ticket", "mailticket_remote_links", ["ticket_id", "backend"]
    )
    op.create_table(
        "mailticket_remote_comments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "link_id", sa.Integer(), sa.ForeignKey("mailticket_remote_links.id"), nullable=False
        ),
        sa.Column("remote_comment_id", sa.String(length=255), nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column("comment_id", sa.Integer(), sa.ForeignKey("tticket_comments.id"), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("link_id", "remote_comment_id", name="uq_remote_comment"),
    )
    op.create_table(
        "mailticket_webhook_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("backend", sa.String(length=64), nullable=False),
        sa.Column("delivery_id", sa.String(length=255), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("backend", "delivery_id", name="uq_webhook_delivery"),
    )
    op.create_table(
        "mailticket_backend_cursors",
        sa.Column("backend", sa.String(length=64), nullable=False),
        sa.Column("updated_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("polled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("backend"),
    )


def downgrade() -> None:
    op.drop_table("mailticket_backend_cursors")
    op.drop_table("mailticket_webhook_deliveries")
    op.drop_table("mailticket_remote_comments")
    op.drop_index("ix_remote_link_ticket", table_name="mailticket_remote_links")
    op.drop_table("mailticket_remote_links")
