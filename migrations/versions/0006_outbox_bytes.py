"""outbox: the composed message as bytes in its own column, not base64 inside the JSON

Revision ID: 0006_outbox_bytes
Revises: 0005_backends

Existing rows are converted: `payload.message_b64` is decoded into `message` and removed from
the payload (and back on downgrade). Rows are read and written in pages, so a large outbox
neither sits in memory at once nor needs dialect-specific SQL.
"""

import base64
import binascii
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006_outbox_bytes"
down_revision: str | Sequence[str] | None = "0005_backends"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_PAGE = 500

_outbox = sa.table(
    "mailticket_outbox",
    sa.column("id", sa.Integer()),
    sa.column("payload", _JSON),
    sa.column("message", sa.LargeBinary()),
)


def _pages(conn: sa.Connection, where: Any) -> Any:
    last = 0
    while True:
        rows = conn.execute(
            sa.select(_outbox.c.id, _outbox.c.payload, _outbox.c.message)
            .where(where, _outbox.c.id > last)
            .order_by(_outbox.c.id)
            .limit(_PAGE)
        ).all()
        if not rows:
            return
        yield rows
        last = rows[-1].id


def upgrade() -> None:
    op.add_column("mailticket_outbox", sa.Column("message", sa.LargeBinary(), nullable=True))
    conn = op.get_bind()
    for rows in _pages(conn, _outbox.c.message.is_(None)):
        for row in rows:
            payload = dict(row.payload or {})
            encoded = payload.pop("message_b64", None)
            if encoded is None:
                continue
            try:
                message: bytes | None = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError, TypeError):
                # Left as it was: delivery reports it as a malformed payload, as before.
                continue
            conn.execute(
                sa.update(_outbox)
                .where(_outbox.c.id == row.id)
                .values(payload=payload, message=message)
            )


def downgrade() -> None:
    conn = op.get_bind()
    for rows in _pages(conn, _outbox.c.message.is_not(None)):
        for row in rows:
            payload = dict(row.payload or {})
            payload["message_b64"] = base64.b64encode(row.message).decode("ascii")
            conn.execute(sa.update(_outbox).where(_outbox.c.id == row.id).values(payload=payload))
    with op.batch_alter_table("mailticket_outbox") as batch:
        batch.drop_column("message")
