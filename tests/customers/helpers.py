from __future__ import annotations

import textwrap
from pathlib import Path

from mailticket.customers.loader import CustomersConfig, load_customers
from mailticket.customers.shared import SharedDomains, shared_domains

SHARED: SharedDomains = shared_domains(None)


def write(tmp_path: Path, text: str, name: str = "customers.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str) -> CustomersConfig:
    return load_customers(write(tmp_path, text), SHARED)
