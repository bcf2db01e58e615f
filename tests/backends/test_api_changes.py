"""Agents' changes made over the HTTP API reach the external backend through the outbox."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mailticket.backends import fake
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
