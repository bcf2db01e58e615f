"""Legacy In-Reply-To / References forms from real archives, and the false merge they used
to cause: a person's address read as a Message-ID put strangers' mail into one ticket."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime

import pytest

from mailticket.reading.msgids import normalize_message_id, parse_id_list
from mailticket.reading.parsing import parse_email
from mailticket.runtime import Runtime
from tests.conftest import FIXTURES


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # Gnus / Emacs when the original had no usable id: an address and a date, no id.
        ('jm@example.org\'s message of "Tue, 20 Aug 2002 10:06:20 +0100"', []),
        ("jm@example.org's message of Tue, 20 Aug 2002 10:06:20 +0100", []),
        ('"Justin Mason"\'s message of "Tue, 20 Aug 2002 10:06:20 +0100"', []),
        ('<jm@example.org>\'s message of "Tue, 20 Aug 2002 10:06:20 +0100"', []),
        # Gnus with an id: the phrase is a comment (notmuch-default has two of these).
        (
            '<20091117190054.GU3165@dottiness.seas.harvard.edu> (Lars Kellogg-Stedman\'s'
            ' message of "Tue, 17 Nov 2009 14:00:54 -0500")',
            ["<20091117190054.GU3165@dottiness.seas.harvard.edu>"],
        ),
        # MH / nmh: prose, a quoted date, then the id.
        (
            'Your message of "Tue, 20 Aug 2002 17:15:22 +0200."\n\t<200208201515.g7KFF@host.example>',
            ["<200208201515.g7KFF@host.example>"],
        ),
        ("Your message of Mon, 1 Jan 2024 10:00 <id@x.org>", ["<id@x.org>"]),
        # exmh: the first bracketed value is the author's address, the last one the id.
        (
            'Message from Chris Garrigues <cwg-exmh@DeepEddy.Com> \n   of "Tue, 20 Aug 2002'
            ' 10:06:20 CDT." <1029856033.4349.TMDA@deepeddy.vircio.com>',
            ["<1029856033.4349.TMDA@deepeddy.vircio.com>"],
        ),
        ('Message from Chris Garrigues <cwg-exmh@DeepEddy.Com> of "Tue, 20 Aug 2002"', []),
        # old mutt: the id, then who wrote it and when, unbracketed.
        (
            "<20020820100620.GA1234@host.example>; from jm@example.org on Tue, Aug 20, 2002"
            " at 10:06:20AM +0100",
            ["<20020820100620.GA1234@host.example>"],
        ),
        # A mailbox where an id belongs.
        ('"Jo Smith" <jo@example.org>', []),
        ("Jo Smith <jo@example.org>", []),
        ("jo@example.org", []),
        # Several ids, separators, comments (nested, with escapes), folding.
        ("<a@x>, <b@y>; <a@x>", ["<a@x>", "<b@y>"]),
        ("(see (the \\) one) <no@id>) <yes@id>", ["<yes@id>"]),
        ("<a@x>\r\n <b\r\n @y>", ["<a@x>", "<b@y>"]),
        # An unclosed bracket still meant an id; a cut one without "@" is too little.
        ("<abc@x", ["<abc@x>"]),
        ("<a@x> <broken", ["<a@x>"]),
    ],
)
def test_in_reply_to_forms(value: str, expected: list[str]) -> None:
    assert parse_id_list(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # References holds nothing but ids, so bare ones (some old mailers) count there...
        ("a1@x.example b2@y.example", ["<a1@x.example>", "<b2@y.example>"]),
        ("a1@x.example, b2@y.example (comment)", ["<a1@x.example>", "<b2@y.example>"]),
        # ...but not inside prose, and never beside bracketed ids.
        ("jm@example.org's message of \"Tue, 20 Aug 2002\"", []),
        ("<a@x> b@y", ["<a@x>"]),
        ("<baz@bar.net>, <invalid.", ["<baz@bar.net>"]),
    ],
)
def test_references_forms(value: str, expected: list[str]) -> None:
    assert parse_id_list(value, bare=True) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("abc@example.com", "<abc@example.com>"),  # Message-ID holds only an id
        ('"<abc@example.com>"', "<abc@example.com>"),
        ("(comment) <abc@example.com> (more)", "<abc@example.com>"),
        ("12223", None),
        ("two words@example.com", None),
    ],
)
def test_message_id_field(value: str, expected: str | None) -> None:
    assert normalize_message_id(value) == expected


def test_parsed_mail_reads_in_reply_to_and_references_apart() -> None:
    raw = (
        b"From: bob@example.net\nTo: list@example.org\nSubject: Re: spam filters\n"
        b"Message-ID: <bob-1@example.net>\n"
        b"In-Reply-To: jm@example.org's message of \"Tue, 20 Aug 2002 10:06:20 +0100\"\n"
        b"References: orig-7@mail.example.org\n\nI agree.\n"
    )
    email = parse_email(raw, domain="helpdesk.example")
    assert email.in_reply_to == []
    assert email.references == ["<orig-7@mail.example.org>"]


SEED_WF = FIXTURES / "workflows" / "seed.yaml"


def _list_reply(n: int, when: datetime) -> bytes:
    """Member n answers one of jm's posts; Gnus wrote jm's address and the date, no id."""
    msg = EmailMessage()
    msg["From"] = f"Member {n} <member{n}@lists.example>"
    msg["To"] = "support@helpdesk.example"
    msg["Subject"] = f"Re: unrelated topic number {n}"
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = f"<reply-{n}@lists.example>"
    parent_date = format_datetime(when - timedelta(hours=n))
    msg["In-Reply-To"] = f'jm@example.org\'s message of "{parent_date}"'
    msg.set_content(f"About topic {n}.")
    return msg.as_bytes()


def test_a_busy_list_members_phrase_replies_do_not_merge(
    make_runtime: Callable[..., Runtime],
) -> None:
    rt = make_runtime(workflows_path=SEED_WF)
    when = datetime(2025, 12, 15, 9, 0, tzinfo=UTC)
    outcomes = [rt.pipeline.process(_list_reply(n, when), "test") for n in range(6)]
    numbers = [o.ticket_number for o in outcomes]
    assert all(numbers) and len(set(numbers)) == 6, numbers
