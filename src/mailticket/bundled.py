"""Files that ship with mailticket: the Alembic migrations and the mail and web templates.

In a checkout they live at the top of the repository, where they are edited, and
`src/mailticket/_data/` links to them; a built wheel carries copies at the same place inside
the package. So there is one way to find them, whether installed from a wheel or editable.
"""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).parent / "_data"


def data_path(*parts: str) -> Path:
    return DATA_DIR.joinpath(*parts)
