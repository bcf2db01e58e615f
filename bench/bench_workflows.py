"""Workflow loading and engine overhead.

    .venv/bin/python bench/bench_workflows.py                 # fresh PostgreSQL db
    .venv/bin/python bench/bench_workflows.py --sqlite        # SQLite file in a temp dir

Prints: time to validate a generated file of --workflows workflows, and the engine's cost per
message (savepoint + execution row) for three no-op workflows, over --messages messages.
Targets: loading 500 workflows < 1 s; engine overhead < 5 ms per message on either database.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.dbutil import create_pg, drop_pg  # noqa: E402
from tests.mailfactory import make_email  # noqa: E402

from mailticket.reading.parsing import parse_email  # noqa: E402
from mailticket.settings import load_settings  # noqa: E402
from mailticket.store import migrate  # noqa: E402
from mailticket.store.batch import open_batch  # noqa: E402
from mailticket.store.db import make_engine, make_session_factory  # noqa: E402
from mailticket.store.models import EmailLog, RawMessage  # noqa: E402
from mailticket.types import Classification  # noqa: E402
from mailticket.workflows import registry  # noqa: E402
from mailticket.workflows.engine import run_workflows  # noqa: E402
from mailticket.workflows.loader import load_workflows  # noqa: E402
from mailticket.workflows.registry import ActionContext, NoParams  # noqa: E402


@registry.action("bench_noop", NoParams)
def _noop(ctx: ActionContext, params: NoParams) -> dict[str, Any]:
    return {"noop": True}


def _workflow_yaml(n: int) -> str:
    parts = ["workflows:"]
    for i in range(n):
        parts.append(
            f"  - name: wf {i}\n    classification_trigger: [label{i % 7}, support_request]\n"
            f"    confidence_threshold: 0.{i % 10}\n    stop: false\n"
            "    workflow_steps:\n      - action: bench_noop\n      - action: ignore\n"
        )
    return "\n".join(parts) + "\n"


def bench_load(tmp: Path, n: int) -> None:
    path = tmp / "many.yaml"
    path.write_text(_workflow_yaml(n), encoding="utf-8")
    started = time.perf_counter()
    ws = load_workflows(path)
    elapsed = time.perf_counter() - started
    print(f"load: {len(ws)} workflows in {elapsed * 1000:.1f} ms")


def bench_engine(url: str, tmp: Path, messages: int) -> None:
    migrate.upgrade(url)
    settings = load_settings(database_url=url, _env_file=None)
    path = tmp / "three.yaml"
    path.write_text(_workflow_yaml(3), encoding="utf-8")
    ws = load_workflows(path)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    email = parse_email(make_email())
    spent = 0.0
    with factory() as session:
        work = open_batch(session)
        for i in range(messages):
            raw = RawMessage(sha256="0" * 64, size=1, raw=b"x", source="bench")
            session.add(raw)
            session.flush()
            log_row = EmailLog(
                email_message_id=f"<bench-{i}-{uuid.uuid4().hex}@x>",
                email_from="a@example.com",
                raw_message_id=raw.id,
            )
            session.add(log_row)
            session.flush()
            ctx = ActionContext(
                work=work,
                settings=settings,
                email=email,
                classification=Classification("support_request", 0.95),
                thread=None,
                email_log=log_row,
                raw_message_id=raw.id,
            )
            started = time.perf_counter()
            run_workflows(ctx, ws)
            spent += time.perf_counter() - started
        session.commit()
    engine.dispose()
    print(
        f"engine ({url.split(':')[0]}): {messages} messages x 3 workflows, "
        f"{spent / messages * 1000:.2f} ms per message"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workflows", type=int, default=500)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--sqlite", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        bench_load(tmp, args.workflows)
        if args.sqlite:
            bench_engine(f"sqlite:///{tmp / 'bench.sqlite3'}", tmp, args.messages)
            return
        name = f"mt_bench_wf_{uuid.uuid4().hex[:8]}"
        url = create_pg(name)
        try:
            bench_engine(url, tmp, args.messages)
        finally:
            drop_pg(name)


if __name__ == "__main__":
    main()
