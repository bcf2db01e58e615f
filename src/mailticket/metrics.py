"""In-process metrics, rendered in the Prometheus text exposition format.

A tiny registry rather than prometheus_client: we need a handful of counters, gauges and
one histogram, and a process-wide registry that tests can reset. Values that live in the
database (quarantine size, outbox depth) are gauges filled by a collector at scrape time.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

Labels = tuple[tuple[str, str], ...]

LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)


def _labels(values: dict[str, str]) -> Labels:
    return tuple(sorted(values.items()))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt_labels(labels: Labels, extra: Labels = ()) -> str:
    items = labels + extra
    if not items:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in items) + "}"


def _fmt_value(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


@dataclass
class _Metric:
    name: str
    help: str
    kind: str
    values: dict[Labels, float] = field(default_factory=dict)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        for labels, value in sorted(self.values.items()):
            lines.append(f"{self.name}{_fmt_labels(labels)} {_fmt_value(value)}")
        return lines


@dataclass
class _Histogram:
    name: str
    help: str
    buckets: Sequence[float]
    # per label set: bucket counts (non-cumulative), sum, count
    series: dict[Labels, tuple[list[int], float, int]] = field(default_factory=dict)

    def observe(self, labels: Labels, value: float) -> None:
        counts, total, n = self.series.get(labels, ([0] * len(self.buckets), 0.0, 0))
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                counts[i] += 1
                break
        self.series[labels] = (counts, total + value, n + 1)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for labels, (counts, total, n) in sorted(self.series.items()):
            running = 0
            for bound, c in zip(self.buckets, counts, strict=True):
                running += c
                le = (("le", _fmt_value(bound)),)
                lines.append(f"{self.name}_bucket{_fmt_labels(labels, le)} {running}")
            inf = (("le", "+Inf"),)
            lines.append(f"{self.name}_bucket{_fmt_labels(labels, inf)} {n}")
            lines.append(f"{self.name}_sum{_fmt_labels(labels)} {_fmt_value(total)}")
            lines.append(f"{self.name}_count{_fmt_labels(labels)} {n}")
        return lines


Collector = Callable[["Registry"], None]


class Registry:
    """Thread-safe: the IMAP worker, the outbox job and the API share one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[str, _Metric] = {}
        self._histograms: dict[str, _Histogram] = {}
        self._collectors: list[Collector] = []

    def _metric(self, name: str, help: str, kind: str) -> _Metric:
        metric = self._metrics.get(name)
        if metric is None:
            metric = self._metrics[name] = _Metric(name, help, kind)
        return metric

    def inc(self, name: str, help: str, amount: float = 1.0, **labels: str) -> None:
        with self._lock:
            metric = self._metric(name, help, "counter")
            key = _labels(labels)
            metric.values[key] = metric.values.get(key, 0.0) + amount

    def set(self, name: str, help: str, value: float, **labels: str) -> None:
        with self._lock:
            self._metric(name, help, "gauge").values[_labels(labels)] = value

    def observe(
        self, name: str, help: str, value: float,
        buckets: Sequence[float] = LATENCY_BUCKETS, **labels: str,
    ) -> None:
        with self._lock:
            hist = self._histograms.get(name)
            if hist is None:
                hist = self._histograms[name] = _Histogram(name, help, tuple(buckets))
            hist.observe(_labels(labels), value)

    def value(self, name: str, **labels: str) -> float | None:
        with self._lock:
            metric = self._metrics.get(name)
            return None if metric is None else metric.values.get(_labels(labels))

    def histogram_count(self, name: str, **labels: str) -> int:
        with self._lock:
            hist = self._histograms.get(name)
            if hist is None or _labels(labels) not in hist.series:
                return 0
            return hist.series[_labels(labels)][2]

    def add_collector(self, collector: Collector) -> None:
        with self._lock:
            self._collectors.append(collector)

    def remove_collector(self, collector: Collector) -> None:
        with self._lock:
            if collector in self._collectors:
                self._collectors.remove(collector)

    def render(self) -> str:
        with self._lock:
            collectors = list(self._collectors)
        for collect in collectors:
            collect(self)
        with self._lock:
            blocks: Iterable[list[str]] = [
                *(m.render() for _, m in sorted(self._metrics.items())),
                *(h.render() for _, h in sorted(self._histograms.items())),
            ]
            return "\n".join(line for block in blocks for line in block) + "\n"

    def reset(self) -> None:
        with self._lock:
            self._metrics.clear()
            self._histograms.clear()
            self._collectors.clear()


REGISTRY = Registry()

EMAILS_PROCESSED = "mailticket_emails_processed_total"
PROCESSING_SECONDS = "mailticket_email_processing_seconds"


def observe_processing(seconds: float, action: str, classification: str) -> None:
    REGISTRY.inc(
        EMAILS_PROCESSED, "Emails processed, by outcome and classification.",
        action=action, classification=classification,
    )
    REGISTRY.observe(
        PROCESSING_SECONDS, "Time to process one email, parse to commit-ready.", seconds,
    )


def set_imap_state(mailbox: str, connected: bool) -> None:
    REGISTRY.set(
        "mailticket_imap_connected", "1 while the IMAP connection of a mailbox is up.",
        1.0 if connected else 0.0, mailbox=mailbox,
    )


BATCH_FALLBACKS = "mailticket_batch_fallbacks_total"


def count_batch_fallback() -> None:
    REGISTRY.inc(
        BATCH_FALLBACKS,
        "Batches redone one message at a time because a message in them failed.",
    )


# --- customers, SLAs and escalation (issue 11): every metric of the feature is defined here --

SLA_BREACHES = "mailticket_sla_breaches_total"
FIRST_RESPONSE_SECONDS = "mailticket_first_response_seconds"
EVENT_WORKFLOW_RUNS = "mailticket_event_workflow_runs_total"
SENDER_SUSPECT = "mailticket_sender_suspect_total"
# Wall-clock time to the first agent answer: minutes to days.
FIRST_RESPONSE_BUCKETS: tuple[float, ...] = (
    300, 900, 1800, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 86400, 2 * 86400, 5 * 86400,
)


def count_sla_breach(target: str, policy: str) -> None:
    REGISTRY.inc(
        SLA_BREACHES, "SLA targets breached, by target and policy.",
        target=target, policy=policy,
    )


def observe_first_response(seconds: float) -> None:
    REGISTRY.observe(
        FIRST_RESPONSE_SECONDS,
        "Wall-clock time from a ticket's creation to its first public agent reply.",
        seconds, FIRST_RESPONSE_BUCKETS,
    )


def count_event_run(event: str, status: str) -> None:
    REGISTRY.inc(
        EVENT_WORKFLOW_RUNS, "Workflow runs triggered by ticket events, by event and status.",
        event=event, status=status,
    )


def count_sender_suspect() -> None:
    REGISTRY.inc(SENDER_SUSPECT, "Inbound mail whose sender failed validation (spoofed?).")
