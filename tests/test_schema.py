"""`alembic upgrade heads` must produce exactly the models' schema, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from mailticket.model_registry import metadata
from mailticket.store.migrate import head_revisions, is_at_head


def test_migrations_match_models(engine: Engine) -> None:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, metadata)
    assert diff == [], f"models and migrations disagree: {diff}"


def test_seed_table_names_exist(engine: Engine) -> None:
    names = set(inspect(engine).get_table_names())
    assert {"tticket_tickets", "tticket_comments", "tticket_email_log",
            "email_workflow_executions"} <= names
    cols = {c["name"] for c in inspect(engine).get_columns("tticket_email_log")}
    assert {"id", "ticket_id", "email_message_id", "email_subject", "email_from",
            "email_received_at", "is_reply", "thread_data", "created_at"} <= cols


def test_database_is_at_head(engine: Engine, db_url: str) -> None:
    assert head_revisions(db_url)
    assert is_at_head(engine)
