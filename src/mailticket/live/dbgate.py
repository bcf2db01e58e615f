"""One writer at a time per SQLite database inside this process.

SQLite allows one writer; a transaction that read first and writes later fails at once with
"database is locked" (no busy wait) when another thread committed in between. The worker's
sources run in threads side by side, so on SQLite their write transactions take turns here.
PostgreSQL needs no gate.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from sqlalchemy import Engine

_gates: dict[str, threading.Lock] = {}
_guard = threading.Lock()


@contextlib.contextmanager
def write_gate(engine: Engine) -> Iterator[None]:
    if engine.dialect.name != "sqlite":
        yield
        return
    key = engine.url.render_as_string(hide_password=False)
    with _guard:
        gate = _gates.setdefault(key, threading.Lock())
    with gate:
        yield
