"""The two commands of a fresh clone, ./scripts/run and ./scripts/test, and what they set up.

bootstrap.sh is sourced by bash with stand-ins for apt-get and id on PATH, so what it would
install is observed without touching the machine; scripts/run runs for real, on a venv that
is the test venv (linked), in a copy of the scripts.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.mailfactory import make_email

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"


def _bash(script: str, cwd: Path, env: dict[str, str] | None = None,
          ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def _system_files() -> dict[str, str]:
    out = _bash('. scripts/bootstrap.sh; printf "%s\\n" "${SYSTEM_FILES[@]}"', ROOT)
    assert out.returncode == 0, out.stderr
    return dict(line.split()[:2] for line in out.stdout.splitlines())


def test_bootstrap_checks_every_file_the_tests_run() -> None:
    """Every absolute path of a program the tests start is a file that bootstrap checks."""
    checked = _system_files()
    used: set[str] = set()
    for path in TESTS.rglob("*.py"):
        used |= set(re.findall(r'"(/usr/(?:s?bin|lib)/[\w./-]+)"', path.read_text()))
    used |= {"/usr/bin/openssl"}  # found on PATH by tests/outbound/conftest.py and dovecot.py
    assert used - set(checked) == set(), "used by tests, not checked by bootstrap.sh"
    assert checked["/usr/bin/chromedriver"] == "chromium-driver"
    assert checked["/usr/lib/dovecot/imap"] == "dovecot-imapd"


def _fake_tools(folder: Path, creates: dict[str, Path]) -> Path:
    """apt-get and id stand-ins: apt-get logs its arguments and provides the files."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    provide = "\n".join(
        f'    {pkg}) install -m 755 /dev/null "{path}" ;;' for pkg, path in creates.items()
    )
    (bin_dir / "apt-get").write_text(
        f'#!/bin/bash\necho "$@" >> "{folder}/apt.log"\n'
        f'[ "$1" = install ] || exit 0\nfor p in "$@"; do case "$p" in\n{provide}\n'
        "esac; done\n"
    )
    (bin_dir / "id").write_text("#!/bin/sh\necho 0\n")
    for tool in ("apt-get", "id"):
        (bin_dir / tool).chmod(0o755)
    return bin_dir


def test_bootstrap_installs_only_what_is_missing_and_checks_it_came(tmp_path: Path) -> None:
    present, missing, broken = tmp_path / "present", tmp_path / "missing", tmp_path / "broken"
    present.write_text("")
    present.chmod(0o755)
    bin_dir = _fake_tools(tmp_path, {"pkg-missing": missing})
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    files = f'SYSTEM_FILES=("{present} pkg-present" "{missing} pkg-missing")'
    ok = _bash(f". scripts/bootstrap.sh; {files}; bootstrap_system_packages", ROOT, env)
    assert ok.returncode == 0, ok.stderr
    log = (tmp_path / "apt.log").read_text().splitlines()
    assert log[0].startswith("update")
    assert log[1].startswith("install") and log[1].split()[-1] == "pkg-missing"
    assert missing.exists()

    (tmp_path / "apt.log").unlink()
    files = f'SYSTEM_FILES=("{broken} pkg-broken")'  # apt "succeeds" but brings no file
    bad = _bash(f". scripts/bootstrap.sh; {files}; bootstrap_system_packages", ROOT, env)
    assert bad.returncode != 0
    assert f"{broken} is still missing after installing pkg-broken" in bad.stderr


def test_bootstrap_installs_the_postgresql_server_binaries_when_missing(tmp_path: Path) -> None:
    """tests/pgcluster.py runs initdb and pg_ctl itself: the server package is installed even
    when a database to test against is already reachable."""
    initdb = tmp_path / "lib" / "postgresql" / "15" / "bin" / "initdb"
    initdb.parent.mkdir(parents=True)
    bin_dir = _fake_tools(tmp_path, {"postgresql": initdb})
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}",
           "PG_SERVER_GLOB": f"{tmp_path}/lib/postgresql/*/bin/initdb"}
    done = _bash(". scripts/bootstrap.sh; bootstrap_postgres_binaries", ROOT, env)
    assert done.returncode == 0, done.stderr
    assert initdb.exists()
    assert (tmp_path / "apt.log").read_text().splitlines()[-1].split()[-1] == "postgresql"
    (tmp_path / "apt.log").unlink()
    again = _bash(". scripts/bootstrap.sh; bootstrap_postgres_binaries", ROOT, env)
    assert again.returncode == 0 and not (tmp_path / "apt.log").exists()  # present: no apt


def test_the_suite_needs_nothing_outside_the_repository() -> None:
    for path in TESTS.rglob("*.py"):
        text = path.read_text()
        if path != Path(__file__):
            assert "shared/corpus" not in text and "/work/" not in text, path
    corpus = TESTS / "fixtures" / "emails" / "corpus"
    for source in corpus.glob("*/SOURCE.json"):
        assert '"license"' in source.read_text(), source  # each source's licence travels along
    assert (corpus / "hard_cases.json").is_file()


def test_corpus_sweep_skips_cleanly_without_a_corpus(tmp_path: Path) -> None:
    out = subprocess.run([ROOT / "scripts" / "test-corpus"], capture_output=True, text=True,
                         env={**os.environ, "MAILTICKET_CORPUS": str(tmp_path / "none")},
                         timeout=60)
    assert out.returncode == 0
    assert "corpus sweep skipped" in out.stdout


def test_corpus_sweep_runs_the_corpus_tests_over_the_corpus_it_is_given(tmp_path: Path) -> None:
    # A corpus outside the checkout, as ../shared/corpus is.
    curated = tmp_path / "corpus"
    shutil.copytree(TESTS / "fixtures" / "emails" / "corpus", curated)
    out = subprocess.run(
        [ROOT / "scripts" / "test-corpus", "-q", "-p", "no:cacheprovider",
         "-k", "every_corpus_file_gets_a_sane_classification"],
        capture_output=True, text=True, timeout=600, cwd=TESTS,
        env={**os.environ, "MAILTICKET_CORPUS": str(curated)},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"corpus sweep over {curated}" in out.stdout
    assert "1 passed" in out.stdout


def test_ci_runs_the_suite_and_the_corpus_sweep() -> None:
    lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
             if line and not line.startswith("#")]
    assert "./scripts/test" in lines and "./scripts/test-corpus" in lines


def test_a_fresh_clone_has_the_maildir_that_the_readme_names() -> None:
    keep = [f"var/Maildir/{d}/.gitkeep" for d in ("cur", "new", "tmp")]
    assert all((ROOT / name).is_file() for name in keep)
    if (ROOT / ".git").exists():  # and they are in the repository, not only on this disk
        tracked = subprocess.run(["git", "ls-files", "var/Maildir"], cwd=ROOT,
                                 capture_output=True, text=True, timeout=30).stdout.split()
        assert sorted(tracked) == keep
    readme = (ROOT / "README.md").read_text()
    assert "var/Maildir/tmp/" in readme and "var/Maildir/new/" in readme


def test_scripts_run_sets_up_the_maildir_and_takes_mail_from_it(tmp_path: Path) -> None:
    """./scripts/run in a checkout whose venv is already installed: migrate, create the
    Maildir, drain it; then a message written into tmp/ and renamed into new/ is stored."""
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT / "scripts", checkout / "scripts")
    shutil.copyfile(ROOT / "pyproject.toml", checkout / "pyproject.toml")
    venv_bin = checkout / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    for name in ("python", "mailticket"):
        (venv_bin / name).symlink_to(Path(sys.executable).parent / name)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    (checkout / ".venv" / ".mailticket-installed-").write_text(digest + "\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DATABASE_", "MAILDIR_", "WORKFLOWS_", "IMAP_", "LMTP_"))}
    first = subprocess.run([checkout / "scripts" / "run", "--once"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    maildir = checkout / "var" / "Maildir"
    assert all((maildir / sub).is_dir() for sub in ("tmp", "new", "cur"))
    assert (checkout / "mailticket.db").is_file()
    # As the README says: write into tmp/, then rename into new/ (never half a file in new/).
    (maildir / "tmp" / "1.eml").write_bytes(make_email(subject="Dropped into the Maildir"))
    os.rename(maildir / "tmp" / "1.eml", maildir / "new" / "1.eml")
    second = subprocess.run([checkout / "scripts" / "run", "--once"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert list((maildir / "new").iterdir()) == [] and len(list((maildir / "cur").iterdir())) == 1
    listed = subprocess.run([venv_bin / "mailticket", "tickets", "list"], cwd=checkout, env=env,
                            capture_output=True, text=True, timeout=60)
    assert "Dropped into the Maildir" in listed.stdout
