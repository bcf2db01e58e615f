"""The action registry: each workflow action is a small named unit with a typed params model.

Features register their own actions (outgoing mail registers `send_auto_reply`, backends
register `push_to_backend`) by listing their module in ACTION_MODULES; the loader imports them
before validating a file, so an unknown action or param fails at load time.

A workflow runs for a message (`classification_trigger`) or for a ticket event
(`event_trigger`: an SLA threshold, an idle ticket). Each action says which it can serve
(`on`): the loader refuses, with the line, an action that needs an email in a workflow that
has none.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import Session

from mailticket.reading.senderauth.verdict import SPOOFED_LABEL
from mailticket.settings import Settings
from mailticket.store.batch import Batch
from mailticket.store.models import EmailLog, Ticket
from mailticket.types import Classification, ParsedEmail, ThreadMatch, TicketEvent

ACTION_MODULES: list[str] = [
    "mailticket.workflows.actions",
    "mailticket.outbound.actions",
    "mailticket.backends.actions",
    "mailticket.escalation.actions",
]

MAIL, EVENT = "mail", "event"
BOTH: frozenset[str] = frozenset({MAIL, EVENT})


class ActionParams(BaseModel):
    """Base for every action's params: unknown keys are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def mail_templates(self) -> tuple[str, ...]:
        """The mail templates this step renders: the loader checks each exists, so a typo
        stops start-up instead of failing (and rolling back) the workflow on every mail."""
        return ()


class NoParams(ActionParams):
    pass


class ActionError(Exception):
    """An action could not do its job; the workflow execution is recorded as failed."""


@dataclass
class ActionContext:
    # The unit of work the message (or event) is written in: read and write through it
    # (tickets, rows, thread refs) and a failed workflow is undone without a round trip.
    work: Batch
    settings: Settings
    # The message, for a run a message triggered; None for an event run (see `event`).
    email: ParsedEmail | None
    classification: Classification | None
    # What header threading found before any workflow ran (None: nothing matched).
    thread: ThreadMatch | None
    email_log: EmailLog | None  # this message's log row (has an id)
    raw_message_id: int | None
    # The pipeline's clock: ticket numbers use its date (tests pin it; production: now).
    now: datetime | None = None
    # The same clock as it reads now, never backdated by an archive import: how old mail is.
    clock_now: datetime | None = None
    ticket: Ticket | None = None  # set once an action created or linked a ticket
    created: bool = False
    linked: bool = False
    ignored: bool = False
    # Free-form per-message notes actions leave for each other (e.g. "auto_reply_queued").
    notes: dict[str, Any] = field(default_factory=dict)
    # The event an event-triggered run is for (its ticket is `ticket`).
    event: TicketEvent | None = None
    # The sender failed validation (`spoofed?`): no customer by domain, no subject threading.
    suspect: bool = False
    # Further tickets the threaded original belongs to (multi-ticket): a reply joins them.
    joined: tuple[int, ...] = ()
    # Every ticket the message opened or joined so far, the first first (`ticket` is the
    # one the running workflow works on).
    tickets: list[Ticket] = field(default_factory=list)
    # The tickets the running workflow opened or joined (a `split_by` create opens several;
    # add_tags, set_priority and assign act on each).
    group: list[Ticket] = field(default_factory=list)
    workflow: str | None = None  # the running workflow's name
    # Set by the `quarantine` action: the message is held with this reason instead.
    quarantine: str | None = None

    @property
    def session(self) -> Session:
        """The unit of work's session, for actions that run their own queries (the batch
        writes its rows before any such query, so they see them)."""
        return self.work.session

    @property
    def labels(self) -> tuple[str, ...]:
        """What mail workflows trigger on: the classification, and `spoofed?` when the
        sender failed validation."""
        if self.classification is None:
            return ()
        return (self.classification.label, SPOOFED_LABEL) if self.suspect else (
            self.classification.label,
        )

    def mail(self, what: str) -> Mail:
        """The message's facts, for actions that need an email (the loader keeps them out of
        event workflows; this is the check at run time)."""
        if self.email is None or self.email_log is None or self.classification is None:
            raise ActionError(f"{what} needs an email; this run was triggered by an event")
        return Mail(self.email, self.classification, self.email_log)

    def attach(self, ticket: Ticket) -> None:
        """Record that the message (or event run) now works on `ticket`."""
        self.ticket = ticket
        if all(t.id != ticket.id for t in self.group):
            self.group.append(ticket)
        if all(t.id != ticket.id for t in self.tickets):
            self.tickets.append(ticket)


@dataclass(frozen=True)
class Mail:
    email: ParsedEmail
    classification: Classification
    email_log: EmailLog


P = TypeVar("P", bound=ActionParams)
ActionFunc = Callable[[ActionContext, Any], dict[str, Any]]


@dataclass(frozen=True)
class ActionSpec(Generic[P]):
    name: str
    params_model: type[P]
    func: ActionFunc
    description: str = ""
    # Reads and writes only through `ctx.work` (and attributes of the objects it hands
    # out), so a failure is undone in memory. Otherwise the engine writes the batch first
    # and runs the workflow inside a SAVEPOINT, which costs round trips per message.
    through_work: bool = False
    # The runs it can serve: mail-triggered, event-triggered, or both.
    on: frozenset[str] = BOTH


_REGISTRY: dict[str, ActionSpec[Any]] = {}
_loaded = False


def action(
    name: str,
    params_model: type[P] = NoParams,  # type: ignore[assignment]
    *,
    through_work: bool = False,
    on: frozenset[str] = BOTH,
) -> Callable[[ActionFunc], ActionFunc]:
    def decorate(func: ActionFunc) -> ActionFunc:
        if name in _REGISTRY and _REGISTRY[name].func is not func:
            raise RuntimeError(f"workflow action {name!r} registered twice")
        _REGISTRY[name] = ActionSpec(
            name, params_model, func, (func.__doc__ or "").strip(), through_work, on
        )
        return func

    return decorate


def load_action_modules() -> None:
    global _loaded
    if _loaded:
        return
    for module in ACTION_MODULES:
        importlib.import_module(module)
    _loaded = True


def registered_actions() -> Mapping[str, ActionSpec[Any]]:
    load_action_modules()
    return dict(_REGISTRY)


def get_action(name: str) -> ActionSpec[Any]:
    load_action_modules()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise KeyError(f"unknown action {name!r} (known: {known})") from None
