"""The message boundaries: bytes in, a ticket / link / log entry / quarantine entry out.

One message (`process_in_session`) runs inside its own SAVEPOINT: whatever goes wrong in it
rolls back that message only and moves its raw bytes to quarantine; the messages around it
keep flowing. A batch (`process_batch`, see `mailticket.store.batch`) runs in one SAVEPOINT and,
when anything in it fails, is retried in halves down to single messages, so it ends exactly
as the one-message boundary would have. These are the places that catch every exception.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from mailticket import metrics, threading
from mailticket.backends.actions import mirror_followup
from mailticket.outbound.loop import reply_recipient
from mailticket.reading.parsing import parse_email
from mailticket.reading.ticketnumbers import canonical_ticket_number
from mailticket.settings import Settings, UnmatchedAction
from mailticket.store import batch
from mailticket.store.db import new_row
from mailticket.store.models import Attachment, EmailLog, RawMessage, Ticket, WorkflowExecution
from mailticket.store.outbox_models import as_utc
from mailticket.ticketing import quarantine, tickets
from mailticket.types import Classification, Outcome, ParsedEmail
from mailticket.workflows.engine import run_workflows
from mailticket.workflows.registry import ActionContext, get_action

if TYPE_CHECKING:
    from mailticket.reading.classification import Classifier
    from mailticket.workflows.schema import WorkflowSet

log = logging.getLogger(__name__)


Prepared = tuple[ParsedEmail, Classification]
# A failed batch is halved until it is this small, then done one message at a time.
_ONE_BY_ONE = 4


def _chunked(
    items: Iterable[tuple[bytes, str]], size: int, max_bytes: int
) -> Iterator[list[tuple[bytes, str]]]:
    """Batches of at most `size` messages and, beyond their first, `max_bytes` raw bytes."""
    chunk: list[tuple[bytes, str]] = []
    held = 0
    for item in items:
        if chunk and held + len(item[0]) > max_bytes:
            yield chunk
            chunk, held = [], 0
        chunk.append(item)
        held += len(item[0])
        if len(chunk) >= size:
            yield chunk
            chunk, held = [], 0
    if chunk:
        yield chunk


class _Lookahead:
    """The next batch's parse, run in `pool` from when `start` is first called."""

    def __init__(
        self,
        pool: ThreadPoolExecutor,
        prepare: Callable[[Sequence[tuple[bytes, str]]], list[Prepared | None]],
        chunk: list[tuple[bytes, str]] | None,
    ) -> None:
        self.pool, self.prepare, self.chunk = pool, prepare, chunk
        self.future: Future[list[Prepared | None]] | None = None

    def start(self) -> None:
        if self.chunk and self.future is None:
            self.future = self.pool.submit(self.prepare, self.chunk)

    def result(self) -> list[Prepared | None] | None:
        self.start()  # a batch that went the careful way never started it
        return self.future.result() if self.future is not None else None


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

    def prepare(self, items: Sequence[tuple[bytes, str]]) -> list[Prepared | None]:
        """Parse and classify, touching no database: safe to run in another thread while
        this batch is being written (`ingest_many` does). None: it failed, the
        careful path will quarantine it."""
        prepared: list[Prepared | None] = []
        for raw, _source in items:
            try:
                email = parse_email(raw, domain=self.settings.mail_domain)
                prepared.append((email, self.classifier.classify(email)))
            except Exception:  # noqa: BLE001 - handled one by one after the batch
                prepared.append(None)
        return prepared

    def process_batch(
        self,
        session: Session,
        items: Sequence[tuple[bytes, str]],
        *,
        prepared: Sequence[Prepared | None] | None = None,
        on_write: Callable[[], None] | None = None,
    ) -> list[Outcome]:
        """Process many messages in the caller's transaction; the caller commits.

        Fast path: one savepoint and one flush for the whole batch (see `batch`). When any
        message in it fails, the batch's writes are rolled back and its two halves are
        tried again in order, down to a few messages, which are done one at a time with a
        savepoint each: the result is what `process_in_session` gives for each message, and
        one bad message costs a few retries instead of the whole batch going slow. `on_write`
        is called when the fast path starts writing, the part that mostly waits on the
        database.
        """
        if len(items) < 2:
            return [self.process_in_session(session, raw, source) for raw, source in items]
        if prepared is None:
            prepared = self.prepare(items)
        started = time.perf_counter()
        try:
            with session.begin_nested():
                fast = self._fast_batch(session, items, prepared, on_write)
        except OperationalError:
            raise
        except Exception as exc:  # noqa: BLE001 - the batch boundary; nothing is lost here
            # Not a quarantine: the retries below find the message and hold it.
            log.info("batch of %d split and retried: %s", len(items), quarantine.describe(exc))
            metrics.count_batch_fallback()
            if len(items) <= _ONE_BY_ONE:
                return [self.process_in_session(session, raw, source) for raw, source in items]
            half = len(items) // 2
            return [
                *self.process_batch(session, items[:half], prepared=prepared[:half]),
                *self.process_batch(session, items[half:], prepared=prepared[half:]),
            ]
        per_message = (time.perf_counter() - started) / len(items)
        outcomes: list[Outcome] = []
        for (raw, source), outcome in zip(items, fast, strict=True):
            if outcome is None:  # could not even be parsed: the careful path quarantines it
                outcome = self.process_in_session(session, raw, source)
            else:
                metrics.observe_processing(
                    per_message, outcome.action, outcome.classification or "none"
                )
            outcomes.append(outcome)
        return outcomes

    def ingest_many(
        self, items: Iterable[tuple[str, bytes]], *, batch_size: int | None = None
    ) -> Iterator[Outcome]:
        """Bulk ingest: many messages per commit; outcomes are yielded only once the batch
        holding them is committed."""
        size = batch_size or self.settings.ingest_batch_size
        chunks = _chunked(
            ((raw, source) for source, raw in items), size, self.settings.ingest_batch_bytes
        )
        # A thread parses the next batch while this one is written: parsing is CPU, writing
        # is mostly waiting on the database, so the two overlap. It starts only then, so it
        # does not take the GIL from this batch's own Python work.
        with ThreadPoolExecutor(1, thread_name_prefix="mailticket-parse") as parser:
            current = next(chunks, None)
            with self.session_factory() as session:
                prepared = self.prepare(current) if current else None
                while current is not None:
                    following = next(chunks, None)
                    ahead = _Lookahead(parser, self.prepare, following)
                    outcomes = self.process_batch(
                        session, current, prepared=prepared, on_write=ahead.start
                    )
                    session.commit()
                    yield from outcomes
                    session.expunge_all()
                    prepared = ahead.result()
                    current = following

    def _fast_batch(
        self,
        session: Session,
        items: Sequence[tuple[bytes, str]],
        prepared: Sequence[Prepared | None],
        on_write: Callable[[], None] | None = None,
    ) -> list[Outcome | None]:
        ready = [p for p in prepared if p is not None]
        work = batch.start(session, block=len(items) * 2)
        try:
            self._prefetch(work, ready)
            outcomes: list[Outcome | None] = []
            for (raw, source), ready_item in zip(items, prepared, strict=True):
                if ready_item is None:
                    outcomes.append(None)
                    continue
                email, classification = ready_item
                outcomes.append(
                    self._handle(session, raw, source, None, None, email, classification)
                )
            if on_write is not None:
                on_write()
            work.finish()
            return outcomes
        finally:
            work.close()

    def _prefetch(self, work: batch.Batch, ready: list[Prepared]) -> None:
        """Everything the batch's messages could look up, in a handful of queries."""
        if not ready:
            return
        work.prefetch_logged(email.message_id for email, _ in ready)
        ids: list[str] = []
        numbers: set[str] = set()
        for email, classification in ready:
            for _signal, mid in threading.candidates(email, classification):
                ids.append(mid)
                if number := canonical_ticket_number(mid):
                    numbers.add(number)
            if number := threading.subject_ticket_number(email.subject):
                numbers.add(number)
        work.prefetch_refs(ids)
        ticket_ids = {tid for mid in ids for tid in work.refs.get(mid, {})}
        work.prefetch_tickets(ids=ticket_ids, numbers=numbers)
        clock = self.clock()
        earliest = min(
            (min(received_at_of(email, None), clock) if self.backdate else clock)
            for email, _ in ready
        )
        work.prefetch_replies(
            (reply_recipient(email)[0] for email, _ in ready),
            as_utc(earliest) - self.settings.auto_reply_rate_window,
        )

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
        email: ParsedEmail | None = None,
        classification: Classification | None = None,
    ) -> Outcome:
        if email is None:
            email = parse_email(raw, domain=self.settings.mail_domain)
        duplicate = self._duplicate(session, email, source)
        if duplicate is not None:
            return duplicate
        raw_row = raw_message or quarantine.store_raw(session, raw, source)
        if classification is None:
            classification = self.classifier.classify(email)
        resolution = threading.resolve(session, self.settings, email, classification)
        entry = self._log_row(email, classification, raw_row, received_at)
        batch.add_with_id(session, entry)
        work = batch.current(session)
        if work is not None:
            work.note_logged(entry)
        attachments = self._attachments(session, email, entry)

        ctx = ActionContext(
            session=session,
            settings=self.settings,
            email=email,
            classification=classification,
            thread=resolution.match,
            email_log=entry,
            raw_message_id=raw_row.id,
            now=self._now(entry),
            clock_now=self.clock(),
        )
        ran: list[str] = []
        if self.settings.email_workflows_enabled:
            ran = [ex.workflow_name for ex in run_workflows(ctx, self.workflows) if ex.status == "ok"]
        if ctx.ticket is None and not ctx.ignored:
            self._unmatched(ctx)
        for attachment in attachments:
            attachment.ticket_id = entry.ticket_id
        if ctx.ticket is not None and resolution.also:
            others = [batch.get_ticket(session, tid) for tid in resolution.also]
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
        if work is None:
            session.flush()
        # A logged message (an out-of-office, say) may still sit on a ticket: name it.
        ticket = ctx.ticket or (batch.get_ticket(session, on_ticket) if on_ticket else None)
        return Outcome(
            source=source,
            message_id=email.message_id,
            action=entry.action,  # type: ignore[arg-type]
            ticket_number=ticket.ticket_number if ticket is not None else None,
            ticket_id=on_ticket,
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
            ticket = batch.get_ticket(ctx.session, ctx.thread.ticket_id)
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
        work = batch.current(session)
        if work is not None:
            first = work.logged_as(email.message_id)
            if first is None:
                return None
            ticket_id = first.ticket_id
            return Outcome(
                source=source,
                message_id=email.message_id,
                action="duplicate",
                ticket_id=ticket_id,
                ticket_number=work.ticket(ticket_id).ticket_number if ticket_id else None,
                classification=first.classification,
            )
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
        return new_row(
            EmailLog,
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

    def _attachments(
        self, session: Session, email: ParsedEmail, entry: EmailLog
    ) -> list[Attachment]:
        rows = [
            new_row(
                Attachment,
                email_log_id=entry.id,
                part_index=part.index,
                filename=part.filename[:500] or f"attachment-{part.index}",
                content_type=part.content_type[:255],
                size=part.size,
                sha256=hashlib.sha256(part.payload).hexdigest(),
            )
            for part in email.attachments
        ]
        for row in rows:
            batch.add_row(session, row)
        return rows
