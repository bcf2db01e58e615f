"""The per-message boundary: bytes in, a ticket / link / log entry / quarantine entry out.

Each message runs inside its own SAVEPOINT. Whatever goes wrong in it rolls back that
message only and moves its raw bytes to quarantine; the messages around it keep flowing.
This is the one place that catches every exception.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from mailticket import metrics, quarantine, threading, tickets
from mailticket.backends.actions import mirror_followup
from mailticket.models import Attachment, EmailLog, RawMessage, Ticket, WorkflowExecution
from mailticket.parsing import parse_email
from mailticket.settings import Settings, UnmatchedAction
from mailticket.types import Classification, Outcome, ParsedEmail
from mailticket.workflows.engine import run_workflows
from mailticket.workflows.registry import ActionContext, get_action

if TYPE_CHECKING:
    from mailticket.classification import Classifier
    from mailticket.workflows.schema import WorkflowSet

log = logging.getLogger(__name__)


def received_at_of(email: ParsedEmail, given: datetime | None) -> datetime:
    """When we got it: the source's word, else our MTA's Received stamp, else Date."""
    if given is not None:
        return given.astimezone(UTC)
    for value in email.headers.get("received", [])[:1]:
        _, _, stamp = value.rpartition(";")
        try:
            parsed = parsedate_to_datetime(stamp.strip())
        except (TypeError, ValueError, IndexError):
            continue
        if parsed.tzinfo is not None:
            return parsed.astimezone(UTC)
    return email.date or datetime.now(UTC)


@dataclass
class Pipeline:
    settings: Settings
    session_factory: sessionmaker[Session]
    classifier: Classifier
    workflows: WorkflowSet
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # Importing an archive: date tickets by when each mail arrived, not by today (never
    # later than the clock, so a bogus future Date header cannot mint tomorrow's numbers).
    backdate: bool = False

    # --- boundaries --------------------------------------------------------------------

    def process(self, raw: bytes, source: str, *, received_at: datetime | None = None) -> Outcome:
        with self.session_factory() as session:
            outcome = self.process_in_session(session, raw, source, received_at=received_at)
            session.commit()
            return outcome

    def process_in_session(
        self,
        session: Session,
        raw: bytes,
        source: str,
        *,
        received_at: datetime | None = None,
        raw_message: RawMessage | None = None,
    ) -> Outcome:
        """Process one message in the caller's transaction; the caller commits.

        Raises only when the database itself is unusable (the caller must then not
        acknowledge the message to its source).
        """
        started = time.perf_counter()
        try:
            with session.begin_nested():
                outcome = self._handle(session, raw, source, received_at, raw_message)
        except OperationalError:
            raise
        except IntegrityError as exc:
            # Another worker stored the same Message-ID between our check and our insert.
            outcome = self._after_race(session, raw, source) or self._hold(
                session, raw, source, exc, raw_message
            )
        except Exception as exc:
            log.warning("quarantining message from %s: %s", source, exc, exc_info=True)
            outcome = self._hold(session, raw, source, exc, raw_message)
        metrics.observe_processing(
            time.perf_counter() - started, outcome.action, outcome.classification or "none"
        )
        return outcome

    def ingest_many(
        self, items: Iterable[tuple[str, bytes]], *, batch_size: int | None = None
    ) -> Iterator[Outcome]:
        """Bulk ingest: many messages per commit, one savepoint each; outcomes are yielded
        only once the batch holding them is committed."""
        size = batch_size or self.settings.ingest_batch_size
        pending: list[Outcome] = []
        with self.session_factory() as session:
            for source, raw in items:
                pending.append(self.process_in_session(session, raw, source))
                if len(pending) >= size:
                    session.commit()
                    yield from pending
                    pending.clear()
                    session.expunge_all()
            session.commit()
            yield from pending

    # --- stages --------------------------------------------------------------------------

    def _now(self, entry: EmailLog) -> datetime:
        now = self.clock()
        if self.backdate and entry.email_received_at is not None:
            return min(entry.email_received_at, now)
        return now

    def _handle(
        self,
        session: Session,
        raw: bytes,
        source: str,
        received_at: datetime | None,
        raw_message: RawMessage | None,
    ) -> Outcome:
        email = parse_email(raw, domain=self.settings.mail_domain)
        duplicate = self._duplicate(session, email, source)
        if duplicate is not None:
            return duplicate
        raw_row = raw_message or quarantine.store_raw(session, raw, source)
        classification = self.classifier.classify(email)
        resolution = threading.resolve(session, self.settings, email, classification)
        entry = self._log_row(email, classification, raw_row, received_at)
        session.add(entry)
        session.flush()
        self._attachments(session, email, entry)

        ctx = ActionContext(
            session=session,
            settings=self.settings,
            email=email,
            classification=classification,
            thread=resolution.match,
            email_log=entry,
            raw_message_id=raw_row.id,
            now=self._now(entry),
        )
        ran: list[str] = []
        if self.settings.email_workflows_enabled:
            ran = [ex.workflow_name for ex in run_workflows(ctx, self.workflows) if ex.status == "ok"]
        if ctx.ticket is None and not ctx.ignored:
            self._unmatched(ctx)
        if ctx.ticket is not None and resolution.also:
            others = [session.get_one(Ticket, tid) for tid in resolution.also]
            tickets.merge_tickets(session, ctx.ticket, others)
        # Mail on a ticket that lives in an external backend too becomes a remote comment
        # (no backends configured: no lookup on the hot path).
        if self.settings.backends_file is not None:
            mirror_followup(ctx)

        match = resolution.match
        on_ticket = ctx.ticket.id if ctx.ticket is not None else entry.ticket_id
        if match is not None and match.ticket_id == on_ticket:
            entry.matched_by, entry.matched_value = match.matched_by, match.matched_value
        elif ctx.linked:
            entry.matched_by = "workflow"
        entry.action = "created" if ctx.created else "linked" if ctx.linked else "logged"
        session.flush()
        return Outcome(
            source=source,
            message_id=email.message_id,
            action=entry.action,  # type: ignore[arg-type]
            ticket_number=ctx.ticket.ticket_number if ctx.ticket is not None else None,
            ticket_id=ctx.ticket.id if ctx.ticket is not None else entry.ticket_id,
            matched_by=entry.matched_by,
            classification=classification.label,
            confidence=round(classification.confidence, 4),
            email_log_id=entry.id,
            workflows=ran,
        )

    def _unmatched(self, ctx: ActionContext) -> None:
        """No workflow took the message. A reply still lands on its ticket's log; the
        configurable default may open a ticket for human mail."""
        human = not ctx.classification.is_automated
        if self.settings.email_unmatched_action is UnmatchedAction.create_ticket and human:
            self._default_create(ctx)
            return
        if ctx.thread is not None:
            ticket = ctx.session.get_one(Ticket, ctx.thread.ticket_id)
            ctx.email_log.ticket_id = ticket.id
            ctx.email_log.is_reply = True

    def _default_create(self, ctx: ActionContext) -> None:
        spec = get_action("create_ticket")
        started = time.perf_counter()
        result = spec.func(ctx, spec.params_model())
        # Recorded like a workflow run, so "why did this ticket appear" is answerable.
        ctx.session.add(
            WorkflowExecution(
                workflow_name="(default) EMAIL_UNMATCHED_ACTION=create_ticket",
                email_log_id=ctx.email_log.id,
                email_message_id=ctx.email.message_id,
                classification=ctx.classification.label,
                confidence=ctx.classification.confidence,
                status="ok",
                steps=[{"action": "create_ticket", "status": "ok", "result": result}],
                result=result,
                duration_ms=(time.perf_counter() - started) * 1000,
            )
        )

    def _duplicate(self, session: Session, email: ParsedEmail, source: str) -> Outcome | None:
        # No ORDER BY/LIMIT: with them PostgreSQL may walk the primary key and filter, a
        # scan that grows with the table; a Message-ID has at most a couple of rows.
        rows = session.execute(
            select(EmailLog.id, EmailLog.ticket_id, EmailLog.classification, Ticket.ticket_number)
            .outerjoin(Ticket, Ticket.id == EmailLog.ticket_id)
            .where(EmailLog.email_message_id == email.message_id)
        ).all()
        if not rows:
            return None
        row = min(rows, key=lambda r: r.id)
        return Outcome(
            source=source,
            message_id=email.message_id,
            action="duplicate",
            ticket_id=row.ticket_id,
            ticket_number=row.ticket_number,
            classification=row.classification,
        )

    def _after_race(self, session: Session, raw: bytes, source: str) -> Outcome | None:
        email = parse_email(raw, domain=self.settings.mail_domain)
        return self._duplicate(session, email, source)

    def _hold(
        self,
        session: Session,
        raw: bytes,
        source: str,
        exc: BaseException,
        raw_message: RawMessage | None,
    ) -> Outcome:
        raw_row = raw_message or quarantine.store_raw(session, raw, source)
        entry = quarantine.quarantine(
            session, raw_row, source=source, reason=quarantine.describe(exc), exc=exc
        )
        return Outcome(
            source=source,
            message_id=entry.message_id,
            action="quarantined",
            error=entry.reason,
        )

    def _log_row(
        self,
        email: ParsedEmail,
        classification: Classification,
        raw_row: RawMessage,
        received_at: datetime | None,
    ) -> EmailLog:
        return EmailLog(
            email_message_id=email.message_id,
            email_subject=email.subject,
            email_from=email.from_address,
            email_from_name=email.from_name or None,
            email_to=", ".join(email.to) or None,
            email_received_at=received_at_of(email, received_at),
            is_reply=False,
            thread_data={
                "message_id": email.message_id,
                "in_reply_to": " ".join(email.in_reply_to) or None,
                "references": " ".join(email.references) or None,
            },
            direction="in",
            classification=classification.label,
            confidence=round(classification.confidence, 4),
            body_text=email.text,
            raw_message_id=raw_row.id,
        )

    def _attachments(self, session: Session, email: ParsedEmail, entry: EmailLog) -> None:
        for part in email.attachments:
            session.add(
                Attachment(
                    email_log_id=entry.id,
                    part_index=part.index,
                    filename=part.filename[:500] or f"attachment-{part.index}",
                    content_type=part.content_type[:255],
                    size=part.size,
                    sha256=hashlib.sha256(part.payload).hexdigest(),
                )
            )
