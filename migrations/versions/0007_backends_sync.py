"""backends sync: the status a remote twin should have; when existence was last checked

Revision ID: 0007_backends_sync
Revises: 0005_backends
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_backends_sync"
down_revision: str | Sequence[str] | None = "0005_backends"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("mailticket_remote_links") as batch:
        batch.add_column(sa.Column("expected_status", sa.String(length=20), nullable=True))
    with op.batch_alter_table("mailticket_backend_cursors") as batch:
        batch.add_column(sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mailticket_backend_cursors") as batch:
        batch.drop_column("checked_at")
    with op.batch_alter_table("mailticket_remote_links") as batch:
        batch.drop_column("expected_status")
