"""Storage: the engine and session, the tables, migrations, the batch write path (COPY on
PostgreSQL, multi-row INSERT on SQLite) and the durable outbox."""
