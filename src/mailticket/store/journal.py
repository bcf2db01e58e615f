"""Undo for a unit of work's checkpoints, kept in memory instead of in a SAVEPOINT.

A batch keeps its new rows, thread refs, counters and caches in memory until it ends, so
undoing a failed workflow or message is a matter of putting Python state back. Two kinds of
change need undoing: the batch's own bookkeeping (it records an undo step for each change)
and attributes set on ORM objects (tickets, log rows), which the attribute `set` events
below record while a checkpoint is open in this thread. A SAVEPOINT costs two round trips
per message and per workflow; this costs a list append per change.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from functools import partial
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import InstanceState
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.orm.base import NEVER_SET, NO_VALUE

from mailticket.store.db import Base

Undo = Callable[[], object]


class Journal:
    """Undo steps recorded while at least one checkpoint is open; nested marks."""

    def __init__(self) -> None:
        self.steps: list[Undo] = []
        self.depth = 0
        self._undoing = False

    def record(self, undo: Undo) -> None:
        if self.depth and not self._undoing:
            self.steps.append(undo)

    def open(self) -> int:
        self.depth += 1
        if self.depth == 1:
            _ACTIVE.set(self)
        return len(self.steps)

    def release(self) -> None:
        self.depth -= 1
        if self.depth == 0:
            self.steps.clear()
            _ACTIVE.set(None)

    def undo(self, position: int) -> None:
        """Put back everything recorded since `position`, newest first, then release."""
        self._undoing = True
        try:
            while len(self.steps) > position:
                self.steps.pop()()
        finally:
            self._undoing = False
        self.release()

    def close(self) -> None:
        self.steps.clear()
        self.depth = 0
        if _ACTIVE.get() is self:
            _ACTIVE.set(None)


# The journal of the checkpoint open in this thread (or task), if any. Attribute events
# cannot be told which unit of work an object belongs to; the thread that sets it can.
_ACTIVE: ContextVar[Journal | None] = ContextVar("mailticket_journal", default=None)


def _restore(state: InstanceState[Any], key: str, old: Any) -> None:
    obj = state.obj()
    if obj is None:
        return
    if old is NO_VALUE or old is NEVER_SET:
        # It had no value in memory: a new row leaves the column to its default, a stored
        # one reloads it from the database.
        if state.session_id is not None and state.key is not None:
            state.session.expire(obj, [key])  # type: ignore[union-attr]
        else:
            state.dict.pop(key, None)
            state.committed_state.pop(key, None)
        return
    setattr(obj, key, old)


def _on_set(target: Any, value: Any, old: Any, initiator: Any) -> None:
    journal = _ACTIVE.get()
    if journal is not None:
        journal.record(partial(_restore, instance_state(target), initiator.key, old))


_instrumented: set[type[Any]] = set()
# Set when a class is mapped: every unit of work calls `instrument_models`, and going over
# every mapper each time cost more than the rest of opening one.
_new_mappers = True


@event.listens_for(Base, "after_mapper_constructed", propagate=True)
def _mapper_added(mapper: Any, cls: type[Any]) -> None:
    global _new_mappers
    _new_mappers = True


def instrument_models() -> None:
    """Listen to attribute sets on every mapped class (those imported so far)."""
    global _new_mappers
    if not _new_mappers:
        return
    _new_mappers = False
    for mapper in Base.registry.mappers:
        cls = mapper.class_
        if cls in _instrumented:
            continue
        _instrumented.add(cls)
        for attr in mapper.column_attrs:
            event.listen(getattr(cls, attr.key), "set", _on_set)
