"""YAML configuration files whose every mistake is reported as `file:line: reason`.

Shared by the workflow, customer and SLA loaders. The YAML is composed into a node tree
first: the nodes keep their marks, which is how a pydantic error location becomes the line
of the offending key or value. Composition is bounded (depth, and size with aliases
expanded): workflow text can come from the HTTP API, and a customers file from whoever may
edit it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

Loc = Sequence[str | int]
# Far above any real configuration file: deep nesting would exhaust the stack, and an alias
# bomb ("billion laughs") the memory of whatever walks the expanded data.
MAX_DEPTH = 64
MAX_NODES = 100_000  # counted with every alias expanded


@dataclass(frozen=True)
class ConfigIssue:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


class ConfigFileError(Exception):
    """All the problems of one file, in line order; str() is one `file:line: reason` a line."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = sorted(issues, key=lambda issue: (issue.file, issue.line))
        super().__init__("\n".join(str(issue) for issue in self.issues))


class YamlDocument:
    """One parsed file: its data, its node tree, and the issues found so far."""

    def __init__(self, file: str, node: yaml.Node | None, data: Any) -> None:
        self.file = file
        self.node = node
        self.data = data
        self.issues: list[ConfigIssue] = []

    def issue(self, line: int, reason: str) -> None:
        self.issues.append(ConfigIssue(self.file, line, reason))

    def line_at(self, loc: Loc) -> int:
        return line_at(self.node, loc) if self.node is not None else 1

    def validate(self, model: type[BaseModel], data: Any, at: Loc = ()) -> Any:
        """model.model_validate(data), or None with each error reported at its line."""
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            for err in exc.errors():
                loc = (*at, *err["loc"])
                self.issue(self.line_at(loc), pydantic_reason(err, model, loc))
            return None

    def raise_if_issues(self) -> None:
        if self.issues:
            raise ConfigFileError(self.issues)


def read_yaml(path: Path, what: str, *, mapping_only: bool = True) -> YamlDocument:
    """Read and parse `path`; on any failure the document has no data and one issue.

    `what` names the expected top level in the empty-file message ("`customers:` with a
    list of customers").
    """
    name = str(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        doc = YamlDocument(name, None, None)
        doc.issue(1, f"not UTF-8 text ({exc.reason} at byte {exc.start})")
        return doc
    except OSError as exc:
        doc = YamlDocument(name, None, None)
        doc.issue(0, f"cannot read: {exc.strerror or exc}")
        return doc
    return parse_yaml(text, name, what, mapping_only=mapping_only)


def parse_yaml(text: str, name: str, what: str, *, mapping_only: bool = True) -> YamlDocument:
    """Parse `text`; `mapping_only` reports a top level that is not a mapping (and drops
    the data), otherwise the caller judges the shape from the node."""
    doc = YamlDocument(name, None, None)
    try:
        loader = BoundedLoader(text)
    except yaml.reader.ReaderError as exc:
        # Raised while the loader is built, before any mark exists: find the line.
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character
        shown = f"U+{char:04X}" if isinstance(char, int) else repr(char)
        doc.issue(line, f"character {shown} is not allowed in YAML ({exc.reason})")
        return doc
    try:
        node = loader.get_single_node()
        if node is None:
            doc.issue(1, f"file is empty: expected {what}")
            return doc
        check_expanded_size(node)
        doc.node, doc.data = node, loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        detail = ", ".join(part for part in (exc.context, exc.problem) if part)
        doc.issue(mark.line + 1 if mark else 1, f"YAML syntax error: {detail}")
        return doc
    except yaml.YAMLError as exc:
        doc.issue(1, f"YAML error: {exc}")
        return doc
    finally:
        loader.dispose()
    _report_duplicate_keys(doc)
    if mapping_only and not isinstance(doc.data, dict):
        doc.issue(line_of(node), f"expected a mapping at the top: {what}")
        doc.data = None
    return doc


class BoundedLoader(yaml.SafeLoader):
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


def check_expanded_size(root: yaml.Node) -> None:
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


def child(node: yaml.MappingNode, key: str) -> yaml.Node | None:
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return value_node  # type: ignore[no-any-return]
    return None


def line_of(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def line_at(node: yaml.Node, loc: Loc) -> int:
    """Line of the deepest node along `loc` that exists: a missing key points at its
    mapping, an unknown or wrong one at itself."""
    line = line_of(node)
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                    # A scalar value can sit on the line after its key; point at the value.
                    shown = value_node if isinstance(value_node, yaml.ScalarNode) else key_node
                    line, node = line_of(shown), value_node
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                return line
            node = node.value[part]
            line = line_of(node)
        else:
            return line
    return line


def dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def pydantic_reason(err: Any, model: type[BaseModel], loc: Loc) -> str:
    # Union and function validators add their own names to the location; show the path
    # an admin wrote.
    path = [part for part in loc if isinstance(part, int) or not _is_internal(part)]
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"unknown key {path[-1]!r} at {dotted(path[:-1]) or 'top level'}"
    if kind == "missing":
        return f"missing required key {dotted(path)!r}"
    if kind == "too_short":
        return f"{dotted(path)} must not be empty"
    msg = str(err["msg"]).removeprefix("Value error, ")
    value = err.get("input")
    shown = "" if isinstance(value, dict | list) else f" (got {value!r})"
    if isinstance(value, bool) and kind == "string_type":
        shown += "; YAML reads yes/no/on/off/true/false as booleans, quote the text"
    return f"{dotted(path)}: {msg}{shown}"


def _is_internal(part: str) -> bool:
    return part.startswith(("function-", "union[", "str", "int", "list[", "dict[")) or "[" in part


def _report_duplicate_keys(doc: YamlDocument) -> None:
    """PyYAML keeps the last of two equal keys without a word; a silently dropped
    domain or target is worse than an error."""
    if doc.node is None:
        return
    seen_nodes: set[int] = set()
    stack = [doc.node]
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
                        doc.issue(line_of(key_node), f"duplicate key {key_node.value!r}")
                    keys.add(key_node.value)
                stack.append(value_node)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
