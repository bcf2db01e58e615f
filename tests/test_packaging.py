"""A built wheel works on its own: installed into a fresh venv, run in an empty folder.

The wheel is built offline from a copy of the source tree (pip, no build isolation: the
test venv's setuptools). Its dependencies are taken from the test venv (linked in, minus
mailticket itself), so nothing is downloaded and no checkout is on the path: what the
commands find is only what the wheel carries (migrations, templates, default workflows).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest

from tests.dbutil import PG_URL_BASE, create_pg, drop_pg, pg_available
from tests.mailfactory import make_email

ROOT = Path(__file__).resolve().parents[1]
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.egg-info", "build", "dist", "var", ".*_cache",
    "mailticket.db*", "*.sqlite3",
)


def _run(argv: list[str | Path], cwd: Path, env: dict[str, str] | None = None,
         ) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, f"{argv}:\n{out.stdout}\n{out.stderr}"
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=_NOT_SOURCE)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--no-index", "-w", work / "dist", source], cwd=work)
    (built,) = (work / "dist").glob("mailticket-*.whl")
    return built


def test_wheel_carries_migrations_templates_and_workflows(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in ROOT.joinpath("migrations").rglob("*.py"):
        assert f"mailticket/_data/migrations/{path.relative_to(ROOT / 'migrations')}" in names
    for path in ROOT.joinpath("templates").rglob("*.*"):
        assert f"mailticket/_data/templates/{path.relative_to(ROOT / 'templates')}" in names
    assert "mailticket/workflows/default.yaml" in names
    assert "mailticket/py.typed" in names


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed; dependencies linked from the test venv."""
    work = tmp_path_factory.mktemp("venv")
    env_dir = work / "venv"
    _run([sys.executable, "-m", "venv", env_dir], cwd=work)
    python = env_dir / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=work).stdout.strip())
    deps = work / "deps"
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        name = entry.name.lower()
        if name.startswith(("mailticket", "__editable__", "_mailticket", "pip")) or (
            name.endswith(".pth")
        ):
            continue
        (deps / entry.name).symlink_to(entry)
    (site / "zz_test_dependencies.pth").write_text(f"{deps}\n")
    # --no-index: every dependency the wheel declares must already be satisfied.
    _run([python, "-m", "pip", "install", "--no-index", "--no-build-isolation", wheel],
         cwd=work)
    return env_dir


def _env(**extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("DATABASE_", "WORKFLOWS_", "MAILTICKET_", "PYTHON"))}
    return {**keep, **extra}


def _fresh_mail(folder: Path) -> Path:
    path = folder / "mail.eml"
    raw = make_email(subject="Printer on fire", sender="ana@customer.example")
    # Received just now, so the default workflow's auto-reply is due.
    now = format_datetime(datetime.now(UTC)).encode()
    path.write_bytes(raw.replace(b"Date: ", b"Date: " + now + b"\nX-Old-Date: ", 1))
    return path


def _use_it(venv: Path, folder: Path, env: dict[str, str]) -> None:
    bin_dir = venv / "bin"
    where = _run([bin_dir / "python", "-c", "import mailticket; print(mailticket.__file__)"],
                 cwd=folder, env=env).stdout
    assert where.startswith(str(venv)), where
    _run([bin_dir / "mailticket", "db", "upgrade"], cwd=folder, env=env)
    ingested = _run([bin_dir / "mailticket", "ingest", "--json", "--send-replies",
                     _fresh_mail(folder)], cwd=folder, env=env)
    assert '"action": "created"' in ingested.stdout
    listed = _run([bin_dir / "mailticket", "tickets", "list"], cwd=folder, env=env)
    assert "Printer on fire" in listed.stdout
    # the auto-reply was rendered from the packaged mail templates
    shown = _run([bin_dir / "mailticket", "outbox", "show", "1"], cwd=folder, env=env)
    assert "Subject: [TKT-" in shown.stdout and "to ana@customer.example" in shown.stdout
    # the thread view renders from the packaged web templates
    page = _run([bin_dir / "python", "-c", (
        "from fastapi.testclient import TestClient\n"
        "from mailticket.api.app import create_app\n"
        "from mailticket.runtime import build_runtime\n"
        "from mailticket.settings import load_settings\n"
        "r = TestClient(create_app(build_runtime(load_settings()))).get('/ui/login')\n"
        "print(r.status_code, r.headers['content-type'])\n"
    )], cwd=folder, env=env).stdout
    assert page.split()[:2] == ["200", "text/html;"], page


def test_wheel_works_in_an_empty_folder_on_sqlite(venv: Path, tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    _use_it(venv, folder, _env())  # the default DATABASE_URL: ./mailticket.db
    assert (folder / "mailticket.db").is_file()


def test_wheel_works_in_an_empty_folder_on_postgresql(venv: Path, tmp_path: Path) -> None:
    if not pg_available():
        pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 (it must run for the tests)")
    name = f"mt_wheel_{os.getpid()}"
    create_pg(name)  # empty: `db upgrade` from the wheel creates the schema
    try:
        folder = tmp_path / "empty"
        folder.mkdir()
        _use_it(venv, folder, _env(DATABASE_URL=f"{PG_URL_BASE}/{name}"))
        assert list(folder.iterdir()) == [folder / "mail.eml"]
    finally:
        drop_pg(name)
