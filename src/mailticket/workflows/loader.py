"""Load and validate workflow YAML: one file, or a folder of *.yaml / *.yml files.

Every problem is reported as `file:line: reason`, all of them at once, so an admin fixes a
file in one pass. The YAML is composed into a node tree first: the nodes keep their marks,
which is how a pydantic error location becomes the line of the offending key or value.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from pydantic import BaseModel, ValidationError

from mailticket.reading.senderauth.verdict import SPOOFED_LABEL
from mailticket.workflows import registry
from mailticket.workflows.schema import (
    ANY,
    TOP_LEVEL_KEYS,
    EventTrigger,
    Step,
    StepSpec,
    Workflow,
    WorkflowSet,
    WorkflowSpec,
)
from mailticket.yamlconfig import ConfigIssue, child, dotted, line_at, line_of, read_yaml

DEFAULT_PATH = Path(__file__).with_name("default.yaml")
SUFFIXES = (".yaml", ".yml")
WHAT = "`workflows:` with a list of workflows"
# The text can come from the HTTP API (POST /api/v1/workflows/validate): yamlconfig's
# reader bounds its depth and alias expansion.
WorkflowIssue = ConfigIssue


class _Named(NamedTuple):
    """Where a workflow name appears; kept even for invalid workflows, so a duplicate
    is reported in the same pass as the other mistakes."""

    name: str
    file: str
    line: int


class WorkflowLoadError(Exception):
    def __init__(self, issues: list[WorkflowIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


def load_workflows(
    path: Path | None = None,
    *,
    templates: Path | None = None,
    labels: frozenset[str] | None = None,
) -> WorkflowSet:
    """Validate every file under `path` (None: the shipped default.yaml) into one set.
    `templates`: the mail-template folder the steps' templates must be in; `labels`: the
    labels the classifier can give, which a classification_trigger must name (None: either
    is unchecked)."""
    files, issues = _files(path if path is not None else DEFAULT_PATH)
    registry.load_action_modules()
    found: list[Workflow] = []
    names: list[_Named] = []
    positions = count(1)
    for file in files:
        found += _load_file(file, issues, names, positions, templates, labels)
    first_seen: dict[str, _Named] = {}
    for named in names:
        earlier = first_seen.setdefault(named.name, named)
        if earlier is not named:
            issues.append(
                WorkflowIssue(
                    named.file,
                    named.line,
                    f"duplicate workflow name {named.name!r} "
                    f"(first defined at {earlier.file}:{earlier.line})",
                )
            )
    if issues:
        rank = {str(f): i for i, f in enumerate(files)}
        issues.sort(key=lambda issue: (rank.get(issue.file, -1), issue.line))
        raise WorkflowLoadError(issues)
    # sorted() is stable, so equal `order` values keep their file position.
    ordered = sorted(found, key=lambda wf: wf.order)
    return WorkflowSet(
        workflows=tuple(wf for wf in ordered if wf.enabled),
        disabled=tuple(wf for wf in ordered if not wf.enabled),
        sources=tuple(str(f) for f in files),
    )


def _files(path: Path) -> tuple[list[Path], list[WorkflowIssue]]:
    if path.is_dir():
        files = sorted(
            p for p in path.iterdir()
            if p.suffix.lower() in SUFFIXES and p.is_file() and not p.name.startswith(".")
        )
        if not files:
            return [], [WorkflowIssue(str(path), 0, "folder holds no *.yaml or *.yml files")]
        return files, []
    if not path.exists():
        return [], [WorkflowIssue(str(path), 0, "no such file or folder")]
    return [path], []


def _load_file(
    path: Path,
    issues: list[WorkflowIssue],
    names: list[_Named],
    positions: Iterator[int],
    templates: Path | None,
    labels: frozenset[str] | None,
) -> list[Workflow]:
    # A bare list of workflows is accepted too: the shape is judged from the node.
    doc = read_yaml(path, WHAT, mapping_only=False)
    issues.extend(doc.issues)
    if doc.node is None:
        return []
    loader = _FileLoader(str(path), issues, names, positions, templates, labels)
    return loader.load(doc.node, doc.data)


class _FileLoader:
    def __init__(
        self,
        file: str,
        issues: list[WorkflowIssue],
        names: list[_Named],
        positions: Iterator[int],
        templates: Path | None = None,
        labels: frozenset[str] | None = None,
    ) -> None:
        self.file = file
        self.templates = templates
        # `spoofed?` is given by sender validation, not by the classifier.
        self.labels = None if labels is None else labels | {SPOOFED_LABEL}
        self.issues = issues
        self.names = names
        # Running position across all files of the set: a workflow's default `order`.
        self.positions = positions

    def issue(self, line: int, reason: str) -> None:
        self.issues.append(WorkflowIssue(self.file, line, reason))

    def load(self, node: yaml.Node, data: Any) -> list[Workflow]:
        workflows = []
        for item_node, item in self._workflow_items(node, data):
            wf = self._workflow(item_node, item)
            if wf is not None:
                workflows.append(wf)
        return workflows

    def _workflow_items(self, node: yaml.Node, data: Any) -> list[tuple[yaml.Node, Any]]:
        seq_node, seq = node, data
        if isinstance(data, dict) and isinstance(node, yaml.MappingNode):
            for key_node, _value in node.value:
                if key_node.value not in TOP_LEVEL_KEYS:
                    self.issue(
                        line_of(key_node),
                        f"unknown top-level key {key_node.value!r} (expected: workflows)",
                    )
            if "workflows" not in data:
                self.issue(line_of(node), "missing top-level key 'workflows'")
                return []
            seq_node, seq = child(node, "workflows") or node, data["workflows"]
            if seq is None:  # `workflows:` with nothing under it: deliberately none
                return []
        if not isinstance(seq, list) or not isinstance(seq_node, yaml.SequenceNode):
            self.issue(
                line_of(seq_node),
                "expected a list of workflows (`workflows:` then `- name: ...` items)",
            )
            return []
        return list(zip(seq_node.value, seq, strict=True))

    def _workflow(self, node: yaml.Node, item: Any) -> Workflow | None:
        position = next(self.positions)
        if not isinstance(item, dict):
            self.issue(line_of(node), "each workflow must be a mapping with name, trigger and steps")
            return None
        if isinstance(item.get("name"), str) and item["name"].strip():
            self.names.append(_Named(item["name"].strip(), self.file, line_at(node, ("name",))))
        spec: WorkflowSpec | None = None
        try:
            spec = WorkflowSpec.model_validate(item)
        except ValidationError as exc:
            for err in exc.errors():
                self.issue(line_at(node, err["loc"]), _reason(err, WorkflowSpec))
        raw_steps = item.get("workflow_steps")
        built = [
            self._step(node, index, raw)
            for index, raw in enumerate(raw_steps if isinstance(raw_steps, list) else [])
        ]
        steps = [step for step in built if step is not None]
        if spec is None or len(steps) != len(built):
            return None
        if not self._labels_known(node, spec):
            return None
        if not self._steps_fit(node, spec, steps):
            return None
        event = spec.event_trigger
        return Workflow(
            name=spec.name,
            triggers=spec.classification_trigger or (),
            confidence_threshold=spec.confidence_threshold,
            steps=tuple(steps),
            order=spec.order if spec.order is not None else position,
            stop=spec.stop,
            enabled=spec.enabled,
            description=spec.description,
            file=self.file,
            line=line_at(node, ("name",)),
            event=None if event is None else EventTrigger(
                event=event.event,
                target=event.target,
                days=event.days,
                statuses=event.status or ("open", "pending"),
            ),
            customers=spec.customer or (),
            customer_line=line_at(node, ("customer",)) if spec.customer else 0,
        )

    def _labels_known(self, node: yaml.Node, spec: WorkflowSpec) -> bool:
        """A label no rule gives (a typo: `suport_request`) would leave the workflow silently
        never running, and its mail to EMAIL_UNMATCHED_ACTION."""
        if self.labels is None:
            return True
        unknown = [
            label for label in spec.classification_trigger or ()
            if label != ANY and label not in self.labels
        ]
        for label in unknown:
            self.issue(
                line_at(node, ("classification_trigger",)),
                f"classification_trigger: unknown label {label!r} (known: "
                f"{', '.join(sorted(self.labels))}; CLASSIFICATION_RULES_PATH adds labels)",
            )
        return not unknown

    def _steps_fit(self, node: yaml.Node, spec: WorkflowSpec, steps: list[Step]) -> bool:
        """An event run has no email: actions that need one are refused where they stand."""
        kind = registry.EVENT if spec.event_trigger is not None else registry.MAIL
        fits = True
        for index, step in enumerate(steps):
            action = registry.registered_actions()[step.action]
            if kind not in action.on:
                usable = sorted(
                    name for name, a in registry.registered_actions().items() if kind in a.on
                )
                what = (
                    "needs an email; an event_trigger workflow has none"
                    if kind == registry.EVENT
                    else "runs only for ticket events (event_trigger)"
                )
                self.issue(
                    line_at(node, ("workflow_steps", index, "action")),
                    f"{step.action} {what} (usable here: {', '.join(usable)})",
                )
                fits = False
        return fits

    def _step(self, node: yaml.Node, index: int, raw: Any) -> Step | None:
        at: tuple[str | int, ...] = ("workflow_steps", index)
        if not isinstance(raw, dict):
            self.issue(line_at(node, at), "each step must be a mapping like `- action: NAME`")
            return None
        try:
            step = StepSpec.model_validate(raw)
        except ValidationError as exc:
            for err in exc.errors():
                self.issue(line_at(node, (*at, *err["loc"])), _reason(err, StepSpec))
            return None
        known = registry.registered_actions()
        spec = known.get(step.action)
        if spec is None:
            self.issue(
                line_at(node, (*at, "action")),
                f"unknown action {step.action!r} (known: {', '.join(sorted(known))})",
            )
            return None
        try:
            params = spec.params_model.model_validate(step.params or {})
        except ValidationError as exc:
            for err in exc.errors():
                reason = _reason(err, spec.params_model, param_of=step.action)
                self.issue(line_at(node, (*at, "params", *err["loc"])), reason)
            return None
        missing = [
            name for name in params.mail_templates()
            if self.templates is not None and not (self.templates / f"{name}.txt").is_file()
        ]
        for name in missing:
            self.issue(
                line_at(node, (*at, "params", "template")),
                f"{step.action}: mail template {name}.txt not found in {self.templates}",
            )
        if missing:
            return None
        return Step(
            action=step.action,
            params=params,
            line=line_at(node, at),
            continue_on_error=step.on_error == "continue",
        )


def _reason(err: Any, model: type[BaseModel], *, param_of: str | None = None) -> str:
    loc: tuple[str | int, ...] = tuple(err["loc"])
    kind = err["type"]
    noun = "param" if param_of else "key"
    prefix = f"{param_of}: " if param_of else ""
    if kind == "extra_forbidden":
        allowed = list(model.model_fields)
        hint = f" (allowed: {', '.join(allowed)})" if allowed else f" ({param_of} takes no params)"
        return f"{prefix}unknown {noun} {loc[-1]!r}{hint}"
    if kind == "missing":
        return f"{prefix}missing required {noun} {dotted(loc)!r}"
    if kind == "too_short":
        return f"{prefix}{dotted(loc)} must not be empty"
    msg = str(err["msg"]).removeprefix("Value error, ")
    value = err.get("input")
    if not loc:  # the whole workflow (or params) is wrong, not one key of it
        return f"{prefix}{msg}"
    shown = "" if isinstance(value, dict | list) else f" (got {value!r})"
    if isinstance(value, bool) and kind == "string_type":
        shown += "; YAML reads yes/no/on/off/true/false as booleans, quote the text"
    return f"{prefix}{dotted(loc)}: {msg}{shown}"
