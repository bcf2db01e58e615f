"""The shape of a workflow file, and the validated workflows the engine runs.

Two layers: pydantic models (`WorkflowSpec`, `StepSpec`) check the YAML's structure, then
the loader checks each step against the action registry and builds the frozen `Workflow`
values below. Keeping the registry check out of pydantic lets the loader map every error,
structural or action-level, back to a line of the file in the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mailticket.customers.schema import KEY_PATTERN
from mailticket.types import SLA_BREACHED, SLA_WARNING, TICKET_IDLE, Classification, TicketEvent
from mailticket.workflows.registry import ActionParams

ANY = "any"
TOP_LEVEL_KEYS = ("workflows",)
_KEY = re.compile(KEY_PATTERN)
# A customer a workflow names: its key (`acme`) or its numeric id.
CustomerName = str | int


class StepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: str = Field(min_length=1)
    # Checked against the action's own params model by the loader.
    params: dict[str, Any] | None = None
    # fail: the whole workflow is rolled back. continue: only this step's writes are undone
    # and the workflow goes on (for extras like an auto-reply that must not cost the ticket).
    on_error: Literal["fail", "continue"] = "fail"


class EventTriggerSpec(BaseModel):
    """`event_trigger:` of a workflow that runs for ticket events instead of mail."""

    model_config = ConfigDict(extra="forbid")

    event: Literal["sla_warning", "sla_breached", "ticket_idle"]
    # sla_*: only this target (default: either)
    target: Literal["first_response", "resolution"] | None = None
    # ticket_idle: no customer reply for this many days (fractions allowed: 0.5 = 12 hours)
    days: float | None = Field(default=None, gt=0, le=3650)
    # ticket_idle: only tickets in these statuses (default: open and pending)
    status: tuple[Literal["open", "pending"], ...] | None = None

    @field_validator("status", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _params_fit(self) -> EventTriggerSpec:
        if self.event == TICKET_IDLE:
            if self.days is None:
                raise ValueError("ticket_idle needs `days:` (no customer reply for N days)")
            if self.target is not None:
                raise ValueError("`target:` is for sla_warning and sla_breached")
        else:
            if self.days is not None or self.status is not None:
                raise ValueError("`days:` and `status:` are for ticket_idle")
        return self


class WorkflowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    description: str | None = None
    # Exactly one of the two: mail (by classification label) or ticket events.
    classification_trigger: tuple[str, ...] | None = None
    event_trigger: EventTriggerSpec | None = None
    # Only for these customers (keys or ids): the customer of the mail (its ticket's, else
    # its sender's) or of the event's ticket.
    customer: tuple[CustomerName, ...] | None = None
    confidence_threshold: float = Field(default=0.0, ge=0.0, le=1.0)
    enabled: bool = True
    order: int | None = None
    stop: bool = True
    # Each step is checked on its own by the loader (StepSpec, then the action's params),
    # so a structural error elsewhere in the workflow does not hide a bad step.
    workflow_steps: list[Any] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _strip_name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("name must not be blank")
        return value.strip()

    @field_validator("classification_trigger", mode="before")
    @classmethod
    def _trigger(cls, value: Any) -> tuple[str, ...]:
        # Done by hand: pydantic's union errors ("str", "list[str]" branches) read badly.
        labels = [value] if isinstance(value, str) else value
        if not isinstance(labels, list) or not labels:
            raise ValueError('must be a label, a non-empty list of labels, or "any"')
        if not all(isinstance(label, str) and label.strip() for label in labels):
            raise ValueError("every label must be a non-empty string")
        cleaned = tuple(label.strip() for label in labels)
        if ANY in cleaned and len(cleaned) > 1:
            raise ValueError('"any" already matches every label; list it alone')
        return cleaned

    @field_validator("customer", mode="before")
    @classmethod
    def _customers(cls, value: Any) -> Any:
        names = [value] if isinstance(value, str | int) else value
        if not isinstance(names, list) or not names:
            raise ValueError("a customer key or id, or a non-empty list of them")
        for name in names:
            if isinstance(name, bool) or not isinstance(name, str | int):
                raise ValueError(f"{name!r}: a customer is named by its key or its id")
            if isinstance(name, int) and name < 1:
                raise ValueError(f"{name}: customer ids start at 1")
            if isinstance(name, str) and not _KEY.match(name):
                raise ValueError(f"{name!r} is not a customer key (a-z, 0-9, '.', '_', '-')")
        return tuple(names)

    @model_validator(mode="after")
    def _one_trigger(self) -> WorkflowSpec:
        if self.classification_trigger is None and self.event_trigger is None:
            raise ValueError(
                "missing required key 'classification_trigger' (or 'event_trigger' for "
                "ticket events: sla_warning, sla_breached, ticket_idle)"
            )
        return self

    # Field validators (not the model's): the error then points at the offending key.
    @field_validator("event_trigger")
    @classmethod
    def _not_both(cls, value: EventTriggerSpec | None, info: ValidationInfo) -> Any:
        if value is not None and info.data.get("classification_trigger") is not None:
            raise ValueError(
                "a workflow runs for mail (classification_trigger) or for ticket events "
                "(event_trigger), not both"
            )
        return value

    @field_validator("confidence_threshold")
    @classmethod
    def _threshold_for_mail(cls, value: float, info: ValidationInfo) -> float:
        if info.data.get("event_trigger") is not None:
            raise ValueError("confidence_threshold is for classification_trigger workflows")
        return value


@dataclass(frozen=True)
class Step:
    action: str
    params: ActionParams
    line: int  # where the step starts in its file: error messages point at it
    continue_on_error: bool = False


@dataclass(frozen=True)
class EventTrigger:
    event: str  # sla_warning | sla_breached | ticket_idle
    target: str | None = None
    days: float | None = None
    statuses: tuple[str, ...] = ("open", "pending")

    def matches(self, event: TicketEvent) -> bool:
        if event.kind != self.event:
            return False
        if self.event == TICKET_IDLE:
            # Each workflow asks for its own quiet period: a 3-day reminder and a 7-day
            # close are two events of the same silence. Matched by the event's target,
            # which the sweep named after this trigger: `idle_days` is read back from
            # it, rounded (`idle_target`), so 0.0416666667 days (an hour) would never
            # equal it.
            return event.target == idle_target(self.days or 0)
        return self.target is None or event.target == self.target

    @property
    def text(self) -> str:
        if self.event == TICKET_IDLE:
            return f"{self.event} ({idle_target(self.days or 0)}, {'/'.join(self.statuses)})"
        return f"{self.event} ({self.target})" if self.target else self.event


def idle_target(days: float) -> str:
    """The `target` of a ticket_idle event: its quiet period (`7d`, `0.5d`)."""
    return f"{days:g}d"


@dataclass(frozen=True)
class Workflow:
    name: str
    triggers: tuple[str, ...]  # ("any",) matches every label; () for an event workflow
    confidence_threshold: float
    steps: tuple[Step, ...]
    order: int
    stop: bool = True
    enabled: bool = True
    description: str | None = None
    file: str = ""
    line: int = 0
    event: EventTrigger | None = None
    # Customer keys / ids the workflow is limited to; () = every customer and none.
    customers: tuple[CustomerName, ...] = ()
    customer_line: int = 0

    @property
    def matches_any(self) -> bool:
        return self.triggers == (ANY,)

    def triggered_by(self, label: str) -> bool:
        return self.event is None and (self.matches_any or label in self.triggers)

    def triggered_by_any(self, labels: tuple[str, ...]) -> bool:
        return any(self.triggered_by(label) for label in labels)

    def for_customer(self, customer: tuple[int, str] | None) -> bool:
        """Whether the workflow applies to `customer` (id, key); None: no customer."""
        if not self.customers:
            return True
        return customer is not None and (
            customer[0] in self.customers or customer[1] in self.customers
        )

    def below_threshold(self, confidence: float) -> bool:
        return confidence < self.confidence_threshold

    def accepts(self, classification: Classification) -> bool:
        return self.triggered_by(classification.label) and not self.below_threshold(
            classification.confidence
        )

    @property
    def trigger_text(self) -> str:
        if self.event is not None:
            return f"event: {self.event.text}"
        return ", ".join(self.triggers)


@dataclass(frozen=True)
class WorkflowSet:
    """Enabled workflows in run order (lower `order` first, then file position)."""

    workflows: tuple[Workflow, ...]
    disabled: tuple[Workflow, ...] = ()
    sources: tuple[str, ...] = ()

    def __iter__(self) -> Iterator[Workflow]:
        return iter(self.workflows)

    def __len__(self) -> int:
        return len(self.workflows)

    def triggered(
        self,
        classification: Classification,
        *,
        labels: tuple[str, ...] = (),
        customer: Callable[[], tuple[int, str] | None] | None = None,
    ) -> list[Workflow]:
        """Every enabled workflow whose trigger names this label (or one of `labels`, e.g.
        `spoofed?`), whatever the confidence: the engine records the ones below their
        threshold as skipped. `customer` (id, key) is asked only when a workflow is limited
        to customers."""
        names = (classification.label, *labels)
        found = [wf for wf in self.workflows if wf.triggered_by_any(names)]
        return _of_customer(found, customer)

    def for_event(
        self, event: TicketEvent, customer: Callable[[], tuple[int, str] | None] | None = None
    ) -> list[Workflow]:
        """Every enabled workflow whose event trigger matches `event`, in run order."""
        found = [wf for wf in self.workflows if wf.event is not None and wf.event.matches(event)]
        return _of_customer(found, customer)

    def idle_triggers(self) -> list[EventTrigger]:
        """The ticket_idle triggers of the enabled workflows, each once."""
        out: list[EventTrigger] = []
        for wf in self.workflows:
            if wf.event is not None and wf.event.event == TICKET_IDLE and wf.event not in out:
                out.append(wf.event)
        return out

    @property
    def has_events(self) -> bool:
        return any(wf.event is not None for wf in self.workflows)

    def customer_names(self) -> list[tuple[CustomerName, Workflow]]:
        """Every customer the workflows name, with the workflow naming it (for the start-up
        check against the directory)."""
        return [(name, wf) for wf in (*self.workflows, *self.disabled) for name in wf.customers]

    def matching(self, classification: Classification) -> list[Workflow]:
        return [wf for wf in self.workflows if wf.accepts(classification)]

    def below_threshold(self, classification: Classification) -> list[Workflow]:
        return [
            wf
            for wf in self.triggered(classification)
            if wf.below_threshold(classification.confidence)
        ]

    def get(self, name: str) -> Workflow | None:
        return next((wf for wf in (*self.workflows, *self.disabled) if wf.name == name), None)


def _of_customer(
    found: list[Workflow], customer: Callable[[], tuple[int, str] | None] | None
) -> list[Workflow]:
    if not any(wf.customers for wf in found):
        return found
    who = customer() if customer is not None else None
    return [wf for wf in found if wf.for_customer(who)]


__all__ = [
    "ANY",
    "SLA_BREACHED",
    "SLA_WARNING",
    "TICKET_IDLE",
    "EventTrigger",
    "EventTriggerSpec",
    "Step",
    "StepSpec",
    "Workflow",
    "WorkflowSet",
    "WorkflowSpec",
    "idle_target",
]
