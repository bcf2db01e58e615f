"""The shape of a workflow file, and the validated workflows the engine runs.

Two layers: pydantic models (`WorkflowSpec`, `StepSpec`) check the YAML's structure, then
the loader checks each step against the action registry and builds the frozen `Workflow`
values below. Keeping the registry check out of pydantic lets the loader map every error,
structural or action-level, back to a line of the file in the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mailticket.types import Classification
from mailticket.workflows.registry import ActionParams

ANY = "any"
TOP_LEVEL_KEYS = ("workflows",)


class StepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: str = Field(min_length=1)
    # Checked against the action's own params model by the loader.
    params: dict[str, Any] | None = None
    # fail: the whole workflow is rolled back. continue: only this step's writes are undone
    # and the workflow goes on (for extras like an auto-reply that must not cost the ticket).
    on_error: Literal["fail", "continue"] = "fail"


class WorkflowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    description: str | None = None
    classification_trigger: tuple[str, ...]
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


@dataclass(frozen=True)
class Step:
    action: str
    params: ActionParams
    line: int  # where the step starts in its file: error messages point at it
    continue_on_error: bool = False


@dataclass(frozen=True)
class Workflow:
    name: str
    triggers: tuple[str, ...]  # ("any",) matches every label
    confidence_threshold: float
    steps: tuple[Step, ...]
    order: int
    stop: bool = True
    enabled: bool = True
    description: str | None = None
    file: str = ""
    line: int = 0

    @property
    def matches_any(self) -> bool:
        return self.triggers == (ANY,)

    def triggered_by(self, label: str) -> bool:
        return self.matches_any or label in self.triggers

    def below_threshold(self, confidence: float) -> bool:
        return confidence < self.confidence_threshold

    def accepts(self, classification: Classification) -> bool:
        return self.triggered_by(classification.label) and not self.below_threshold(
            classification.confidence
        )

    @property
    def trigger_text(self) -> str:
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

    def triggered(self, classification: Classification) -> list[Workflow]:
        """Every enabled workflow whose trigger names this label, whatever the confidence:
        the engine records the ones below their threshold as skipped."""
        return [wf for wf in self.workflows if wf.triggered_by(classification.label)]

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
