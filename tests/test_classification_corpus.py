"""The built-in rules against real mail: a mail corpus and the seed's example messages.

The corpus is the curated copy in tests/fixtures (default) or the whole shared corpus
(`./scripts/test-corpus`); every category check covers every member the corpus has."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mailticket.reading.classification import Classifier, builtin_rules
from mailticket.reading.parsing import parse_email
from mailticket.types import Classification
from tests.mailfactory import make_email

DSN = "dsn_bounce(multipart/report delivery-status)"
NON_DSN = "non_dsn_bounce(from MAILER-DAEMON/postmaster, no DSN part)"


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier(builtin_rules())


@pytest.fixture(scope="module")
def corpus_labels(corpus_dir: Path, classifier: Classifier) -> dict[str, Classification]:
    """Every corpus file's classification, keyed by its path relative to the corpus."""
    results = {}
    for path in sorted(corpus_dir.rglob("*.eml")):
        results[path.relative_to(corpus_dir).as_posix()] = classifier.classify(
            parse_email(path.read_bytes())
        )
    return results


@pytest.fixture(scope="module")
def hard_cases(corpus_dir: Path) -> dict[str, list[str]]:
    cases: dict[str, list[str]] = json.loads((corpus_dir / "hard_cases.json").read_text())
    return cases


def wrong(
    corpus_labels: dict[str, Classification], files: list[str], allowed: set[str]
) -> dict[str, str]:
    assert files, "empty category"
    return {
        f: f"{corpus_labels[f].label} {corpus_labels[f].reasons}"
        for f in files
        if corpus_labels[f].label not in allowed
    }


def test_every_corpus_file_gets_a_sane_classification(
    corpus_labels: dict[str, Classification], corpus_dir: Path
) -> None:
    declared = sum(json.loads(p.read_text())["messages"] for p in corpus_dir.glob("*/SOURCE.json"))
    assert len(corpus_labels) == declared, "every message the corpus declares was read"
    for name, result in corpus_labels.items():
        assert 0.0 < result.confidence <= 1.0, name
        assert any(h.label == result.label for h in result.hits), name
    counts = Counter(r.label for r in corpus_labels.values())
    assert set(counts) <= {"support_request", "auto_reply", "bounce", "bulk", "spam"}


def test_dsn_bounces_are_bounces(
    corpus_labels: dict[str, Classification], hard_cases: dict[str, list[str]]
) -> None:
    assert wrong(corpus_labels, hard_cases[DSN], {"bounce"}) == {}
    for f in hard_cases[DSN]:
        assert corpus_labels[f].confidence >= 0.99


def test_mailer_daemon_mail_without_dsn_part_is_bounce(
    corpus_labels: dict[str, Classification], hard_cases: dict[str, list[str]]
) -> None:
    assert wrong(corpus_labels, hard_cases[NON_DSN], {"bounce"}) == {}


def test_auto_submitted_auto_replied_is_automated(
    corpus_labels: dict[str, Classification], hard_cases: dict[str, list[str]]
) -> None:
    files = hard_cases["auto_submitted_auto_replied"]
    assert wrong(corpus_labels, files, {"auto_reply", "bounce"}) == {}
    # Plain vacation replies (no delivery report, no daemon sender) must stay auto_reply.
    assert corpus_labels["sisimai-bounces/bsd__rfc3834-01.eml"].label == "auto_reply"


def test_auto_submitted_other_is_automated(
    corpus_labels: dict[str, Classification], hard_cases: dict[str, list[str]]
) -> None:
    files = hard_cases["auto_submitted_other(auto-generated/...)"]
    assert wrong(corpus_labels, files, {"auto_reply", "bounce"}) == {}


def test_heuristic_auto_replies(
    corpus_labels: dict[str, Classification], hard_cases: dict[str, list[str]]
) -> None:
    files = hard_cases["autoreply_heuristic(X-Autoreply/vacation subject/Precedence auto_reply)"]
    assert wrong(corpus_labels, files, {"auto_reply", "bounce"}) == {}
    # Outlook's "Automatic reply:" with X-Auto-Response-Suppress and Apple's vacation notice.
    for name in ("bsd__rfc3834-02.eml", "bsd__rfc3834-03.eml", "bsd__rfc3834-04.eml"):
        assert corpus_labels[f"sisimai-bounces/{name}"].label == "auto_reply"


def test_arf_abuse_reports_are_bounces(
    corpus_labels: dict[str, Classification], hard_cases: dict[str, list[str]]
) -> None:
    assert wrong(corpus_labels, hard_cases["arf_abuse_report"], {"bounce"}) == {}
    # Hotmail's JMRP complaints are not ARF but name the IP in the subject.
    for n in (22, 23, 24):
        assert corpus_labels[f"sisimai-bounces/bsd__arf-{n}.eml"].label == "bounce"


def test_read_receipts_are_auto_replies(
    corpus_labels: dict[str, Classification], hard_cases: dict[str, list[str]]
) -> None:
    assert wrong(corpus_labels, hard_cases["mdn_read_receipt"], {"auto_reply"}) == {}


def test_precedence_bulk_junk_list_is_not_a_support_request(
    corpus_labels: dict[str, Classification], hard_cases: dict[str, list[str]]
) -> None:
    files = hard_cases["precedence_bulk_junk_list"]
    assert wrong(corpus_labels, files, {"bulk", "bounce", "auto_reply", "spam"}) == {}


def test_real_client_replies_are_support_requests(
    corpus_labels: dict[str, Classification],
) -> None:
    talon = {k: v for k, v in corpus_labels.items() if k.startswith("talon/")}
    assert len(talon) == 13
    assert wrong(corpus_labels, sorted(talon), {"support_request"}) == {}
    assert all(r.confidence >= 0.7 for r in talon.values())


def test_helpdesk_fixtures_are_support_requests(
    corpus_labels: dict[str, Classification],
) -> None:
    files = sorted(k for k in corpus_labels if k.startswith("django-helpdesk/"))
    assert wrong(corpus_labels, files, {"support_request"}) == {}


# The three incoming mails of the seed's usage examples, as written there.
SEED_EXAMPLES: list[dict[str, Any]] = [
    {
        "sender": "customer@example.com",
        "subject": "Help with network issue",
        "body": "Our internet is down. Can you help?",
    },
    {
        "sender": "customer@example.com",
        "subject": "Re: TKT-20251215-001",
        "in_reply_to": "<TKT-20251215-001@bmcnetworks.dk>",
        "body": "Thanks, issue is resolved now",
    },
    {
        "sender": "vip@example.com",
        "subject": "URGENT: Server down!",
        "body": "Production server is down #critical #server",
    },
]


@pytest.mark.parametrize("example", SEED_EXAMPLES, ids=["basic", "reply", "urgent"])
def test_seed_examples_clear_the_workflow_threshold(
    classifier: Classifier, example: dict[str, Any]
) -> None:
    result = classifier.classify(parse_email(make_email(**example)))
    assert result.label == "support_request"
    assert result.confidence >= 0.7
