"""Agents' changes made over the HTTP API reach the external backend through the outbox."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from mailticket.api import tokens
from mailticket.backends import fake
from mailticket.customers.directory import CustomersMode, create_customer
from mailticket.customers.lookup import shared_for
from mailticket.customers.schema import ContactSpec, CustomerSpec
from mailticket.runtime import Runtime
from tests.api.conftest import build_api
from tests.backends.helpers import drain_until_quiet, workflow_for, write_backends
from tests.backends.mail import mail


async def test_api_status_change_and_comments_are_mirrored(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    store = fake.store(f"api-{tmp_path.name}")
    path = write_backends(tmp_path / "b.yaml", {"jira": {"kind": "fake", "store": f"api-{tmp_path.name}"}})
    rt = make_runtime(workflows_path=workflow_for(tmp_path, "jira"), backends_file=path)
    api = build_api(rt)
    try:
        ticket_id = rt.pipeline.process(mail()[0], "t").ticket_id
        await drain_until_quiet(rt)
        (remote,) = store.tickets.values()

        public = api.client.post(
            f"/api/v1/tickets/{ticket_id}/comments", headers=api.auth("write"),
            json={"body": "We are on it.", "visibility": "public"},
        )
        internal = api.client.post(
            f"/api/v1/tickets/{ticket_id}/comments", headers=api.auth("write"),
            json={"body": "Customer is on the old firmware.", "visibility": "internal"},
        )
        assert public.status_code == internal.status_code == 201
        patched = api.client.patch(
            f"/api/v1/tickets/{ticket_id}", headers=api.auth("write"), json={"status": "closed"}
        )
        assert patched.status_code == 200
        await drain_until_quiet(rt)

        assert [(c.text, c.public) for c in remote.comments] == [
            ("We are on it.", True), ("Customer is on the old firmware.", False),
        ]
        assert remote.status == "closed"
        # An unchanged PATCH queues nothing new.
        assert api.client.patch(
            f"/api/v1/tickets/{ticket_id}", headers=api.auth("write"), json={"status": "closed"}
        ).status_code == 200
        await drain_until_quiet(rt)
        assert len(remote.comments) == 2
    finally:
        api.client.close()


async def test_a_customer_tokens_comment_is_mirrored_as_the_customers(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    """The integration's account posts it: the remote text says who wrote it (as for a
    mirrored mail), and the reopen it causes goes out too."""
    store = fake.store(f"cust-{tmp_path.name}")
    path = write_backends(tmp_path / "b.yaml", {"jira": {"kind": "fake", "store": f"cust-{tmp_path.name}"}})
    rt = make_runtime(workflows_path=workflow_for(tmp_path, "jira"), backends_file=path)
    api = build_api(rt)
    try:
        with rt.session_factory() as s:
            create_customer(s, CustomerSpec(key="carolco", name="Carol Co",
                                            contacts=(ContactSpec(address="carol@example.com"),)),
                            mode=CustomersMode.db, shared=shared_for(rt.settings),
                            now=datetime(2025, 12, 15, tzinfo=UTC))
            _, plain = tokens.create_token(s, name="portal", scope="write", customer="carolco")
            s.commit()
        ticket_id = rt.pipeline.process(mail()[0], "t").ticket_id
        await drain_until_quiet(rt)
        (remote,) = store.tickets.values()
        assert api.client.patch(f"/api/v1/tickets/{ticket_id}", headers=api.auth("write"),
                                json={"status": "resolved"}).status_code == 200
        await drain_until_quiet(rt)
        r = api.client.post(
            f"/api/v1/tickets/{ticket_id}/comments", headers={"Authorization": f"Bearer {plain}"},
            json={"body": "It broke again.", "author_email": "carol@example.com"},
        )
        assert r.status_code == 201, r.text
        await drain_until_quiet(rt)
        assert [(c.text, c.public) for c in remote.comments][-1] == (
            "carol@example.com wrote:\n\nIt broke again.\n", True)
        assert remote.status == "open"
    finally:
        api.client.close()
