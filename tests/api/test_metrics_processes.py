"""Metrics of several real processes add up at /metrics (prometheus_client multiprocess mode),
and a worker killed with -9 leaves its counts but not its live gauges."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.server import free_port

COUNTING = """
import sys
from mailticket import metrics
for _ in range(int(sys.argv[1])):
    metrics.observe_processing(0.01, "created", "support")
metrics.count_batch_fallback()
metrics.set_imap_state(sys.argv[2], connected=True)
print("ready", flush=True)
sys.stdin.readline()
"""


def _samples(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _counter(env: dict[str, str], n: int, mailbox: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", COUNTING, str(n), mailbox],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_two_processes_add_up_at_metrics(db_url: str, tmp_path: Path) -> None:
    shared = tmp_path / "prom"
    shared.mkdir()
    env = {**os.environ, "DATABASE_URL": db_url, "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    workers = [_counter(env, 3, "box-a"), _counter(env, 5, "box-b")]
    port = free_port()
    api = subprocess.Popen(
        [sys.executable, "-m", "mailticket.cli", "serve", "--host", "127.0.0.1",
         "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            pytest.fail("mailticket serve did not become ready")
        created = ("mailticket_emails_processed_total",
                   (("action", "created"), ("classification", "support")))
        box_a = ("mailticket_imap_connected", (("mailbox", "box-a"),))
        box_b = ("mailticket_imap_connected", (("mailbox", "box-b"),))
        samples = _samples(base)
        assert samples[created] == 8
        assert samples[("mailticket_batch_fallbacks_total", ())] == 2
        assert samples[("mailticket_email_processing_seconds_count", ())] == 8
        assert samples[box_a] == 1 and samples[box_b] == 1
        # The API process's own database gauges are still there, once.
        assert samples[("mailticket_quarantine_held", ())] == 0

        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait()
        samples = _samples(base)
        assert samples[created] == 8, "a dead worker's counts must not vanish from the total"
        assert box_a not in samples, "a dead worker's mailbox still shows as connected"
        assert samples[box_b] == 1
    finally:
        for proc in (*workers, api):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
