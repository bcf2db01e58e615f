"""customers (contacts, domains, ticket evidence), sender-auth evidence, SLA state and events

Revision ID: 0009_customers_sla
Revises: 0005_backends
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009_customers_sla"
down_revision: str | Sequence[str] | None = "0007_backends_sync"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NOW = sa.text("CURRENT_TIMESTAMP")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _ts(name: str, nullable: bool = False, **kw: Any) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, **kw)


def upgrade() -> None:
    op.create_table(
        "mailticket_customers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        _ts("created_at", server_default=_NOW),
        _ts("updated_at", server_default=_NOW),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    op.create_table(
        "mailticket_customer_contacts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "customer_id", sa.Integer(), sa.ForeignKey("mailticket_customers.id"), nullable=False
        ),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("address"),
    )
    op.create_index(
        "ix_mailticket_customer_contacts_customer_id",
        "mailticket_customer_contacts",
        ["customer_id"],
    )
    op.create_table(
        "mailticket_customer_domains",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "customer_id", sa.Integer(), sa.ForeignKey("mailticket_customers.id"), nullable=False
        ),
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("domain"),
    )
    op.create_index(
        "ix_mailticket_customer_domains_customer_id",
        "mailticket_customer_domains",
        ["customer_id"],
    )
    op.create_table(
        "mailticket_ticket_customers",
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("tticket_tickets.id"), nullable=False),
        sa.Column(
            "customer_id", sa.Integer(), sa.ForeignKey("mailticket_customers.id"), nullable=False
        ),
        sa.Column("matched_by", sa.String(length=16), nullable=False),
        sa.Column("matched_value", sa.Text(), nullable=True),
        sa.Column(
            "email_log_id", sa.Integer(), sa.ForeignKey("tticket_email_log.id"), nullable=True
        ),
        _ts("created_at", server_default=_NOW),
        sa.PrimaryKeyConstraint("ticket_id"),
    )
    op.create_index(
        "ix_mailticket_ticket_customers_customer_id",
        "mailticket_ticket_customers",
        ["customer_id"],
    )
    op.create_table(
        "mailticket_email_sender_auth",
        sa.Column(
            "email_log_id", sa.Integer(), sa.ForeignKey("tticket_email_log.id"), nullable=False
        ),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("suspect", sa.Boolean(), nullable=False),
        sa.Column("from_domain", sa.String(length=253), nullable=True),
        sa.Column("evidence", _JSON, nullable=False),
        _ts("created_at", server_default=_NOW),
        sa.PrimaryKeyConstraint("email_log_id"),
    )
    op.create_index(
        "ix_mailticket_email_sender_auth_suspect", "mailticket_email_sender_auth", ["suspect"]
    )
    op.create_table(
        "mailticket_ticket_status_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("tticket_tickets.id"), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        _ts("changed_at"),
        sa.Column("source", sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_ticket_status_history",
        "mailticket_ticket_status_history",
        ["ticket_id", "changed_at", "id"],
    )
    op.create_table(
        "mailticket_ticket_sla",
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("tticket_tickets.id"), nullable=False),
        sa.Column("policy", sa.Text(), nullable=True),
        sa.Column("calendar", sa.String(length=64), nullable=True),
        sa.Column("state", sa.String(length=10), nullable=True),
        sa.Column("paused", sa.Boolean(), nullable=False),
        _ts("first_response_at", nullable=True),
        _ts("first_response_due_at", nullable=True),
        sa.Column("first_response_state", sa.String(length=10), nullable=True),
        _ts("resolution_due_at", nullable=True),
        sa.Column("resolution_state", sa.String(length=10), nullable=True),
        _ts("computed_at", nullable=True),
        _ts("next_check_at", nullable=True),
        sa.PrimaryKeyConstraint("ticket_id"),
    )
    for column in ("state", "first_response_due_at", "resolution_due_at", "next_check_at"):
        op.create_index(f"ix_mailticket_ticket_sla_{column}", "mailticket_ticket_sla", [column])
    op.create_table(
        "mailticket_sla_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("tticket_tickets.id"), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=16), nullable=False),
        sa.Column("occurrence", sa.String(length=40), nullable=False),
        _ts("at"),
        sa.Column("fired", sa.Boolean(), nullable=False),
        _ts("created_at", server_default=_NOW),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("ticket_id", "kind", "target", "occurrence", name="uq_sla_event"),
    )


def downgrade() -> None:
    op.drop_table("mailticket_sla_events")
    for column in ("state", "first_response_due_at", "resolution_due_at", "next_check_at"):
        op.drop_index(f"ix_mailticket_ticket_sla_{column}", table_name="mailticket_ticket_sla")
    op.drop_table("mailticket_ticket_sla")
    op.drop_index("ix_ticket_status_history", table_name="mailticket_ticket_status_history")
    op.drop_table("mailticket_ticket_status_history")
    op.drop_index(
        "ix_mailticket_email_sender_auth_suspect", table_name="mailticket_email_sender_auth"
    )
    op.drop_table("mailticket_email_sender_auth")
    op.drop_index(
        "ix_mailticket_ticket_customers_customer_id", table_name="mailticket_ticket_customers"
    )
    op.drop_table("mailticket_ticket_customers")
    op.drop_index(
        "ix_mailticket_customer_domains_customer_id", table_name="mailticket_customer_domains"
    )
    op.drop_table("mailticket_customer_domains")
    op.drop_index(
        "ix_mailticket_customer_contacts_customer_id", table_name="mailticket_customer_contacts"
    )
    op.drop_table("mailticket_customer_contacts")
    op.drop_table("mailticket_customers")
