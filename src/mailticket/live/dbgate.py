"""The SQLite write gate lives in the store (the outbox needs it too); kept importable here
for the live sources."""

from mailticket.store.gate import write_gate

__all__ = ["write_gate"]
