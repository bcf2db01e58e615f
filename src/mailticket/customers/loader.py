"""Load CUSTOMERS_PATH: one YAML file of customers, validated whole at start-up.

Every problem is reported as `file:line: reason`, all at once. Beyond each item's own
shape, the file as a whole must be unambiguous: one customer per key, id, domain and
contact address, and no customer may claim a shared mail domain or a public suffix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mailticket.customers.schema import CustomersFileSpec, CustomerSpec
from mailticket.customers.shared import SharedDomains
from mailticket.reading.maildomains import is_public_suffix
from mailticket.yamlconfig import YamlDocument, read_yaml

WHAT = "`customers:` with a list of customers"


@dataclass(frozen=True)
class CustomersConfig:
    customers: tuple[CustomerSpec, ...]
    source: str
    # key -> line of the item, for errors found later (e.g. while syncing to the database)
    lines: dict[str, int] = field(default_factory=dict)

    def line_of(self, key: str) -> int:
        return self.lines.get(key, 0)


def load_customers(path: Path, shared: SharedDomains) -> CustomersConfig:
    """Raise ConfigFileError listing every problem, or return the validated customers."""
    doc = read_yaml(path, WHAT)
    found: list[tuple[int, CustomerSpec]] = []
    if doc.data is not None:
        top = doc.validate(CustomersFileSpec, doc.data)
        if top is not None:
            keys: dict[str, int] = {}
            for index, item in enumerate(top.customers or []):
                key = item.get("key") if isinstance(item, dict) else None
                if isinstance(key, str):
                    # Checked even for an invalid item, so a duplicate shows in this pass.
                    line = doc.line_at(("customers", index, "key"))
                    if key in keys:
                        doc.issue(line, f"duplicate customer key {key!r} (first at line {keys[key]})")
                    keys.setdefault(key, line)
                spec = doc.validate(CustomerSpec, item, ("customers", index))
                if spec is not None:
                    found.append((index, spec))
            _check_whole(doc, found, shared)
    doc.raise_if_issues()
    lines: dict[str, int] = {}
    for index, spec in found:
        lines.setdefault(spec.key, doc.line_at(("customers", index)))
    return CustomersConfig(tuple(spec for _, spec in found), str(path), lines)


def _check_whole(
    doc: YamlDocument, found: list[tuple[int, CustomerSpec]], shared: SharedDomains
) -> None:
    owners: dict[tuple[str, str], tuple[str, int]] = {}
    for index, spec in found:
        at: tuple[str | int, ...] = ("customers", index)
        claims: list[tuple[str, str, int]] = []
        if spec.id is not None:
            claims.append(("id", str(spec.id), doc.line_at((*at, "id"))))
        for i, domain in enumerate(spec.domains):
            line = doc.line_at((*at, "domains", i))
            claims.append(("domain", domain, line))
            entry = shared.entry_for(domain)
            if entry is not None:
                doc.issue(
                    line,
                    f"{domain!r} is a shared mail domain (matches {entry!r}); list the "
                    "customer's addresses under contacts instead",
                )
            elif is_public_suffix(domain):
                doc.issue(line, f"{domain!r} is a public suffix, not an organisation's domain")
        for i, contact in enumerate(spec.contacts):
            claims.append(("contact", contact.address, doc.line_at((*at, "contacts", i))))
        for kind, value, line in claims:
            first = owners.setdefault((kind, value), (spec.key, line))
            if first != (spec.key, line):
                doc.issue(
                    line,
                    f"{kind} {value!r} already belongs to customer {first[0]!r} (line {first[1]})",
                )

