"""raw messages: TOAST compression lz4 instead of pglz on PostgreSQL

Revision ID: 0015_raw_lz4
Revises: 0014_scoped_tokens

Every stored message above 2 KB goes through TOAST compression. Mail is mostly base64 and
already-compressed attachments, which pglz tries hard and fails to shrink: on the support mix
the table is as large as the raw bytes either way, but pglz's attempt cost the database about
as much CPU as writing the rows (8-message transactions of the mix: 0.90-1.41 s with pglz,
0.56-0.73 s with lz4, same size). lz4 gives up as early and compresses what compresses, at a
fraction of the CPU. Only new values are written with it; stored rows keep pglz and stay
readable. Nothing to do on SQLite, on PostgreSQL before 14, or on a server built without lz4.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015_raw_lz4"
down_revision: str | Sequence[str] | None = "0014_scoped_tokens"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMN = "ALTER TABLE mailticket_raw_messages ALTER COLUMN raw SET COMPRESSION {}"


def _lz4_available(conn: sa.Connection) -> bool:
    version = conn.dialect.server_version_info
    if conn.dialect.name != "postgresql" or version is None or version < (14,):
        return False
    # The setting lists lz4 among its values only when the server was built with it.
    values = conn.scalar(
        sa.text("SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'")
    )
    return bool(values) and "lz4" in values


def upgrade() -> None:
    conn = op.get_bind()
    if _lz4_available(conn):
        op.execute(_COLUMN.format("lz4"))


def downgrade() -> None:
    conn = op.get_bind()
    if _lz4_available(conn):
        op.execute(_COLUMN.format("pglz"))
