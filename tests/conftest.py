from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from mailticket.settings import Settings, load_settings
from mailticket.store.db import make_engine, make_session_factory

if TYPE_CHECKING:
    from mailticket.runtime import Runtime
from tests import mailfactory
from tests.dbutil import TemplateDatabases, create_pg, drop_pg, pg_available

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# A curated part of the shared mail corpus, shipped with the tests (scripts/curate-corpus-fixtures).
CURATED_CORPUS = FIXTURES / "emails" / "corpus"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--corpus", metavar="DIR", default=None,
        help="run the corpus tests over this mail corpus instead of the curated fixtures"
        " (./scripts/test-corpus: the whole shared corpus)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # mail-parser warns once per non-text part it meets; tests only want real errors.
    logging.getLogger("mailparser").setLevel(logging.ERROR)
    config.addinivalue_line("markers", "corpus: runs over a mail corpus (see --corpus)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # `-m corpus` selects exactly the tests that read the corpus (./scripts/test-corpus).
    for item in items:
        if "corpus_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.corpus)


ROOT = Path(__file__).resolve().parents[1]
# Tool caches (pytest, mypy, ruff, hypothesis under schemathesis) are not the tests' writing.
_NOT_WATCHED = {".git", ".venv", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache",
                ".hypothesis"}


def _repository_files() -> set[str]:
    found: set[str] = set()
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in _NOT_WATCHED and not d.endswith(".egg-info")]
        found.update(os.path.join(folder, name) for name in files)
    return found


@pytest.fixture(autouse=True)
def _mail_dates_per_test() -> None:
    """make_email's Dates start again for each test (see tests/mailfactory.py)."""
    mailfactory.reset_dates()


@pytest.fixture(autouse=True)
def _writes_stay_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A test writes into its own temp folder only: not into the checkout (a clone must stay
    clean), nor beside its temp folder, where other tests' files live."""
    base = tmp_path_factory.getbasetemp()
    before = _repository_files(), {p for p in base.iterdir() if not p.is_dir()}
    yield
    after = _repository_files(), {p for p in base.iterdir() if not p.is_dir()}
    stray = sorted(after[0] - before[0]) + sorted(str(p) for p in after[1] - before[1])
    assert not stray, f"the test wrote outside its temp folder: {stray}"


@pytest.fixture(scope="session")
def corpus_dir(request: pytest.FixtureRequest) -> Path:
    """The curated corpus in tests/fixtures, or the one given with --corpus DIR."""
    given = request.config.getoption("--corpus")
    corpus = Path(given).resolve() if given else CURATED_CORPUS
    if not (corpus / "hard_cases.json").is_file():
        pytest.fail(f"no mail corpus at {corpus} (a folder with hard_cases.json)")
    return corpus


@pytest.fixture(scope="session")
def template_dbs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemplateDatabases]:
    dbs = TemplateDatabases(tmp_path_factory.mktemp("dbs"))
    yield dbs
    dbs.close()


def _fresh_url(template_dbs: TemplateDatabases, kind: str) -> Iterator[str]:
    if kind == "postgresql" and not pg_available():
        pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 (it must run for the tests)")
    url, pg_name = template_dbs.fresh(kind)
    yield url
    if pg_name:
        drop_pg(pg_name)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, template_dbs: TemplateDatabases) -> Iterator[str]:
    """A freshly migrated database, once on SQLite and once on PostgreSQL."""
    yield from _fresh_url(template_dbs, request.param)


_empty_dbs = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all (not even Alembic's), on each backend: for the tests
    that migrate from an older revision, or upgrade with the real CLI."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/m.sqlite3"
        return
    if not pg_available():
        pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432")
    name = f"mt_empty_{os.getpid()}_{next(_empty_dbs)}"
    url = create_pg(name)
    try:
        yield url
    finally:
        drop_pg(name)


@pytest.fixture
def pg_url(template_dbs: TemplateDatabases) -> Iterator[str]:
    """A freshly migrated PostgreSQL database, for PostgreSQL-only behaviour."""
    yield from _fresh_url(template_dbs, "postgresql")


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return load_settings(database_url=db_url, _env_file=None)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    eng = make_engine(settings.database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


SEED_DAY = datetime(2025, 12, 15, 10, 0, tzinfo=UTC)


@pytest.fixture
def make_runtime(db_url: str) -> Iterator[Callable[..., Runtime]]:
    """Build a Runtime on the test database; settings overrides as keyword arguments.

    The pipeline's clock is pinned to the seed's day, so numbers read TKT-20251215-NNN.
    """
    built: list[Runtime] = []

    from mailticket.runtime import build_runtime

    def factory(clock: datetime | None = SEED_DAY, **overrides: Any) -> Runtime:
        settings = load_settings(database_url=db_url, _env_file=None, **overrides)
        rt = build_runtime(settings)
        if clock is not None:
            pinned = clock
            rt.pipeline.clock = lambda: pinned
        built.append(rt)
        return rt

    yield factory
    for rt in built:
        rt.close()
