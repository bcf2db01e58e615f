"""The quick MAIL FROM / RCPT TO address (src/mailticket/live/envaddr.py) against aiosmtpd's
own `_getaddr`: the same argument gives the same (address, parameters), the same refusal
(None, None) or the same exception, for every form listed here and for many random ones, with
and without a local-part limit. Also: over the wire, our receivers answer MAIL and RCPT as
aiosmtpd's do."""

from __future__ import annotations

import asyncio
import random
import smtplib
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

from mailticket.live.bulkdata import BulkLMTP, BulkSMTP
from mailticket.live.envaddr import plain_angle_addr
from tests.live.dovecot import free_port

FORMS = [
    # what MTAs send
    "<a@b.c>", "<john.doe@example.com>", "<a@b.c> SIZE=1234", "<a@b.c> SIZE=1 BODY=8BITMIME",
    "<a@b.c>  BODY=8BITMIME SMTPUTF8", "<a@b.c>\tSIZE=1", "<a@b.c> \t SIZE=1", "<a@b.c> ",
    "<a@b.c>  ", "<a@b.c>SIZE=1", "<a@b.c>>", "<a@b.c><d@e>", "<A.B-C+tag@Sub.Example.ORG>",
    "<SRS0=HHH=TT=example.org=user@forwarder.example>", "<prvs=1234abcd=user@example.com>",
    "<bounce+x-y=z@lists.example>", "<!#$%&'*+/=?^_`{|}~-@x>", "<a@b.c> SIZE", "<a@b.c> =",
    "<postmaster>", "<Postmaster>", "<a@localhost>", "<1@2>",
    # the null sender
    "<>", "<> SIZE=10", "<>x", "<>  ", "<> (comment)", "<>>",
    # white space and comments
    " <a@b.c>", "\t<a@b.c>", "< a@b.c>", "<a@b.c >", "<a @b.c>", "<a@ b.c>", "<a b@c>",
    "<a@b.c> (comment) SIZE=1", "<a@b.c>(comment)", "<a@b.c> (comment)", "<a@b.c> (a(b)c) X",
    "<(c)a@b.c>", "<a(c)@b.c>", "<a@(c)b.c>", "<a@b.c(c)>", "(c) <a@b.c>", "<a@b.c> (",
    "<a@b.c> \u00a0 SIZE=1", "<a@b.c>\u00a0SIZE=1", "<a@b.c> \x1c SIZE=1", "<a@b.c> \x0b\x0cX",
    "<a@b.c> \u2003X", "<a@b.c>\r", "<a@b.c> \r\n",
    # quoted local parts
    '<"a b"@c>', '<"a"@c>', '<""@c>', '<"">', '<"a\\"b"@c>', '<"a\\\\b"@c>', '<"a@b"@c>',
    '<"a.b"@c.d>', '<"a" @c>', '<"a"b@c>', '<a"b"@c>', '<"a>', '<"a@b>', '"a b"@c',
    # source routes
    "<@r1:a@b>", "<@r1,@r2:a@b>", "<@r1.example,@r2.example:a@b.c> SIZE=1", "<@:a@b>",
    "<@r1:>", "<@r1:a>", "<@r1,r2:a@b>",
    # domain literals
    "<a@[1.2.3.4]>", "<a@[IPv6:::1]>", "<a@[1.2.3.4]> SIZE=1", "<a@[]>", "<a@[a\\]b]>",
    "<a@[1.2.3.4>",
    # internationalised (SMTPUTF8) and punycode
    "<ü@ß.de>", "<üser@example.com> SMTPUTF8", "<用户@例子.广告>", "<a@bücher.de>",
    "<a@xn--bcher-kva.de>", "<δοκιμή@παράδειγμα.δοκιμή>", "<a\u00a0b@c>", "<a@b\u2003c>",
    # encoded words, which the header parser decodes in a dot-atom
    "<=?utf-8?q?a?=@b>", "<=?utf-8?q?a_b?=@c.d>", "<a@=?utf-8?q?b?=>", "<a=?b@c>", "<a?=@b>",
    "<=?@b>", "<a.=?utf-8?q?x?=@b>", "<=?utf-8?b?w7w=?=@b>",
    # broken dot-atoms and structure
    "<a..b@c>", "<.a@b>", "<a.@b>", "<a@b..c>", "<a@b.>", "<a@.b>", "<a@b@c>", "<a>", "<@b>",
    "<a@>", "<@>", "<a@b", "<a@b.c", "<", ">", "<<a@b>>", "<a\\b@c>", "<a,b@c>", "<a;b@c>",
    "<a:b@c>", "<a[b@c>", "<a]b@c>", "<a<b@c>", "<a@b,c>", "<a@b;c>", "<a@b:c>", "<a@b[c>",
    # no angle brackets
    "a@b", "a@b.c SIZE=1", "a.b@c", '"a b"@c', "a", "@b", "a@", "postmaster", "a@b>", "",
    " ", "\t", "(c)", "a@b (c)",
    # long local parts (the limit, when set)
    "<" + "x" * 64 + "@b>", "<" + "x" * 65 + "@b>", "<" + "x.y" * 30 + "@b>",
    '<"' + "x" * 70 + '"@b>',
]

ALPHABET = [
    "a", "b", "Z", "0", ".", "@", "@", "<", "<", ">", ">", " ", "\t", "(", ")", '"', "\\", "[",
    "]", ":", ",", ";", "=", "?", "ü", "\u00a0", "-", "+", "=?", "?=", "\r", "'",
]


def outcome(getaddr: Any, arg: str) -> object:
    try:
        return getaddr(arg)
    except Exception as exc:  # noqa: BLE001 - aiosmtpd lets some through; they must match too
        return type(exc)


def servers(limit: int) -> Iterator[tuple[SMTP, SMTP]]:
    for ours, theirs in ((BulkSMTP, SMTP), (BulkLMTP, LMTP)):
        pair = []
        for cls in (ours, theirs):
            server = cls(object(), loop=asyncio.new_event_loop())
            server.local_part_limit = limit
            pair.append(server)
        yield pair[0], pair[1]


def random_args(count: int) -> Iterator[str]:
    rng = random.Random(12)
    for _ in range(count):
        body = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 12)))
        shape = rng.randrange(4)
        if shape == 0:
            yield body
        elif shape == 1:
            yield "<" + body + ">"
        elif shape == 2:
            yield "<" + body + "@" + "".join(rng.choice(ALPHABET) for _ in range(4)) + ">" + body
        else:
            yield "<a" + body.replace("<", "").replace(">", "") + "@b.c>" + rng.choice(
                ["", " ", " SIZE=1", "\t(x) Y", " \u00a0", "(", ">"]
            )


@pytest.mark.parametrize("limit", [0, 64])
def test_addresses_are_aiosmtpds(limit: int) -> None:
    args = FORMS + list(random_args(15_000))
    for ours, theirs in servers(limit):
        for arg in args:
            assert outcome(ours._getaddr, arg) == outcome(theirs._getaddr, arg), repr(arg)


def test_the_common_forms_take_the_quick_way() -> None:
    # Not behaviour (the answers are the same either way): the gain depends on it.
    assert plain_angle_addr("<a.b@c.d> SIZE=10 BODY=8BITMIME") == (
        "a.b@c.d", "SIZE=10 BODY=8BITMIME"
    )
    assert plain_angle_addr("<SRS0=HHH=TT=example.org=user@fwd.example>") == (
        "SRS0=HHH=TT=example.org=user@fwd.example", ""
    )
    assert plain_angle_addr("<>") == ("<>", "")
    assert plain_angle_addr('<"a b"@c>') is None
    assert plain_angle_addr("<a@b> (c)") is None


class Nothing:
    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        return "250 OK"


COMMANDS = [
    ("MAIL FROM:<a@b.c> SIZE=100", ["RCPT TO:<d@e.f>", "RCPT TO:<\"g h\"@i>", "RCPT TO:<j@k> X=1"]),
    ("MAIL FROM:<>", ["RCPT TO:<postmaster>", "RCPT TO:<@r:x@y>", "RCPT TO:<a@b> (c)"]),
    ("MAIL FROM:<a..b@c>", ["RCPT TO:<d@e>"]),
    ("MAIL FROM:<ü@ß.de> SMTPUTF8", ["RCPT TO:<δ@ε.gr>", "RCPT TO:<a@b>\tSIZE=1"]),
    ("MAIL FROM:<" + "x" * 65 + "@b>", ["RCPT TO:<d@e>"]),
    ("MAIL FROM:<a@b> SIZE=99999999999", ["RCPT TO:<d@e>"]),
    ("MAIL FROM:<a@b> BODY=9BIT", ["RCPT TO:<d@e>"]),
    ("MAIL FROM:a@b", ["RCPT TO:d@e", "RCPT TO:<d@e> SIZE=", "RCPT TO:<=?utf-8?q?a?=@b>"]),
]


def replies(cls: type[SMTP]) -> list[tuple[int, bytes]]:
    port = free_port()

    class _Controller(Controller):
        def factory(self) -> SMTP:
            server = cls(self.handler, enable_SMTPUTF8=True, hostname="mailticket")
            server.local_part_limit = 64
            return server

    controller = _Controller(Nothing(), hostname="127.0.0.1", port=port)
    controller.start()
    got = []
    try:
        with smtplib.SMTP("127.0.0.1", port) as client:
            client.command_encoding = "utf-8"  # SMTPUTF8 addresses as sent
            client.docmd("LHLO" if issubclass(cls, LMTP) else "EHLO", "client")
            for mail, rcpts in COMMANDS:
                got.append(client.docmd(mail))
                got.extend(client.docmd(rcpt) for rcpt in rcpts)
                got.append(client.docmd("RSET"))
    finally:
        controller.stop()
    return got


@pytest.mark.parametrize(("ours", "theirs"), [(BulkSMTP, SMTP), (BulkLMTP, LMTP)])
def test_mail_and_rcpt_answered_as_aiosmtpd_answers(ours: type[SMTP], theirs: type[SMTP]) -> None:
    assert replies(ours) == replies(theirs)
