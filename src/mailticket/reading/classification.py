"""Classify a parsed message: support_request, auto_reply, bounce, bulk, spam, or an admin label.

Every rule (built-in ones in `classification_rules`, plus the admin's YAML rules) looks at the
message and either fires, giving a reason, or stays silent. Per label, the weights of the rules
that fired combine noisy-or style, ``1 - Π(1 - w)``: independent signs reinforce each other and
no pile of weak signs ever reaches 1. The label with the highest combined confidence wins; the
baseline rule `default_support_request` (0.75) always fires, so ordinary mail lands there and
clears a workflow threshold of 0.7. Every hit is kept in `Classification.hits`.

Admin rules file (``CLASSIFICATION_RULES_PATH``)::

    rules:
      - name: vip_customers            # unique, also among the built-in rule names
        label: support_request         # any label, also new ones such as "invoice"
        weight: 0.9                    # 0..1, combined with the other hits of that label
        from: '(?i)@bigcustomer\\.com$' # regex searched in the bare, lower-case sender address
      - name: invoices
        label: invoice
        weight: 0.95
        subject: '(?i)\\binvoice\\b'     # regex searched in the decoded subject
        body: 'Invoice number'         # regex searched in the readable text of the body
        header: {name: X-Mailer, pattern: '(?i)billing'}  # any value of that header

A rule needs at least one of ``from``, ``subject``, ``body``, ``header``; it fires only when all
the given patterns match (Python ``re.search`` syntax). Unknown keys, invalid regexes, weights
outside 0..1 and duplicate names are refused with ``file:line: reason``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from mailticket.reading.classification_rules import (
    AUTO_REPLY,
    BOUNCE,
    BULK,
    SPAM,
    SUPPORT_REQUEST,
    Rule,
    builtin_rules,
)
from mailticket.settings import Settings
from mailticket.types import OWN_MAIL, Classification, ParsedEmail, RuleHit

__all__ = [
    "Classifier",
    "PatternRule",
    "Rule",
    "RuleFileError",
    "builtin_rules",
    "load_rules",
]

# Tie-break order, most specific first. Admin labels sit after the automation labels but before
# bulk and support_request, which they refine. Otherwise admin labels compete on confidence:
# an admin who wants, say, monitoring alerts (Auto-Submitted: auto-generated, 0.9) as tickets
# gives the rule a higher weight.
_SPECIFIC_FIRST = (BOUNCE, AUTO_REPLY, SPAM)
_GENERIC_LAST = (BULK, SUPPORT_REQUEST)

# Labels that take over from another label when their own evidence is strong enough to stand
# alone: a bounce often carries Auto-Submitted: auto-replied or Precedence: bulk, auto-responders
# often send with Precedence: bulk, and an admin rule that raises support_request for a VIP
# domain must not turn that domain's MAILER-DAEMON or out-of-office mail into a ticket.
_DOMINATES: dict[str, tuple[str, ...]] = {
    BOUNCE: (AUTO_REPLY, BULK, SUPPORT_REQUEST),
    AUTO_REPLY: (BULK, SUPPORT_REQUEST),
}
_DOMINANCE_FLOOR = 0.75


def _specificity(label: str) -> int:
    if label in _SPECIFIC_FIRST:
        return 100 - _SPECIFIC_FIRST.index(label)
    if label in _GENERIC_LAST:
        return -1 - _GENERIC_LAST.index(label)
    return 0


class Classifier:
    def __init__(self, rules: Sequence[Rule]) -> None:
        seen: set[str] = set()
        for rule in rules:
            if rule.name in seen:
                raise ValueError(f"duplicate classification rule name {rule.name!r}")
            if not 0.0 <= rule.weight <= 1.0:
                raise ValueError(f"rule {rule.name!r}: weight {rule.weight} is outside 0..1")
            seen.add(rule.name)
        self.rules: tuple[Rule, ...] = tuple(rules)

    @classmethod
    def from_settings(cls, settings: Settings) -> Classifier:
        rules = builtin_rules()
        if settings.classification_rules_path is not None:
            rules.extend(load_rules(settings.classification_rules_path))
        return cls(rules)

    def labels(self) -> frozenset[str]:
        """Every label a message can get: the built-in ones, the admin rules' labels and
        `own_mail`, which the pipeline gives our own mail (reading/ownmail.py)."""
        return frozenset(rule.label for rule in self.rules) | {OWN_MAIL}

    def classify(self, email: ParsedEmail) -> Classification:
        hits: list[RuleHit] = []
        misses: dict[str, float] = {}
        for rule in self.rules:
            reason = rule.check(email)
            if reason is None:
                continue
            hits.append(RuleHit(rule.name, rule.label, rule.weight, reason))
            misses[rule.label] = misses.get(rule.label, 1.0) * (1.0 - rule.weight)
        if not misses:
            # No rule at all fired (a classifier built without the baseline): nothing to trust.
            return Classification(SUPPORT_REQUEST, 0.0, ())
        scores = {label: 1.0 - miss for label, miss in misses.items()}
        best = max(scores, key=lambda label: (round(scores[label], 9), _specificity(label), label))
        changed = True
        while changed:
            changed = False
            for strong, weaker in _DOMINATES.items():
                if best in weaker and scores.get(strong, 0.0) >= _DOMINANCE_FLOOR:
                    best, changed = strong, True
        return Classification(best, scores[best], tuple(hits))


# --- admin rules ----------------------------------------------------------------------------

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


@dataclass(frozen=True, slots=True)
class PatternRule:
    """An admin rule: fires when every given pattern matches."""

    name: str
    label: str
    weight: float
    from_pattern: re.Pattern[str] | None = None
    subject: re.Pattern[str] | None = None
    body: re.Pattern[str] | None = None
    header_name: str | None = None
    header_pattern: re.Pattern[str] | None = None

    def check(self, email: ParsedEmail) -> str | None:
        reasons: list[str] = []
        for what, pattern, text in (
            ("from", self.from_pattern, email.from_address),
            ("subject", self.subject, email.subject),
            ("body", self.body, email.text),
        ):
            if pattern is None:
                continue
            if not pattern.search(text):
                return None
            reasons.append(f"{what} matches {pattern.pattern!r}")
        if self.header_name is not None and self.header_pattern is not None:
            values = email.headers.get(self.header_name.lower(), [])
            if not any(self.header_pattern.search(v) for v in values):
                return None
            reasons.append(f"{self.header_name} matches {self.header_pattern.pattern!r}")
        return "; ".join(reasons)


def _check_regex(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
    return value


class _HeaderSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[!-9;-~]+$")  # RFC 5322 field name: printable, no colon
    pattern: str

    _regex = field_validator("pattern")(_check_regex)


class _RuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=_NAME)
    label: str = Field(pattern=_NAME)
    weight: float = Field(ge=0.0, le=1.0, strict=True)
    from_: str | None = Field(default=None, alias="from")
    subject: str | None = None
    body: str | None = None
    header: _HeaderSpec | None = None

    _regex = field_validator("from_", "subject", "body")(_check_regex)

    @model_validator(mode="after")
    def _has_condition(self) -> _RuleSpec:
        if all(v is None for v in (self.from_, self.subject, self.body, self.header)):
            raise ValueError("a rule needs at least one of from, subject, body, header")
        return self

    def build(self) -> PatternRule:
        def compiled(value: str | None) -> re.Pattern[str] | None:
            return None if value is None else re.compile(value)

        return PatternRule(
            name=self.name,
            label=self.label,
            weight=self.weight,
            from_pattern=compiled(self.from_),
            subject=compiled(self.subject),
            body=compiled(self.body),
            header_name=self.header.name if self.header else None,
            header_pattern=compiled(self.header.pattern) if self.header else None,
        )


class _RuleFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[_RuleSpec]


class RuleFileError(Exception):
    """An admin rules file that cannot be used; each line of the message is ``file:line: reason``."""

    def __init__(self, path: Path, problems: Sequence[tuple[int | None, str]]) -> None:
        self.path = path
        self.problems = list(problems)
        self.line, self.reason = self.problems[0]
        super().__init__(
            "\n".join(
                f"{path}:{line}: {reason}" if line is not None else f"{path}: {reason}"
                for line, reason in self.problems
            )
        )


def _node_at(root: yaml.Node, loc: Sequence[int | str]) -> yaml.Node:
    """The deepest node along a pydantic error location that exists in the file."""
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == part:
                    node = value
                    break
            else:
                return node
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return node
            node = node.value[part]
        else:
            return node
    return node


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _compose(path: Path) -> tuple[yaml.Node, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleFileError(path, [(None, f"cannot read the rules file: {exc}")]) from exc
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise RuleFileError(path, [(None, "the file is empty; expected 'rules:' with a list")])
        return node, loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = int(mark.line) + 1 if mark is not None else None
        raise RuleFileError(path, [(line, f"invalid YAML: {exc.problem or exc}")]) from exc
    except yaml.YAMLError as exc:
        raise RuleFileError(path, [(None, f"invalid YAML: {exc}")]) from exc
    finally:
        loader.dispose()


def _duplicate_keys(node: yaml.Node) -> list[tuple[int, str]]:
    # PyYAML keeps the last of two equal keys without a word; two `subject:` lines in one rule
    # would silently drop a condition.
    found: list[tuple[int, str]] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    found.append((_line(key), f"duplicate key {key.value!r}"))
                seen.add(key.value)
            found.extend(_duplicate_keys(value))
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            found.extend(_duplicate_keys(item))
    return found


def _unknown_key_line(root: yaml.Node, loc: Sequence[int | str]) -> int:
    parent = _node_at(root, loc[:-1])
    if isinstance(parent, yaml.MappingNode):
        for key, _value in parent.value:
            if isinstance(key, yaml.ScalarNode) and key.value == loc[-1]:
                return _line(key)
    return _line(parent)


def _problem(root: yaml.Node, err: ErrorDetails) -> tuple[int, str]:
    loc = err["loc"]
    if err["type"] == "extra_forbidden":
        return _unknown_key_line(root, loc), f"unknown key {loc[-1]!r}"
    where = ".".join(str(p) for p in loc)
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "model_type" and not loc:
        message = "expected a mapping with a 'rules' list"
    return _line(_node_at(root, loc)), f"{where}: {message}" if where else message


def load_rules(path: Path) -> list[Rule]:
    """Read the admin's rules file; raise `RuleFileError` naming file, line and reason."""
    root, data = _compose(path)
    if duplicates := _duplicate_keys(root):
        raise RuleFileError(path, duplicates)
    try:
        spec = _RuleFile.model_validate(data)
    except ValidationError as exc:
        raise RuleFileError(path, [_problem(root, err) for err in exc.errors()]) from None
    taken = {rule.name: "a built-in rule" for rule in builtin_rules()}
    rules: list[Rule] = []
    for index, rule_spec in enumerate(spec.rules):
        if rule_spec.name in taken:
            line = _line(_node_at(root, ("rules", index, "name")))
            reason = (
                f"duplicate rule name {rule_spec.name!r} (already used by {taken[rule_spec.name]})"
            )
            raise RuleFileError(path, [(line, reason)])
        taken[rule_spec.name] = f"the rule at line {_line(_node_at(root, ('rules', index)))}"
        rules.append(rule_spec.build())
    return rules
