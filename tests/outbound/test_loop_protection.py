"""Who never gets an automatic answer, the per-recipient rate limit, and the workflow action."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from mailticket.outbound.auto_reply import queue_auto_reply
from mailticket.outbound.loop import should_auto_reply
from mailticket.settings import Settings
from mailticket.store.models import EmailLog
from mailticket.store.outbox_models import OutboxItem
from mailticket.types import Classification, ParsedEmail
from mailticket.workflows.registry import ActionContext, ActionError, get_action
from tests.outbound.helpers import NOW, human, mail_settings, make_ticket, parsed, work

NO_REPLY_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("auto-submitted", {"headers": {"Auto-Submitted": "auto-replied"}}, "Auto-Submitted"),
    (
        "auto-generated",
        {"headers": {"Auto-Submitted": "auto-generated; owner=x"}},
        "Auto-Submitted",
    ),
    ("suppress all", {"headers": {"X-Auto-Response-Suppress": "All"}}, "X-Auto-Response-Suppress"),
    (
        "suppress oof",
        {"headers": {"X-Auto-Response-Suppress": "DR, OOF"}},
        "X-Auto-Response-Suppress",
    ),
    ("precedence bulk", {"headers": {"Precedence": "bulk"}}, "Precedence: bulk"),
    ("precedence junk", {"headers": {"Precedence": "junk"}}, "Precedence: junk"),
    ("precedence list", {"headers": {"Precedence": "list"}}, "Precedence: list"),
    ("precedence auto_reply", {"headers": {"Precedence": "auto_reply"}}, "Precedence: auto_reply"),
    ("list-id", {"headers": {"List-Id": "<users.lists.example>"}}, "List-Id"),
    ("null return-path", {"return_path": ""}, "null Return-Path"),
    ("our support address", {"from_address": "support@example.com"}, "our own addresses"),
    ("an own address", {"from_address": "billing@example.com"}, "our own addresses"),
    ("reply-to is us", {"reply_to": ["support@example.com"]}, "our own addresses"),
    # sub-addressing: the MTA delivers support+x@ to our own mailbox
    ("our address +tag", {"from_address": "Support+Billing@example.com"}, "our own addresses"),
    ("reply-to us +tag", {"reply_to": ["billing+eu@example.com"]}, "our own addresses"),
    ("x-loop is us", {"headers": {"X-Loop": "Support <SUPPORT@example.com>"}}, "X-Loop"),
    ("own message-id domain", {"message_id": "<TKT-x-1@mailticket.test>"}, "own domain"),
    ("noreply", {"from_address": "noreply@shop.example"}, "does not take replies"),
    ("no-reply", {"from_address": "no-reply@shop.example"}, "does not take replies"),
    ("no_reply suffix", {"from_address": "orders-no_reply@shop.example"}, "does not take replies"),
    ("donotreply", {"from_address": "DoNotReply@shop.example"}, "does not take replies"),
    ("do-not-reply", {"from_address": "do-not-reply@shop.example"}, "does not take replies"),
    ("mailer-daemon", {"from_address": "MAILER-DAEMON@mx.example"}, "does not take replies"),
    ("postmaster", {"from_address": "postmaster@mx.example"}, "does not take replies"),
    ("no sender", {"from_address": ""}, "no usable sender"),
    # list software: its notices would answer our answer
    ("owner-list", {"from_address": "owner-neko@example.co.jp"}, "does not take replies"),
    ("list-owner", {"from_address": "users-owner@lists.example"}, "does not take replies"),
    ("list-request", {"from_address": "users-request@lists.example"}, "does not take replies"),
    ("VERP bounces", {"from_address": "users-bounces+jo=x.example@lists.example"}, "does not"),
    ("bounces+tag", {"from_address": "bounces+123@mail.shop.example"}, "does not take replies"),
    ("majordomo", {"from_address": "Majordomo@lists.example"}, "does not take replies"),
    ("ezmlm", {"headers": {"Mailing-List": "contact users-help@x.example"}}, "Mailing-List"),
    ("fml", {"headers": {"X-MLServer": "fml [fml 4.0.3 release]"}}, "X-MLServer"),
    ("fml name", {"headers": {"X-ML-Name": "neko"}}, "X-ML-Name"),
    ("non-ascii address", {"from_address": "jörg@example.de"}, "SMTPUTF8"),
]


@pytest.mark.parametrize(
    ("case", "fields", "reason"), NO_REPLY_CASES, ids=[c[0] for c in NO_REPLY_CASES]
)
def test_never_answered(
    settings: Settings,
    session_factory: sessionmaker[Session],
    case: str,
    fields: dict[str, Any],
    reason: str,
) -> None:
    cfg = mail_settings(settings, own_addresses=["Billing@Example.com"])
    with session_factory() as s:
        ok, why = should_auto_reply(work(s), cfg, parsed(**fields), human(), now=NOW)
    assert not ok
    assert reason in why


@pytest.mark.parametrize("label", ["auto_reply", "bounce", "bulk", "spam"])
def test_automated_labels_are_never_answered(
    settings: Settings, session_factory: sessionmaker[Session], label: str
) -> None:
    with session_factory() as s:
        ok, why = should_auto_reply(
            work(s), mail_settings(settings), parsed(), Classification(label, 0.9), now=NOW
        )
    assert (ok, why) == (False, f"classified as {label}")


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"headers": {"Auto-Submitted": "no"}},
        {"headers": {"X-Auto-Response-Suppress": "DR, RN, NRN"}},
        {"headers": {"Precedence": "first-class"}},
        {"message_id": "<synthetic@mailticket.test>", "synthetic": True},
        {"from_address": "replyguy@customer.example"},
        {"return_path": None},
        # a customer's own procmail marks its mail with the customer's address: not a loop
        {"headers": {"X-Loop": "carla@customer.example"}},
        {"from_address": "support+x@customer.example"},
        # people whose names only look like list words
        {"from_address": "requester@customer.example"},
        {"from_address": "owner@customer.example"},
        {"from_address": "bouncer-team@customer.example"},
    ],
)
def test_ordinary_human_mail_is_answered(
    settings: Settings, session_factory: sessionmaker[Session], fields: dict[str, Any]
) -> None:
    with session_factory() as s:
        assert should_auto_reply(
            work(s), mail_settings(settings), parsed(**fields), human(), now=NOW
        ) == (
            True,
            "ok",
        )


def test_disabled_by_setting(settings: Settings, session_factory: sessionmaker[Session]) -> None:
    cfg = mail_settings(settings, auto_reply_enabled=False)
    with session_factory() as s:
        ok, why = should_auto_reply(work(s), cfg, parsed(), human(), now=NOW)
    assert not ok and "AUTO_REPLY_ENABLED" in why


def test_rate_limit_per_recipient_and_window(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    cfg = mail_settings(settings)
    with session_factory.begin() as s:
        for minute in range(10):
            inbound = parsed()
            ok, _ = should_auto_reply(work(s), cfg, inbound, human(), now=NOW)
            assert ok
            ticket = make_ticket(s, inbound)
            queue_auto_reply(
                work(s),
                cfg,
                ticket,
                inbound,
                template="ticket_created",
                now=NOW + timedelta(minutes=minute),
            )
    with session_factory() as s:
        eleventh = NOW + timedelta(minutes=30)
        ok, why = should_auto_reply(work(s), cfg, parsed(), human(), now=eleventh)
        assert not ok
        assert "rate limit: 10 auto-replies to carla@customer.example in the last 3h" in why
        # another sender is not affected
        assert should_auto_reply(
            work(s), cfg, parsed(from_address="dave@customer.example"), human(), now=eleventh
        ) == (True, "ok")
        # once the window has moved past the first reply, one more is allowed
        later = NOW + timedelta(hours=3, seconds=1)
        assert should_auto_reply(work(s), cfg, parsed(), human(), now=later) == (True, "ok")
        tight = mail_settings(settings, auto_reply_rate_limit=3, auto_reply_rate_window="1h")
        ok, why = should_auto_reply(work(s), tight, parsed(), human(), now=eleventh)
        assert not ok and "in the last 1h" in why


_ctx_ids = itertools.count()


def _ctx(session: Session, cfg: Settings, email: ParsedEmail, **kw: Any) -> ActionContext:
    # the action answers ctx.email; this row only stands in for the pipeline's log entry
    log = EmailLog(
        email_message_id=f"<ctx-{next(_ctx_ids)}@x>", email_from=email.from_address, created_at=NOW
    )
    session.add(log)
    session.flush()
    return ActionContext(
        work=work(session),
        settings=cfg,
        email=email,
        classification=kw.pop("classification", human()),
        thread=None,
        email_log=log,
        raw_message_id=0,
        now=NOW,
        **kw,
    )


def _run(ctx: ActionContext, **params: Any) -> dict[str, Any]:
    spec = get_action("send_auto_reply")
    result: dict[str, Any] = spec.func(ctx, spec.params_model(**params))
    return result


def test_action(settings: Settings, session_factory: sessionmaker[Session]) -> None:
    cfg = mail_settings(settings)
    with session_factory.begin() as s:
        with pytest.raises(ActionError, match="no ticket to reply about"):
            _run(_ctx(s, cfg, parsed()))

        inbound = parsed()
        ticket = make_ticket(s, inbound)
        linked = _ctx(s, cfg, inbound, ticket=ticket, created=False, linked=True)
        assert _run(linked) == {"sent": False, "reason": "not a new ticket (only_if_created)"}

        bounce = _ctx(
            s, cfg, inbound, ticket=ticket, created=True, classification=Classification("bounce", 1)
        )
        assert _run(bounce) == {"sent": False, "reason": "classified as bounce"}

        fresh = _ctx(s, cfg, inbound, ticket=ticket, created=True)
        result = _run(fresh)
        assert result["sent"] is True and result["queued"] is True
        assert result["message_id"].startswith(f"<{ticket.ticket_number}-")
        assert fresh.notes["auto_reply_queued"] == result["message_id"]
        again = _run(fresh)
        assert again["sent"] is False and again["reason"] == "already queued for this message"

        reply = _run(
            _ctx(s, cfg, inbound, ticket=ticket, linked=True),
            template="reply_received",
            only_if_created=False,
        )
        assert reply["sent"] is True

        with pytest.raises(ActionError, match="nope.txt not found"):
            _run(
                _ctx(s, cfg, parsed(), ticket=ticket, created=True),
                template="nope",
            )
        assert s.scalar(select(func.count()).select_from(OutboxItem)) == 2


def test_action_params_are_checked() -> None:
    model = get_action("send_auto_reply").params_model
    assert model().template == "ticket_created" and model().only_if_created is True
    with pytest.raises(ValidationError):
        model(template="../../etc/passwd")
    with pytest.raises(ValidationError):
        model(tempalte="ticket_created")
    assert model(extra={"team": "Ops", "sla_hours": 4}).extra == {"team": "Ops", "sla_hours": 4}
