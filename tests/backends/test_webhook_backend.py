"""The generic webhook backend against a real Standard Webhooks receiver, and its call-backs."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI

from mailticket.backends.models import WebhookDelivery
from mailticket.backends.webhook_api import build_router
from mailticket.runtime import Runtime
from mailticket.store.models import Ticket
from tests.backends.fakes.asgi import AsgiServer
from tests.backends.fakes.faults import Fault
from tests.backends.fakes.webhook_receiver import FakeReceiver
from tests.backends.helpers import (
    count,
    drain,
    drain_until_quiet,
    items,
    workflow_for,
    write_backends,
)
from tests.backends.mail import mail

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


async def test_events_signed_retried_and_status_called_back(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    with FakeReceiver(SECRET) as receiver:
        path = write_backends(tmp_path / "b.yaml", {"hook": {
            "kind": "webhook", "url": f"{receiver.url}/hook", "secret": SECRET, "timeout": 5,
        }})
        rt = make_runtime(workflows_path=workflow_for(tmp_path, "hook"), backends_file=path)
        raw, mid = mail(attachment=("a.txt", "text/plain", b"hello"))
        ticket_id = rt.pipeline.process(raw, "t").ticket_id
        # The receiver took the create but the answer was lost: the retry resends the same
        # webhook-id, and the receiver's dedupe keeps one event.
        receiver.fail_next(Fault.LOST_ANSWER, method="POST", path="/hook")
        await drain(rt)
        rt.pipeline.process(mail(body="again", reply_to=mid)[0], "t")
        report = await drain_until_quiet(rt)
        assert report.dead == 0
        types = sorted(e["type"] for e in receiver.events.values())
        assert types == ["attachment.created", "comment.created", "ticket.created"]
        assert receiver.deliveries == 4
        created = next(e for e in receiver.events.values() if e["type"] == "ticket.created")
        assert created["ticket"]["subject"] == "Printer on fire"
        attached = next(e for e in receiver.events.values() if e["type"] == "attachment.created")
        assert attached["attachment"] == {"filename": "a.txt", "content_type": "text/plain",
                                          "size": 5, "download_url": None, "public": True}
        with rt.session_factory() as s:
            assert all(i.status == "done" for i in items(s))
            number = s.get_one(Ticket, ticket_id).ticket_number

        app = FastAPI()
        app.include_router(build_router(rt))
        with AsgiServer(app) as api:
            url = f"{api.url}/api/v1/webhooks/hook"
            payload = {"type": "ticket.updated", "ticket": {"id": number, "status": "resolved"}}
            ok = receiver.call_back(url, payload, msg_id="msg_1")
            assert ok.status_code == 200 and ok.json()["updated"] == 1
            assert receiver.call_back(url, payload, msg_id="msg_1").json()["status"] == "duplicate"
            stale = receiver.call_back(url, payload, msg_id="msg_2", ts=int(time.time()) - 3600)
            assert stale.status_code == 401
            forged = receiver.call_back(url, payload, msg_id="msg_3", secret="whsec_AAAA")
            assert forged.status_code == 401
        with rt.session_factory() as s:
            assert s.get_one(Ticket, ticket_id).status == "resolved"
            assert count(s, WebhookDelivery) == 1


async def test_wrong_secret_is_a_permanent_failure(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    with FakeReceiver(SECRET) as receiver:
        path = write_backends(tmp_path / "b.yaml", {"hook": {
            "kind": "webhook", "url": f"{receiver.url}/hook", "secret": "whsec_AAAA",
        }})
        rt = make_runtime(workflows_path=workflow_for(tmp_path, "hook"), backends_file=path)
        rt.pipeline.process(mail()[0], "t")
        assert (await drain(rt)).dead == 1
        with rt.session_factory() as s:
            assert "AuthError" in (items(s)[0].last_error or "")
