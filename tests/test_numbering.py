from __future__ import annotations

import threading
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailticket.store.batch import open_batch
from mailticket.store.db import make_engine, make_session_factory
from mailticket.store.models import TicketCounter
from mailticket.ticketing.numbering import allocate_ticket_number

UTCZ = ZoneInfo("UTC")


def test_sequential_per_day_and_four_digits(session_factory: sessionmaker[Session]) -> None:
    day1 = datetime(2025, 12, 15, 10, tzinfo=UTC)
    day2 = datetime(2025, 12, 16, 0, 5, tzinfo=UTC)
    with session_factory() as s:
        w = open_batch(s)
        assert allocate_ticket_number(w, UTCZ, day1) == "TKT-20251215-001"
        assert allocate_ticket_number(w, UTCZ, day1) == "TKT-20251215-002"
        assert allocate_ticket_number(w, UTCZ, day2) == "TKT-20251216-001"
        numbers = [allocate_ticket_number(w, UTCZ, day1) for _ in range(998)]
        assert numbers[-2:] == ["TKT-20251215-999", "TKT-20251215-1000"]
        s.commit()


def test_rollback_gives_the_number_back(session_factory: sessionmaker[Session]) -> None:
    day = datetime(2025, 12, 15, tzinfo=UTC)
    with session_factory() as s:
        allocate_ticket_number(open_batch(s), UTCZ, day)
        s.rollback()
        assert allocate_ticket_number(open_batch(s), UTCZ, day) == "TKT-20251215-001"


def test_timezone_decides_the_day(session_factory: sessionmaker[Session]) -> None:
    late_utc = datetime(2025, 12, 15, 23, 30, tzinfo=UTC)
    with session_factory() as s:
        assert allocate_ticket_number(open_batch(s), ZoneInfo("Europe/Copenhagen"), late_utc).startswith(
            "TKT-20251216-"
        )


def test_parallel_workers_never_share_a_number(pg_url: str) -> None:
    """Eight connections racing on PostgreSQL, each committing per ticket."""
    engine = make_engine(pg_url, pool_size=10)
    factory = make_session_factory(engine)
    day = datetime(2025, 12, 15, tzinfo=UTC)
    results: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for _ in range(50):
            with factory() as s:
                number = allocate_ticket_number(open_batch(s), UTCZ, day)
                s.commit()
            with lock:
                results.append(number)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.dispose()
    assert len(results) == 400
    assert len(set(results)) == 400
    assert sorted(int(n.rsplit("-", 1)[1]) for n in results) == list(range(1, 401))


def test_parallel_batches_that_roll_back_leave_no_gap(pg_url: str) -> None:
    """Six connections racing on PostgreSQL, each batch numbering one to three tickets and
    every third batch rolled back: the numbers committed are exactly 1..N, each once, and
    the day's counter stands at N."""
    engine = make_engine(pg_url, pool_size=8)
    factory = make_session_factory(engine)
    day = datetime(2025, 12, 17, tzinfo=UTC)
    committed: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(6)

    def worker(w: int) -> None:
        barrier.wait()
        for b in range(30):
            with factory() as s:
                work = open_batch(s)
                numbers = [
                    allocate_ticket_number(work, UTCZ, day) for _ in range(1 + (w + b) % 3)
                ]
                if b % 3 == w % 3:
                    s.rollback()
                    continue
                s.commit()
            with lock:
                committed.extend(numbers)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with factory() as s:
        last = s.scalar(select(TicketCounter.last_value).where(TicketCounter.day == "20251217"))
    engine.dispose()
    assert len(committed) == len(set(committed)) > 0
    assert sorted(int(n.rsplit("-", 1)[1]) for n in committed) == list(range(1, len(committed) + 1))
    assert last == len(committed)
