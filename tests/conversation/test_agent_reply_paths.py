"""Every path that can mail a comment: a backend's public comment is mailed, its internal
one never; the service itself refuses internal notes. Real SMTP sink, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from mailticket.backends import fake, links
from mailticket.backends.base import RemoteComment
from mailticket.backends.registry import registry_for
from mailticket.backends.sync import poll_backend
from mailticket.conversation.agent_reply import InternalNote, mail_comment, post_public_reply
from mailticket.outbound.smtp import deliver_outgoing_mail
from mailticket.runtime import Runtime
from mailticket.store.models import Comment, EmailLog, Ticket
from mailticket.ticketing import tickets as ticket_service
from tests.backends.helpers import drain_until_quiet, link_of, workflow_for, write_backends
from tests.backends.mail import mail
from tests.smtp_sink import SmtpSink


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


def _mail_settings(sink: SmtpSink) -> dict[str, object]:
    return {"mail_from": "support@example.com", "smtp_host": "127.0.0.1",
            "smtp_port": sink.port, "smtp_tls": "plain", "smtp_timeout": 5}


async def test_a_backend_public_comment_is_mailed_and_an_internal_one_never(
    make_runtime: Callable[..., Runtime], tmp_path: Path, smtp_sink: SmtpSink
) -> None:
    name = f"t-{tmp_path.name}"
    store = fake.store(name)
    path = write_backends(tmp_path / "b.yaml", {"jira": {"kind": "fake", "store": name}})
    rt = make_runtime(workflows_path=workflow_for(tmp_path, "jira"), backends_file=path,
                      **_mail_settings(smtp_sink))
    raw, _ = mail(sender="Carol Customer <carol@example.com>")
    ticket_id = rt.pipeline.process(raw, "t").ticket_id
    assert ticket_id is not None
    await drain_until_quiet(rt)
    (remote,) = store.tickets.values()
    with rt.session_factory() as s:
        ref = links.ref_of(link_of(s, ticket_id, "jira"))
    # An agent answers in the backend, and writes a note there (neither carries our op key).
    remote.comments += [
        RemoteComment(ref, "r1", "Your new toner ships today.", True, "Jim Agent"),
        RemoteComment(ref, "r2", "INTERNAL: customer owes us money", False, "Jim Agent"),
    ]
    remote.updated_at = datetime.now(UTC)
    backend = registry_for(path).build("jira")
    try:
        report = await poll_backend(rt.session_factory, rt.settings, backend)
        again = await poll_backend(rt.session_factory, rt.settings, backend)
    finally:
        await backend.aclose()
    assert report.comments == 2 and again.comments == 0
    with rt.session_factory() as s:
        mirrored = s.scalars(select(Comment).where(Comment.source == "backend")
                             .order_by(Comment.id)).all()
        assert [(c.is_internal, c.email_log_id is not None) for c in mirrored] == [
            (False, True), (True, False)]
        assert mirrored[0].body == "Your new toner ships today."

    await deliver_outgoing_mail(rt.session_factory, rt.settings)
    answers = [m for m in smtp_sink.messages if m.message()["Auto-Submitted"] is None]
    assert len(answers) == 1
    [answer] = answers
    assert answer.rcpt_tos == ["carol@example.com"]
    assert b"Your new toner ships today." in answer.data
    assert answer.message()["From"] == "Jim Agent <support@example.com>"
    assert all(b"owes us money" not in m.data for m in smtp_sink.messages)


def test_the_service_refuses_to_mail_an_internal_note(
    make_runtime: Callable[..., Runtime],
) -> None:
    rt = make_runtime(mail_from="support@example.com")
    ticket_id = rt.pipeline.process(mail()[0], "t").ticket_id
    with rt.session_factory() as s:
        ticket = s.get_one(Ticket, ticket_id)
        note = ticket_service.add_comment(s, ticket, "internal only", internal=True, now=rt.clock())
        with pytest.raises(InternalNote):
            mail_comment(s, rt.settings, ticket, note, now=rt.clock())
        public = post_public_reply(s, rt.settings, ticket, body="Hello", author_email=None,
                                   now=rt.clock())
        assert not public.is_internal and public.email_log_id is not None
        s.commit()
    with rt.session_factory() as s:
        outgoing = s.scalars(select(EmailLog).where(EmailLog.action == "agent_reply")).all()
        assert [e.thread_data["comment_id"] for e in outgoing] == [public.id]  # type: ignore[index]
