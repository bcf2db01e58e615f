"""CUSTOMERS_PATH: every mistake reported at its line, all in one pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailticket.customers.loader import load_customers
from mailticket.customers.schema import ContactSpec
from mailticket.settings import ConfigError, load_settings
from mailticket.yamlconfig import ConfigFileError
from tests.customers.helpers import SHARED, load, write

GOOD = """
customers:
  - key: acme
    name: ACME Corp
    id: 123
    domains: [acme.example, ACME.co.uk, Bücher.example]
    contacts:
      - address: Jane.Doe@ACME.example
        name: Jane Doe
      - bob.acme@gmail.com
  - key: globex
    name: Globex
    domains: [globex.example]
  - key: initech
    name: Initech (gone)
    active: false
"""


def issues(tmp_path: Path, text: str) -> list[tuple[int, str]]:
    with pytest.raises(ConfigFileError) as info:
        load(tmp_path, text)
    text_out = str(info.value)
    assert all(line.startswith(str(tmp_path)) for line in text_out.splitlines())
    return [(issue.line, issue.reason) for issue in info.value.issues]


def test_good_file(tmp_path: Path) -> None:
    config = load(tmp_path, GOOD)
    acme, globex, initech = config.customers
    assert (acme.key, acme.name, acme.id, acme.active) == ("acme", "ACME Corp", 123, True)
    # Normalised: lower case, IDNA A-labels.
    assert acme.domains == ("acme.example", "acme.co.uk", "xn--bcher-kva.example")
    assert acme.contacts == (
        ContactSpec(address="jane.doe@acme.example", name="Jane Doe"),
        ContactSpec(address="bob.acme@gmail.com"),
    )
    assert globex.id is None and not initech.active
    assert config.line_of("globex") == 10


def test_empty_list_is_allowed(tmp_path: Path) -> None:
    assert load(tmp_path, "customers:\n").customers == ()


def test_every_mistake_at_its_line(tmp_path: Path) -> None:
    found = issues(tmp_path, """
        customers:
          - key: ACME Corp
            name: ACME
          - key: acme
            name: ACME
            domains: [acme.example, gmail.com, co.uk, "*.acme.example", "bad domain"]
            contacts: [jane@acme.example, not-an-address]
          - key: acme
            name: ACME again
            domains: [acme.example]
          - key: globex
            name: Globex
            id: 0
            color: blue
            contacts:
              - jane@acme.example
          - key: initech
            id: 7
          - just a string
          - key: hooli
            name: Hooli
            domains: [yahoo.co.uk]
            contacts: [a@hooli.example, A@Hooli.example]
    """)
    text = "\n".join(f"{line}: {reason}" for line, reason in found)
    expected = [
        (2, "customers[0].key: String should match pattern"),
        (6, "'*.acme.example': write the bare domain"),
        (7, "'not-an-address' is not an address"),
        (8, "duplicate customer key 'acme' (first at line 4)"),
        (13, "customers[3].id: Input should be greater than or equal to 1"),
        (14, "unknown key 'color' at customers[3]"),
        (17, "missing required key 'customers[4].name'"),
        (19, "customers[5]: Input should be a valid dictionary"),
        (20, "customers[6]: contact 'a@hooli.example' is listed twice"),
    ]
    for line, start in expected:
        wanted = start.split(": ", 1)[-1]
        assert any(at == line and wanted in reason for at, reason in found), f"{line}: {start}\n{text}"


def test_whole_file_checks_once_items_are_valid(tmp_path: Path) -> None:
    found = issues(tmp_path, """
        customers:
          - key: acme
            name: ACME
            domains: [acme.example, gmail.com, co.uk, yahoo.co.uk]
            contacts: [jane@acme.example]
          - key: globex
            name: Globex
            id: 5
            domains: [acme.example]
            contacts: [jane@acme.example]
          - key: initech
            name: Initech
            id: 5
    """)
    assert found == [
        (4, "'gmail.com' is a shared mail domain (matches 'gmail.com'); list the customer's "
            "addresses under contacts instead"),
        (4, "'co.uk' is a public suffix, not an organisation's domain"),
        (4, "'yahoo.co.uk' is a shared mail domain (matches 'yahoo.*'); list the customer's "
            "addresses under contacts instead"),
        (9, "domain 'acme.example' already belongs to customer 'acme' (line 4)"),
        (10, "contact 'jane@acme.example' already belongs to customer 'acme' (line 5)"),
        (13, "id '5' already belongs to customer 'globex' (line 8)"),
    ]


def test_flow_style_items_point_at_their_own_line(tmp_path: Path) -> None:
    found = issues(tmp_path, """
        customers:
          - {key: acme, name: ACME, domains: [acme.example]}
          - {key: globex, name: Globex, domains: [acme.example]}
    """)
    assert found == [(3, "domain 'acme.example' already belongs to customer 'acme' (line 2)")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", [(1, "file is empty: expected `customers:` with a list of customers")]),
        ("- key: acme\n", [(1, "expected a mapping at the top: `customers:` with a list of customers")]),
        ("customer:\n  - key: a\n", [(1, "missing required key 'customers'"), (1, "unknown key 'customer' at top level")]),
        ("customers:\n  - {key: a, name: [x\n", [(3, "YAML syntax error: while parsing a flow sequence, expected ',' or ']', but got '<stream end>'")]),
        ("customers:\n  - key: a\n    key: b\n    name: x\n", [(3, "duplicate key 'key'")]),
        ("customers:\n  - key: a\n    name: yes\n", [(3, "customers[0].name: Input should be a valid string (got True); YAML reads yes/no/on/off/true/false as booleans, quote the text")]),
    ],
)
def test_file_level_mistakes(tmp_path: Path, text: str, expected: list[tuple[int, str]]) -> None:
    assert sorted(issues(tmp_path, text)) == sorted(expected)


def test_not_utf8_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("customers:\n  - key: a\n    name: Müller\n".encode("latin-1"))
    with pytest.raises(ConfigFileError, match="not UTF-8"):
        load_customers(path, SHARED)
    with pytest.raises(ConfigFileError, match="cannot read"):
        load_customers(tmp_path / "nope.yaml", SHARED)


def test_settings_check_the_path(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    assert load_settings(_env_file=None, customers_path=str(path)).customers_path == path
    with pytest.raises(ConfigError, match="CUSTOMERS_PATH"):
        load_settings(_env_file=None, customers_path=str(tmp_path / "missing.yaml"))


def test_alias_bomb_and_deep_nesting_are_refused_at_their_line(tmp_path: Path) -> None:
    # The customers file shares the workflow loader's bounded reader: an alias bomb or a
    # nesting thousands deep is a file:line error, not minutes of CPU or a RecursionError.
    bomb = ["customers:", "  - key: a", "    name: x", "    x0: &a0 [z, z, z, z, z, z, z, z, z, z]"]
    bomb += [f"    x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    found = issues(tmp_path, "\n".join(bomb) + "\n")
    assert len(found) == 1 and "alias bomb" in found[0][1]
    deep = "customers:\n  - key: a\n    name: " + "[" * 200 + "]" * 200 + "\n"
    found = issues(tmp_path, deep)
    assert len(found) == 1 and "nested deeper than 64 levels" in found[0][1]
    assert found[0][0] == 3
