"""The message boundary: bytes in, a ticket / link / log entry / quarantine entry out.

Messages are processed in batches, one transaction's worth at a time; a single message is a
batch of one, through the same code. Each batch has one unit of work (`store.batch.Batch`)
that every service reading or writing on the messages' behalf is handed explicitly. Each
message runs inside a checkpoint of that unit of work: whatever goes wrong in it undoes that
message only and moves its raw bytes to quarantine, and the messages around it keep flowing.

When the batch itself fails (the database refused what it wrote, or code outside the unit of
work wrote behind its back inside a checkpoint), its SAVEPOINT (or the transaction, when the
batch began it) is rolled back and it is redone: in halves down to a few messages, then with every checkpoint backed by a SAVEPOINT
and written at its end, which isolates a message the database rejects. This is the one
place that catches every exception.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from threading import Lock
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from mailticket import followups, metrics, threading
from mailticket.backends.actions import mirror_followup
from mailticket.customers import lookup as customers
from mailticket.outbound.actions import auto_reply_keys
from mailticket.outbound.loop import reply_recipient
from mailticket.reading.ownmail import classify_own
from mailticket.reading.parsing import parse_email
from mailticket.reading.senderauth import SenderAuthConfig, Verdict, check_sender, is_suspect
from mailticket.reading.senderauth.dns import DnsClient
from mailticket.reading.ticketnumbers import TICKET_NUMBER_RE, canonical_ticket_number
from mailticket.settings import Settings, UnmatchedAction
from mailticket.sla import service as sla_service
from mailticket.store.batch import Batch, CheckpointLost, open_batch
from mailticket.store.db import new_row
from mailticket.store.gate import engine_of, write_gate
from mailticket.store.models import (
    Attachment,
    EmailLog,
    EmailTicket,
    RawMessage,
    Ticket,
    WorkflowExecution,
)
from mailticket.store.outbox_models import as_utc
from mailticket.store.senderauth_models import EmailSenderAuth
from mailticket.threading.threadindex import conversation_ref
from mailticket.ticketing import quarantine, tickets
from mailticket.types import OWN_MAIL, Classification, Outcome, ParsedEmail
from mailticket.workflows.engine import run_workflows
from mailticket.workflows.registry import ActionContext, get_action

if TYPE_CHECKING:
    from mailticket.reading.classification import Classifier
    from mailticket.workflows.schema import WorkflowSet

log = logging.getLogger(__name__)


# Parsed, classified, and the sender's validation (None when none is configured).
Prepared = tuple[ParsedEmail, Classification, Verdict | None]
# What parsing and classifying gave for a message: its result, or why it failed.
Ready = Prepared | Exception
# A failed batch is halved until it is this small, then redone with SAVEPOINTs.
_ONE_BY_ONE = 4
# Seconds a thread may hold the GIL while another waits for it, while mail is stored beside
# other Python work (the interpreter's default is 5 ms): see `short_gil_switches`.
SWITCH_INTERVAL = 0.0005


class HeldByWorkflow(Exception):
    """A workflow's `quarantine` action asked for the message to be held."""


@dataclass(frozen=True, slots=True)
class Item:
    """One message to process, as a source hands it over."""

    raw: bytes
    source: str
    received_at: datetime | None = None
    # Quarantine retries: the stored bytes' row, reused instead of storing them again.
    raw_message: RawMessage | None = None


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


@contextmanager
def _undo_point(session: Session) -> Iterator[None]:
    """What a failed batch is rolled back to: a SAVEPOINT inside the caller's transaction,
    or, when the batch begins the transaction (the session holds nothing yet: a receiver's
    group, an ingest batch), the transaction itself, which undoes exactly the same and
    saves the SAVEPOINT's and the RELEASE's round trips on every batch."""
    if session.in_transaction() or session.new or session.dirty or session.deleted:
        with session.begin_nested():
            yield
        return
    try:
        yield
    except OperationalError:
        raise  # the connection may be gone: the caller rolls back, or discards it
    except BaseException:
        session.rollback()
        raise


class _ShortSwitches:
    """The process's GIL switch interval, shortened while any user needs it: counted, so
    ingests overlapping in several threads put the interval back only when the last ends."""

    def __init__(self) -> None:
        self.lock = Lock()
        self.users = 0
        self.before = 0.0

    @contextmanager
    def held(self) -> Iterator[None]:
        with self.lock:
            if not self.users:
                self.before = sys.getswitchinterval()
                sys.setswitchinterval(min(self.before, SWITCH_INTERVAL))
            self.users += 1
        try:
            yield
        finally:
            with self.lock:
                self.users -= 1
                if not self.users:
                    sys.setswitchinterval(self.before)


_short_switches = _ShortSwitches()


def short_gil_switches() -> AbstractContextManager[None]:
    """A short GIL switch interval while mail is stored beside other Python work.

    Storing mostly waits on the database outside the GIL, but COPY calls back into Python
    for every slice of data it sends, and every statement's result is read in Python; each
    time, the writer waits for whichever thread holds the GIL to hand it over, which a
    CPU-bound thread does only when the switch interval runs out. In a bulk ingest that is
    the parser thread working on the next batch: at the default 5 ms, the raw messages'
    COPY took about twice as long as alone; at 0.5 ms about as long. In `mailticket run`
    it is the event loop reading LMTP/IMAP data against the thread storing a group, each
    waiting on the other's slices (LMTP, 8 clients, on a busy machine: about 25% more
    msg/s and a lower p99; on a quiet one no measurable change). A switch costs
    microseconds. The interval is the process's; it is put back after."""
    return _short_switches.held()


class _Lookahead:
    """The next batch's parse, run in `pool` from when `start` is first called."""

    def __init__(
        self,
        pool: ThreadPoolExecutor,
        prepare: Callable[[Sequence[tuple[bytes, str]]], list[Ready]],
        chunk: list[tuple[bytes, str]] | None,
    ) -> None:
        self.pool, self.prepare, self.chunk = pool, prepare, chunk
        self.future: Future[list[Ready]] | None = None

    def start(self) -> None:
        if self.chunk and self.future is None:
            self.future = self.pool.submit(self.prepare, self.chunk)

    def result(self) -> list[Ready] | None:
        self.start()  # a batch that was redone never started it
        return self.future.result() if self.future is not None else None


def received_at_of(email: ParsedEmail, given: datetime | None) -> datetime:
    """When we got it: the source's word, else our MTA's Received stamp, else Date."""
    if given is not None:
        return given.astimezone(UTC)
    stamped = email.received if email.received is not None else _stamped_at(email)
    return stamped or datetime.now(UTC)


def _stamped_at(email: ParsedEmail) -> datetime | None:
    """Our MTA's Received stamp, else Date; None when neither says."""
    for value in email.headers.get("received", [])[:1]:
        _, _, stamp = value.rpartition(";")
        try:
            parsed = parsedate_to_datetime(stamp.strip())
        except (TypeError, ValueError, IndexError):
            continue
        if parsed.tzinfo is not None:
            return parsed.astimezone(UTC)
    return email.date


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
    # Sender validation (SPF/DKIM/DMARC), built from the settings once.
    sender_auth: SenderAuthConfig | None = None

    def __post_init__(self) -> None:
        if self.sender_auth is None:
            self.sender_auth = SenderAuthConfig.from_settings(self.settings)
        self._dns: DnsClient | None = None

    def _check_sender(self, raw: bytes) -> Verdict | None:
        """The verdict on the From domain, before any transaction: our own checks may ask
        DNS, which must never happen while the unit of work holds its locks."""
        config = self.sender_auth
        if config is None or not config.active:
            return None
        if config.verify != "off" and self._dns is None:
            self._dns = config.dns_client()
        return check_sender(raw, config, dns=self._dns)

    # --- boundaries --------------------------------------------------------------------

    def process(self, raw: bytes, source: str, *, received_at: datetime | None = None) -> Outcome:
        """One message in a transaction of its own (committed when this returns)."""
        with self.session_factory() as session:
            (outcome,) = self.process_items(session, [Item(raw, source, received_at)])
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
        """One message in the caller's transaction (a batch of one); the caller commits."""
        return self.process_items(session, [Item(raw, source, received_at, raw_message)])[0]

    def process_batch(
        self,
        session: Session,
        items: Sequence[tuple[bytes, str]],
        *,
        prepared: Sequence[Ready] | None = None,
        on_write: Callable[[], None] | None = None,
    ) -> list[Outcome]:
        """Messages (raw, source) in the caller's transaction; the caller commits."""
        return self.process_items(
            session, [Item(raw, source) for raw, source in items],
            prepared=prepared, on_write=on_write,
        )

    def process_items(
        self,
        session: Session,
        items: Sequence[Item],
        *,
        prepared: Sequence[Ready] | None = None,
        on_write: Callable[[], None] | None = None,
        durable: bool = False,
    ) -> list[Outcome]:
        """The batch boundary. Raises only when the database itself is unusable (the caller
        must then not acknowledge the messages to their source). `on_write` is called when
        the batch starts writing, the part that mostly waits on the database."""
        if not items:
            return []
        if prepared is None:
            prepared = self.prepare([(item.raw, item.source) for item in items])
        started = time.perf_counter()
        try:
            with _undo_point(session):
                outcomes = self._batch(session, items, prepared, on_write, durable)
        except OperationalError:
            raise
        except Exception as exc:
            if durable and len(items) == 1:
                raise  # nothing left to isolate: the message must not be acknowledged
            # Not a quarantine: the retries below find the message and hold it.
            log.info("batch of %d redone: %s", len(items), quarantine.describe(exc))
            metrics.count_batch_fallback()
            if durable:
                return [
                    outcome
                    for item, ready in zip(items, prepared, strict=True)
                    for outcome in self.process_items(
                        session, [item], prepared=[ready], durable=True
                    )
                ]
            if len(items) > _ONE_BY_ONE and not isinstance(exc, CheckpointLost):
                half = len(items) // 2
                return [
                    *self.process_items(session, items[:half], prepared=prepared[:half]),
                    *self.process_items(session, items[half:], prepared=prepared[half:]),
                ]
            return self.process_items(session, items, prepared=prepared, durable=True)
        per_message = (time.perf_counter() - started) / len(items)
        for outcome in outcomes:
            metrics.observe_processing(
                per_message, outcome.action, outcome.classification or "none"
            )
        return outcomes

    def prepare(self, items: Sequence[tuple[bytes, str]]) -> list[Ready]:
        """Parse and classify, touching no database: safe to run in another thread while
        the batch before is being written (`ingest_many` does)."""
        prepared: list[Ready] = []
        for raw, _source in items:
            try:
                email = parse_email(raw, domain=self.settings.mail_domain)
                # Hashed here, beside the batch being written (hashlib lets go of the GIL
                # on large input), not by the thread writing the raw row.
                email.raw_sha256 = hashlib.sha256(raw).hexdigest()
                # Our own mail is no customer's word, whatever the content rules say.
                classification = classify_own(
                    self.settings, email, self.classifier.classify(email)
                )
                _work_ahead(email, classification)
                prepared.append((email, classification, self._check_sender(raw)))
            except Exception as exc:  # noqa: BLE001 - the message is quarantined with it
                prepared.append(exc)
        return prepared

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
        with (
            ThreadPoolExecutor(1, thread_name_prefix="mailticket-parse") as parser,
            short_gil_switches(),
        ):
            current = next(chunks, None)
            with self.session_factory() as session:
                prepared = self.prepare(current) if current else None
                while current is not None:
                    following = next(chunks, None)
                    ahead = _Lookahead(parser, self.prepare, following)
                    # Each batch in the database's write turn (store.gate): on SQLite a batch
                    # that read first and wrote later failed "database is locked" whenever
                    # another process (the worker) committed in between.
                    with write_gate(engine_of(self.session_factory)):
                        outcomes = self.process_batch(
                            session, current, prepared=prepared, on_write=ahead.start
                        )
                        session.commit()
                    yield from outcomes
                    session.expunge_all()
                    prepared = ahead.result()
                    current = following

    # --- one batch -----------------------------------------------------------------------

    def _batch(
        self,
        session: Session,
        items: Sequence[Item],
        prepared: Sequence[Ready],
        on_write: Callable[[], None] | None,
        durable: bool,
    ) -> list[Outcome]:
        work = open_batch(session, block=len(items) * 2, durable=durable)
        try:
            self._prefetch(work, [r for r in prepared if not isinstance(r, Exception)])
            outcomes = [
                self._message(work, item, ready)
                for item, ready in zip(items, prepared, strict=True)
            ]
            if on_write is not None:
                on_write()
            work.finish()
            # SLA state of the tickets whose status or priority changed is recomputed on
            # the next sweep (one UPDATE for the batch, after its rows are written).
            sla_service.mark_touched_stale(work)
            return outcomes
        finally:
            work.close()

    def _message(self, work: Batch, item: Item, ready: Ready) -> Outcome:
        """One message inside its checkpoint: processed, or undone and quarantined."""
        mark = work.checkpoint()
        try:
            if isinstance(ready, Exception):
                raise ready
            outcome = self._handle(work, item, *ready)
            work.release(mark)
            return outcome
        except (OperationalError, CheckpointLost):
            raise
        except HeldByWorkflow as exc:
            work.rollback_to(mark, exc)
            log.info("message from %s held by a workflow: %s", item.source, exc)
            assert not isinstance(ready, Exception)
            return self._hold(work, item, None, reason=str(exc), message_id=ready[0].message_id)
        except IntegrityError as exc:
            work.rollback_to(mark, exc)
            # Another worker stored the same Message-ID between our check and our insert.
            if not isinstance(ready, Exception):
                work.forget_logged(ready[0].message_id)
                duplicate = self._duplicate(work, ready[0], item.source)
                if duplicate is not None:
                    return duplicate
            return self._hold(work, item, exc)
        except Exception as exc:
            work.rollback_to(mark, exc)
            log.warning("quarantining message from %s: %s", item.source, exc, exc_info=True)
            return self._hold(work, item, exc)

    def _prefetch(self, work: Batch, ready: list[Prepared]) -> None:
        """Everything the batch's messages could look up, in a handful of queries."""
        if not ready:
            return
        ids: list[str] = []
        numbers: set[str] = set()
        for email, classification, _ in ready:
            for _signal, mid in threading.candidates(email, classification):
                ids.append(mid)
                if number := canonical_ticket_number(mid):
                    numbers.add(number)
            if number := threading.subject_ticket_number(email.subject):
                numbers.add(number)
            # Outlook's conversation, the resolver's last resort (threading/threadindex.py).
            if conversation := conversation_ref(email.header("thread-index")):
                ids.append(conversation)
            if conversation := conversation_ref(email.header("thread-index")):
                ids.append(conversation)
        clock = self.clock()
        earliest = min(
            (min(received_at_of(email, None), clock) if self.backdate else clock)
            for email, _, _ in ready
        )
        # Whether each message was answered already (processed before): only asked for
        # when the workflows may answer at all.
        answers: list[str] = []
        if self.settings.email_workflows_enabled and self.settings.auto_reply_enabled:
            answers = auto_reply_keys(self.workflows, (email.message_id for email, _, _ in ready))
        # The customer rules for every sender, asked with the rest: tickets map without
        # another query.
        senders = customers.prefetch_lookup(work, (email.from_address for email, _, _ in ready))
        work.prefetch_mail(
            logged=(email.message_id for email, _, _ in ready),
            refs=ids,
            replies=(reply_recipient(email)[0] for email, _, _ in ready),
            since=as_utc(earliest) - self.settings.auto_reply_rate_window,
            outbox=answers,
            also=[senders] if senders is not None else [],
        )
        ticket_ids = {tid for mid in ids for tid in work.refs.get(mid, {})}
        work.prefetch_tickets(ids=ticket_ids, numbers=numbers)

    # --- stages --------------------------------------------------------------------------

    def _now(self, entry: EmailLog) -> datetime:
        now = self.clock()
        if self.backdate and entry.email_received_at is not None:
            return min(entry.email_received_at, now)
        return now

    def _handle(
        self,
        work: Batch,
        item: Item,
        email: ParsedEmail,
        classification: Classification,
        verdict: Verdict | None,
    ) -> Outcome:
        source = item.source
        duplicate = self._duplicate(work, email, source)
        if duplicate is not None:
            return duplicate
        suspect = self._suspect(verdict)
        raw_row = item.raw_message or quarantine.store_raw(
            work, item.raw, source, sha256=email.raw_sha256
        )
        found = threading.resolve(work, self.settings, email, classification, suspect=suspect)
        entry = work.add(self._log_row(email, classification, raw_row, item.received_at))
        work.note_logged(entry)
        # A reply to a closed ticket: reopen it, continue on its follow-up, or open one.
        routed = followups.route(work, self.settings, found, classification, self._now(entry))
        resolution = routed.resolution
        if verdict is not None:
            # The evidence beside the log row, written with it (which check said what).
            work.add(new_row(
                EmailSenderAuth, email_log_id=entry.id, status=verdict.status, suspect=suspect,
                from_domain=verdict.from_domain, evidence=verdict.evidence(),
            ))
        attachments = self._attachments(work, email, entry)

        ctx = ActionContext(
            work=work,
            settings=self.settings,
            email=email,
            classification=classification,
            thread=resolution.match,
            email_log=entry,
            raw_message_id=raw_row.id,
            now=self._now(entry),
            clock_now=self.clock(),
            suspect=suspect,
            joined=tuple(resolution.joined),
        )
        ran: list[str] = []
        if self.settings.email_workflows_enabled:
            executions = run_workflows(
                ctx, self.workflows, customer=lambda: self._customer_of(ctx)
            )
            ran = [ex.workflow_name for ex in executions if ex.status == "ok"]
        if ctx.quarantine is not None:
            raise HeldByWorkflow(ctx.quarantine)
        if not ctx.tickets and not ctx.ignored:
            if routed.followup_of is not None and (
                self.settings.email_unmatched_action is not UnmatchedAction.create_ticket
            ):
                # No workflow opened the follow-up: the mail stays on the old ticket's log.
                ctx.thread, resolution = found.match, found
            self._unmatched(ctx, resolution.joined)
        first = ctx.tickets[0] if ctx.tickets else None
        for attachment in attachments:
            work.assign(attachment, ticket_id=entry.ticket_id)
        if first is not None and resolution.also:
            others = [work.ticket(tid) for tid in resolution.also]
            tickets.merge_tickets(work, first, others, now=ctx.now)
        # Mail on a ticket that lives in an external backend too becomes a remote comment
        # (no backends configured: no lookup on the hot path), on each of its tickets. Our
        # own mail is not: an agent's copy there would be a second, public comment.
        if self.settings.backends_file is not None and classification.label != OWN_MAIL:
            targets: list[Ticket | None] = [*ctx.tickets] or [None]
            for target in targets:
                ctx.ticket = target
                mirror_followup(ctx)
            ctx.ticket = first

        match = resolution.match
        on_ticket = first.id if first is not None else entry.ticket_id
        # What the log row says of the message, set with one `assign`: a row the batch
        # holds alone takes it without a trip through the attribute events per column.
        decided: dict[str, str | None] = {}
        if match is not None and match.ticket_id == on_ticket:
            decided.update(matched_by=match.matched_by, matched_value=match.matched_value)
        elif ctx.linked:
            decided["matched_by"] = "workflow"
        decided["action"] = "created" if ctx.created else "linked" if ctx.linked else "logged"
        if ctx.created and routed.followup_of is not None:
            for made in ctx.tickets:
                made.followup_of_id = routed.followup_of.id
            decided.update(
                matched_by=followups.FOLLOWUP,
                matched_value=routed.followup_of.ticket_number,
                action="followup",
            )
        elif routed.reopens is not None and routed.reopens.status == "open":
            decided["action"] = "reopened"
        work.assign(entry, **decided)
        # A logged message (an out-of-office, say) may still sit on a ticket: name it.
        ticket = first or (work.ticket(on_ticket) if on_ticket else None)
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
            ticket_numbers=[t.ticket_number for t in ctx.tickets],
            suspect=suspect,
        )

    def _suspect(self, verdict: Verdict | None) -> bool:
        if verdict is None or self.sender_auth is None:
            return False
        suspect = is_suspect(verdict, self.sender_auth.policy)
        if suspect:
            metrics.count_sender_suspect()
        return suspect

    def _customer_of(self, ctx: ActionContext) -> tuple[int, str] | None:
        """The message's customer, for workflows limited to customers: its ticket's (a
        reply), else its sender's."""
        if ctx.thread is not None:
            owner = ctx.work.ticket(ctx.thread.ticket_id).customer_id
            if owner is not None:
                found = customers.customer(ctx.work, owner)
                return (found.id, found.key) if found is not None else None
        assert ctx.email is not None
        match = customers.detect(
            ctx.work, self.settings, [ctx.email.from_address], trusted=not ctx.suspect
        )[0].match
        return (match.customer_id, match.customer_key) if match is not None else None

    def _unmatched(self, ctx: ActionContext, joined: list[int]) -> None:
        """No workflow took the message. A reply still lands on its ticket's log (on each
        ticket its original belongs to); the configurable default may open a ticket for
        human mail."""
        assert ctx.classification is not None and ctx.email_log is not None
        human = not ctx.classification.is_automated
        if self.settings.email_unmatched_action is UnmatchedAction.create_ticket and human:
            self._default_create(ctx)
            return
        if ctx.thread is not None:
            ticket: Ticket = ctx.work.ticket(ctx.thread.ticket_id)
            ctx.email_log.ticket_id = ticket.id
            ctx.email_log.is_reply = True
            for other in joined:
                ctx.work.add(new_row(EmailTicket, email_log_id=ctx.email_log.id, ticket_id=other))

    def _default_create(self, ctx: ActionContext) -> None:
        assert ctx.email_log is not None and ctx.email is not None and ctx.classification
        spec = get_action("create_ticket")
        started = time.perf_counter()
        result = spec.func(ctx, spec.params_model())
        # Recorded like a workflow run, so "why did this ticket appear" is answerable.
        ctx.work.add(
            new_row(
                WorkflowExecution,
                workflow_name="(default) EMAIL_UNMATCHED_ACTION=create_ticket",
                email_log_id=ctx.email_log.id,
                email_message_id=ctx.email.message_id,
                classification=ctx.classification.label,
                confidence=ctx.classification.confidence,
                status="ok",
                steps=[{"action": "create_ticket", "status": "ok", "result": result}],
                result=result,
                error=None,
                duration_ms=(time.perf_counter() - started) * 1000,
            )
        )

    def _duplicate(self, work: Batch, email: ParsedEmail, source: str) -> Outcome | None:
        first = work.logged_as(email.message_id)
        if first is None:
            return None
        ticket_id = work.final(first.ticket_id) if first.ticket_id is not None else None
        return Outcome(
            source=source,
            message_id=email.message_id,
            action="duplicate",
            ticket_id=ticket_id,
            ticket_number=work.ticket(ticket_id).ticket_number if ticket_id else None,
            classification=first.classification,
        )

    def _hold(
        self,
        work: Batch,
        item: Item,
        exc: BaseException | None,
        *,
        reason: str | None = None,
        message_id: str | None = None,
    ) -> Outcome:
        raw_row = item.raw_message or quarantine.store_raw(work, item.raw, item.source)
        entry = quarantine.quarantine(
            work, raw_row, source=item.source,
            reason=reason if reason is not None else quarantine.describe(exc or Exception()),
            exc=exc, message_id=message_id,
        )
        return Outcome(
            source=item.source,
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
                # Who else was copied: the ticket's participants too (absent when nobody
                # was, keeping the seed's shape).
                **({"cc": ", ".join(email.cc)} if email.cc else {}),
                # Where the sender asked answers to go (a web form's mail, a shared
                # mailbox): a person's answer goes there (conversation.participants).
                **({"reply_to": ", ".join(email.reply_to)} if email.reply_to else {}),
                # Outlook's conversation index (a well-formed one): an agent's answer
                # continues it.
                **({"thread_index": email.header("thread-index")}
                   if conversation_ref(email.header("thread-index")) else {}),
            },
            direction="in",
            classification=classification.label,
            confidence=round(classification.confidence, 4),
            body_text=email.text,
            raw_message_id=raw_row.id,
        )

    def _attachments(self, work: Batch, email: ParsedEmail, entry: EmailLog) -> list[Attachment]:
        rows = [
            new_row(
                Attachment,
                email_log_id=entry.id,
                part_index=part.index,
                filename=part.filename[:500] or f"attachment-{part.index}",
                content_type=part.content_type[:255],
                size=part.size,
                sha256=part.sha256 or hashlib.sha256(part.payload).hexdigest(),
            )
            for part in email.attachments
        ]
        for row in rows:
            work.add(row)
        return rows


def _work_ahead(email: ParsedEmail, classification: Classification) -> None:
    """What the batch will need of the message alone, done by the thread that parsed it:
    the batch's thread holds the transaction (and its locks), and in `ingest_many` and the
    IMAP drain it is the slower of the two, so each millisecond moved here shortens the
    whole. Attachments are hashed (hashlib lets go of the GIL on large input), the arrival
    stamp read from the headers. The reply is split only for mail likely to become a
    comment (a human's answer to earlier mail or to a ticket number): it is the costliest
    text work of linking, and wasted on the rest."""
    email.attachments = [
        replace(part, sha256=hashlib.sha256(part.payload).hexdigest())
        for part in email.attachments
    ]
    # The log row's arrival time when the source gives none (date parsing, pure Python).
    email.received = _stamped_at(email)
    if not classification.is_automated and (
        email.in_reply_to or email.references or TICKET_NUMBER_RE.search(email.subject)
    ):
        email.reply = tickets.split_new_text(email)
