from __future__ import annotations

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
from tests.dbutil import TemplateDatabases, drop_pg, pg_available


def _find_corpus() -> Path:
    """The shared corpus: MAILTICKET_CORPUS, else ../shared/corpus beside the checkout, else
    the workplace's /work/shared/corpus (a clone elsewhere, e.g. in CI)."""
    beside = Path(__file__).resolve().parents[2] / "shared" / "corpus"
    candidates = [Path("/work/shared/corpus")]
    if os.environ.get("MAILTICKET_CORPUS"):
        candidates.insert(0, Path(os.environ["MAILTICKET_CORPUS"]))
    candidates.insert(-1, beside)
    return next((c for c in candidates if c.is_dir()), beside)


CORPUS = _find_corpus()
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def pytest_configure(config: pytest.Config) -> None:
    # mail-parser warns once per non-text part it meets; tests only want real errors.
    logging.getLogger("mailparser").setLevel(logging.ERROR)


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    if not CORPUS.is_dir():
        pytest.fail(f"the shared corpus is missing at {CORPUS}")
    return CORPUS


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
