"""Two drainers on PostgreSQL: FOR UPDATE SKIP LOCKED hands each row to exactly one."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailticket.backends import links
from mailticket.backends.delivery import KIND, deliver_backend_ops, enqueue_op
from mailticket.backends.models import RemoteLink
from mailticket.backends.registry import registry_for
from mailticket.settings import load_settings
from mailticket.store.db import make_engine, make_session_factory
from mailticket.store.models import Ticket
from mailticket.store.outbox import claim
from tests.backends.conftest import jira_instance
from tests.backends.fakes.jira import FakeJira
from tests.backends.helpers import POLICY, write_backends

N = 12


def _seed(session_factory: sessionmaker[Session], n: int) -> list[int]:
    with session_factory() as s, s.begin():
        ids = []
        for i in range(n):
            t = Ticket(ticket_number=f"TKT-20251215-{i:03d}", subject=f"s{i}", description="d")
            s.add(t)
            s.flush()
            links.open_pending(s, t.id, "jira")
            enqueue_op(s, backend="jira", operation="create_ticket", ticket_id=t.id,
                       payload={"draft": {"subject": f"s{i}", "text": "d"}}, key_parts=(t.id,))
            ids.append(t.id)
        return ids


def test_claims_skip_rows_locked_by_another_transaction(pg_url: str) -> None:
    engine = make_engine(pg_url)
    factory = make_session_factory(engine)
    try:
        _seed(factory, 6)
        with factory() as a, factory() as b:
            a.begin()
            b.begin()
            first = claim(a, kind=KIND, limit=2)  # locked, not committed
            # Without SKIP LOCKED this would block on A's rows (and the test would hang).
            second = claim(b, kind=KIND, limit=10)
            a.commit()
            b.commit()
        got_a, got_b = {i.id for i in first}, {i.id for i in second}
        assert len(got_a) == 2 and len(got_b) == 4
        assert not got_a & got_b
    finally:
        engine.dispose()


def test_two_concurrent_drainers_deliver_each_create_once(
    pg_url: str, fake_jira: FakeJira, tmp_path: Path
) -> None:
    path = write_backends(tmp_path / "b.yaml", {"jira": jira_instance(fake_jira)})
    settings = load_settings(database_url=pg_url, backends_file=path, _env_file=None)
    engine = make_engine(pg_url)
    factory = make_session_factory(engine)
    try:
        _seed(factory, N)
        registry = registry_for(path)
        barrier = threading.Barrier(2)
        reports = []

        def worker() -> None:
            barrier.wait()  # both start claiming together
            reports.append(asyncio.run(deliver_backend_ops(
                factory, registry, settings, policy=POLICY, batch=3
            )))

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(r.done for r in reports) == N
        assert sum(r.retried + r.dead for r in reports) == 0
        assert len(fake_jira.issues) == N
        posts = [entry for entry in fake_jira.log if entry[:2] == ("POST", "/rest/api/2/issue")]
        assert len(posts) == N  # no row was performed twice
        with factory() as s:
            linked = s.scalars(select(RemoteLink.remote_id)).all()
        assert sorted(linked) == sorted(fake_jira.issues)
    finally:
        engine.dispose()
