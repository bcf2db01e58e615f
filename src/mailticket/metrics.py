"""Metrics through prometheus_client, adding up across processes.

Every metric of the service is defined here, and call sites use the helper functions below.
One process (the tests, `mailticket ingest`) counts in memory. Several processes (many
`mailticket run` workers and the API) must add up: started with the environment variable
`PROMETHEUS_MULTIPROC_DIR` pointing to one shared, initially empty directory, prometheus_client
keeps each value in a per-process mmap file there, and a scrape of any process's `/metrics`
merges every file (counters and histograms summed; gauges by their `multiprocess_mode`).
The variable is read by prometheus_client when it is first imported, so it belongs in the
environment of every process, not in the settings.

Values that live in the database (quarantine size, outbox depth) are the same for every
process: they are not counted, but read at scrape time by a collector (`set_database_collector`).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import Metric

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# `_created` series double every counter's output and mean nothing once processes add up.
disable_created_metrics()  # type: ignore[no-untyped-call]

LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
# Wall-clock time to the first agent answer: minutes to days.
FIRST_RESPONSE_BUCKETS: tuple[float, ...] = (
    300, 900, 1800, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 86400, 2 * 86400, 5 * 86400,
)

EMAILS_PROCESSED = "mailticket_emails_processed_total"
PROCESSING_SECONDS = "mailticket_email_processing_seconds"
IMAP_CONNECTED = "mailticket_imap_connected"
BATCH_FALLBACKS = "mailticket_batch_fallbacks_total"
SLA_BREACHES = "mailticket_sla_breaches_total"
FIRST_RESPONSE_SECONDS = "mailticket_first_response_seconds"
EVENT_WORKFLOW_RUNS = "mailticket_event_workflow_runs_total"
SENDER_SUSPECT = "mailticket_sender_suspect_total"
RECEIVER_GROUP = "mailticket_receiver_group_messages"

# This process's metrics. Not prometheus_client's global registry: importing the package must
# not register anything twice, and the scrape below decides what a single process shows.
_OWN = CollectorRegistry(auto_describe=True)


def _counter(name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
    # prometheus_client appends `_total` itself.
    return Counter(name.removesuffix("_total"), doc, list(labels), registry=_OWN)


_processed = _counter(
    EMAILS_PROCESSED, "Emails processed, by outcome and classification.",
    ("action", "classification"),
)
_processing = Histogram(
    PROCESSING_SECONDS, "Time to process one email, parse to commit-ready.",
    buckets=LATENCY_BUCKETS, registry=_OWN,
)
# A mailbox is connected when any live worker holds it (the others wait on its lock); a
# killed worker's value leaves with it (`live` modes drop files of dead processes).
_imap = Gauge(
    IMAP_CONNECTED, "1 while the IMAP connection of a mailbox is up.", ["mailbox"],
    multiprocess_mode="livemax", registry=_OWN,
)
_fallbacks = _counter(
    BATCH_FALLBACKS, "Batches redone one message at a time because a message in them failed.",
)
_breaches = _counter(
    SLA_BREACHES, "SLA targets breached, by target and policy.", ("target", "policy"),
)
_first_response = Histogram(
    FIRST_RESPONSE_SECONDS,
    "Wall-clock time from a ticket's creation to its first public agent reply.",
    buckets=FIRST_RESPONSE_BUCKETS, registry=_OWN,
)
_event_runs = _counter(
    EVENT_WORKFLOW_RUNS, "Workflow runs triggered by ticket events, by event and status.",
    ("event", "status"),
)
_suspect = _counter(SENDER_SUSPECT, "Inbound mail whose sender failed validation (spoofed?).")
_receiver_group = Histogram(
    RECEIVER_GROUP, "Messages of concurrent LMTP/SMTP sessions committed in one transaction.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=_OWN,
)


# --- what the code calls ---------------------------------------------------------------------


def observe_processing(seconds: float, action: str, classification: str) -> None:
    _processed.labels(action=action, classification=classification).inc()
    _processing.observe(seconds)


def set_imap_state(mailbox: str, connected: bool) -> None:
    _imap.labels(mailbox=mailbox).set(1.0 if connected else 0.0)


def count_batch_fallback() -> None:
    _fallbacks.inc()


def count_sla_breach(target: str, policy: str) -> None:
    _breaches.labels(target=target, policy=policy).inc()


def observe_first_response(seconds: float) -> None:
    _first_response.observe(seconds)


def count_event_run(event: str, status: str) -> None:
    _event_runs.labels(event=event, status=status).inc()


def count_sender_suspect() -> None:
    _suspect.inc()


def observe_receiver_group(messages: int) -> None:
    _receiver_group.observe(messages)


# --- scraping ----------------------------------------------------------------------------------

DatabaseCollector = Callable[[], Iterable[Metric]]

_lock = threading.Lock()
_database: list[DatabaseCollector] = []


class _Database:
    """Adapts the installed database collector to prometheus_client's collector protocol."""

    def collect(self) -> Iterable[Metric]:
        with _lock:
            collectors = list(_database)
        for collect in collectors:
            yield from collect()


def set_database_collector(collector: DatabaseCollector | None) -> None:
    """One database collector per process, the newest app's: re-creating the app (tests,
    reload) replaces it instead of piling up collectors for closed databases."""
    with _lock:
        _database[:] = [] if collector is None else [collector]


def multiproc_dir() -> Path | None:
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


_PID = re.compile(r"_(\d+)\.db$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def reap_dead_processes(path: Path) -> list[int]:
    """Drop the live gauges of processes that died without saying so (kill -9, OOM).

    Their counters and histograms stay: a total must not go down because a worker died.
    The directory must belong to one PID namespace (one host or container), or a pid
    seen here could name someone else's process."""
    dead = sorted({
        int(match.group(1))
        for name in os.listdir(path)
        if (match := _PID.search(name)) is not None and not _alive(int(match.group(1)))
    })
    for pid in dead:
        multiprocess.mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]
    return dead


def _scrape_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    path = multiproc_dir()
    if path is None:
        registry.register(_OWN)
    else:
        reap_dead_processes(path)
        multiprocess.MultiProcessCollector(registry, str(path))  # type: ignore[no-untyped-call]
    registry.register(_Database())
    return registry


def render() -> bytes:
    """The Prometheus text exposition of every process (multiprocess mode) or this one."""
    return generate_latest(_scrape_registry())


def sample_value(name: str, **labels: str) -> float | None:
    """One sample as a scrape sees it, e.g. `sample_value(EMAILS_PROCESSED, action=...)`,
    `sample_value(FIRST_RESPONSE_SECONDS + "_count")`."""
    return _scrape_registry().get_sample_value(name, labels)


def process_exiting() -> None:
    """A worker that ends normally takes its live gauges with it at once."""
    path = multiproc_dir()
    if path is not None:
        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(os.getpid(), str(path))  # type: ignore[no-untyped-call]
