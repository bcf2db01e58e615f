"""YAML configuration files whose every mistake is reported as `file:line: reason`.

Shared by the customers and SLA loaders (workflows/loader.py predates it and does the same
by itself). The YAML is composed into a node tree first: the nodes keep their marks, which
is how a pydantic error location becomes the line of the offending key or value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

Loc = Sequence[str | int]


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


def read_yaml(path: Path, what: str) -> YamlDocument:
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
    return parse_yaml(text, name, what)


def parse_yaml(text: str, name: str, what: str) -> YamlDocument:
    doc = YamlDocument(name, None, None)
    try:
        loader = yaml.SafeLoader(text)
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
    if not isinstance(doc.data, dict):
        doc.issue(line_of(node), f"expected a mapping at the top: {what}")
        doc.data = None
    return doc


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
