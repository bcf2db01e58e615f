"""Load and validate workflow YAML: one file, or a folder of *.yaml / *.yml files.

Every problem is reported as `file:line: reason`, all of them at once, so an admin fixes a
file in one pass. The YAML is composed into a node tree first: the nodes keep their marks,
which is how a pydantic error location becomes the line of the offending key or value.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from pydantic import BaseModel, ValidationError

from mailticket.workflows import registry
from mailticket.workflows.schema import (
    TOP_LEVEL_KEYS,
    EventTrigger,
    Step,
    StepSpec,
    Workflow,
    WorkflowSet,
    WorkflowSpec,
)

DEFAULT_PATH = Path(__file__).with_name("default.yaml")
SUFFIXES = (".yaml", ".yml")
# Bounds on a file's shape, far above any real workflow file: the text can come from the
# HTTP API (POST /api/v1/workflows/validate), where deep nesting would exhaust the stack and
# an alias bomb ("billion laughs") the memory of whatever walks the expanded data.
MAX_DEPTH = 64
MAX_NODES = 100_000  # counted with every alias expanded

Loc = Sequence[str | int]


@dataclass(frozen=True)
class WorkflowIssue:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


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


def load_workflows(path: Path | None = None) -> WorkflowSet:
    """Validate every file under `path` (None: the shipped default.yaml) into one set."""
    files, issues = _files(path if path is not None else DEFAULT_PATH)
    registry.load_action_modules()
    found: list[Workflow] = []
    names: list[_Named] = []
    positions = count(1)
    for file in files:
        found += _load_file(file, issues, names, positions)
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
    path: Path, issues: list[WorkflowIssue], names: list[_Named], positions: Iterator[int]
) -> list[Workflow]:
    name = str(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        issues.append(WorkflowIssue(name, 1, f"not UTF-8 text ({exc.reason} at byte {exc.start})"))
        return []
    except OSError as exc:
        issues.append(WorkflowIssue(name, 0, f"cannot read: {exc.strerror or exc}"))
        return []
    return _FileLoader(name, issues, names, positions).load(text)


class _FileLoader:
    def __init__(
        self,
        file: str,
        issues: list[WorkflowIssue],
        names: list[_Named],
        positions: Iterator[int],
    ) -> None:
        self.file = file
        self.issues = issues
        self.names = names
        # Running position across all files of the set: a workflow's default `order`.
        self.positions = positions

    def issue(self, line: int, reason: str) -> None:
        self.issues.append(WorkflowIssue(self.file, line, reason))

    def load(self, text: str) -> list[Workflow]:
        parsed = self._parse(text)
        if parsed is None:
            return []
        node, data = parsed
        _report_duplicate_keys(node, self)
        items = self._workflow_items(node, data)
        workflows = []
        for item_node, item in items:
            wf = self._workflow(item_node, item)
            if wf is not None:
                workflows.append(wf)
        return workflows

    def _parse(self, text: str) -> tuple[yaml.Node, Any] | None:
        try:
            loader = _BoundedLoader(text)
        except yaml.reader.ReaderError as exc:
            # Raised while the loader is built, before any mark exists: find the line.
            line = text.count("\n", 0, exc.position) + 1
            char = exc.character
            shown = f"U+{char:04X}" if isinstance(char, int) else repr(char)
            self.issue(line, f"character {shown} is not allowed in YAML ({exc.reason})")
            return None
        try:
            node = loader.get_single_node()
            if node is None:
                self.issue(1, "file is empty: expected `workflows:` with a list of workflows")
                return None
            _check_expanded_size(node)
            return node, loader.construct_document(node)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            what = ", ".join(part for part in (exc.context, exc.problem) if part)
            self.issue(mark.line + 1 if mark else 1, f"YAML syntax error: {what}")
            return None
        except yaml.YAMLError as exc:
            self.issue(1, f"YAML error: {exc}")
            return None
        finally:
            loader.dispose()

    def _workflow_items(self, node: yaml.Node, data: Any) -> list[tuple[yaml.Node, Any]]:
        seq_node, seq = node, data
        if isinstance(data, dict) and isinstance(node, yaml.MappingNode):
            for key_node, _value in node.value:
                if key_node.value not in TOP_LEVEL_KEYS:
                    self.issue(
                        _line(key_node),
                        f"unknown top-level key {key_node.value!r} (expected: workflows)",
                    )
            if "workflows" not in data:
                self.issue(_line(node), "missing top-level key 'workflows'")
                return []
            seq_node, seq = _child(node, "workflows") or node, data["workflows"]
            if seq is None:  # `workflows:` with nothing under it: deliberately none
                return []
        if not isinstance(seq, list) or not isinstance(seq_node, yaml.SequenceNode):
            self.issue(
                _line(seq_node),
                "expected a list of workflows (`workflows:` then `- name: ...` items)",
            )
            return []
        return list(zip(seq_node.value, seq, strict=True))

    def _workflow(self, node: yaml.Node, item: Any) -> Workflow | None:
        position = next(self.positions)
        if not isinstance(item, dict):
            self.issue(_line(node), "each workflow must be a mapping with name, trigger and steps")
            return None
        if isinstance(item.get("name"), str) and item["name"].strip():
            self.names.append(_Named(item["name"].strip(), self.file, _line_at(node, ("name",))))
        spec: WorkflowSpec | None = None
        try:
            spec = WorkflowSpec.model_validate(item)
        except ValidationError as exc:
            for err in exc.errors():
                self.issue(_line_at(node, err["loc"]), _reason(err, WorkflowSpec))
        raw_steps = item.get("workflow_steps")
        built = [
            self._step(node, index, raw)
            for index, raw in enumerate(raw_steps if isinstance(raw_steps, list) else [])
        ]
        steps = [step for step in built if step is not None]
        if spec is None or len(steps) != len(built):
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
            line=_line_at(node, ("name",)),
            event=None if event is None else EventTrigger(
                event=event.event,
                target=event.target,
                days=event.days,
                statuses=event.status or ("open", "pending"),
            ),
            customers=spec.customer or (),
            customer_line=_line_at(node, ("customer",)) if spec.customer else 0,
        )

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
                    _line_at(node, ("workflow_steps", index, "action")),
                    f"{step.action} {what} (usable here: {', '.join(usable)})",
                )
                fits = False
        return fits

    def _step(self, node: yaml.Node, index: int, raw: Any) -> Step | None:
        at: tuple[str | int, ...] = ("workflow_steps", index)
        if not isinstance(raw, dict):
            self.issue(_line_at(node, at), "each step must be a mapping like `- action: NAME`")
            return None
        try:
            step = StepSpec.model_validate(raw)
        except ValidationError as exc:
            for err in exc.errors():
                self.issue(_line_at(node, (*at, *err["loc"])), _reason(err, StepSpec))
            return None
        known = registry.registered_actions()
        spec = known.get(step.action)
        if spec is None:
            self.issue(
                _line_at(node, (*at, "action")),
                f"unknown action {step.action!r} (known: {', '.join(sorted(known))})",
            )
            return None
        try:
            params = spec.params_model.model_validate(step.params or {})
        except ValidationError as exc:
            for err in exc.errors():
                reason = _reason(err, spec.params_model, param_of=step.action)
                self.issue(_line_at(node, (*at, "params", *err["loc"])), reason)
            return None
        return Step(
            action=step.action,
            params=params,
            line=_line_at(node, at),
            continue_on_error=step.on_error == "continue",
        )


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing nesting deeper than MAX_DEPTH while composing (the
    composer recurses once per level)."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self._depth >= MAX_DEPTH:
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _check_expanded_size(root: yaml.Node) -> None:
    """Refuse a document whose aliases expand past MAX_NODES nodes, or refer to a node that
    contains them (a cycle). Sizes are memoised per node, so this costs one pass."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:  # recursion bounded by MAX_DEPTH
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise yaml.composer.ComposerError(
                None, None, "an alias refers to a node that contains it", node.start_mark
            )
        open_nodes.add(key)
        total = 1
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        for child in children:
            total += size(child)
            if total > MAX_NODES:
                raise yaml.composer.ComposerError(
                    None, None,
                    f"more than {MAX_NODES} values once aliases are expanded (an alias bomb?)",
                    child.start_mark,
                )
        open_nodes.discard(key)
        sizes[key] = total
        return total

    size(root)


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _child(node: yaml.MappingNode, key: str) -> yaml.Node | None:
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return value_node  # type: ignore[no-any-return]
    return None


def _line_at(node: yaml.Node, loc: Loc) -> int:
    """Line of the deepest node along `loc` that exists: a missing key points at its
    mapping, an unknown or wrong one at itself."""
    line = _line(node)
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                    # A scalar value can sit on the line after its key; point at the value.
                    shown = value_node if isinstance(value_node, yaml.ScalarNode) else key_node
                    line, node = _line(shown), value_node
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                return line
            node = node.value[part]
            line = _line(node)
        else:
            return line
    return line


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


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
        return f"{prefix}missing required {noun} {_dotted(loc)!r}"
    if kind == "too_short":
        return f"{prefix}{_dotted(loc)} must not be empty"
    msg = str(err["msg"]).removeprefix("Value error, ")
    value = err.get("input")
    if not loc:  # the whole workflow (or params) is wrong, not one key of it
        return f"{prefix}{msg}"
    shown = "" if isinstance(value, dict | list) else f" (got {value!r})"
    if isinstance(value, bool) and kind == "string_type":
        shown += "; YAML reads yes/no/on/off/true/false as booleans, quote the text"
    return f"{prefix}{_dotted(loc)}: {msg}{shown}"


def _report_duplicate_keys(root: yaml.Node, loader: _FileLoader) -> None:
    """PyYAML keeps the last of two equal keys without a word; a silently dropped step or
    threshold is worse than an error."""
    seen_nodes: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    if key_node.value in keys and key_node.value != "<<":
                        loader.issue(_line(key_node), f"duplicate key {key_node.value!r}")
                    keys.add(key_node.value)
                stack.append(value_node)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
