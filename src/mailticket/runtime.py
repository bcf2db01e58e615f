"""Everything a running mailticket needs, built once at start-up from the settings."""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from mailticket.customers.directory import SyncReport, sync_from_config
from mailticket.customers.loader import CustomersConfig, load_customers
from mailticket.customers.lookup import shared_for
from mailticket.customers.models import Customer
from mailticket.outbound.templates import templates_dir
from mailticket.pipeline import Pipeline
from mailticket.reading.classification import Classifier
from mailticket.settings import Settings
from mailticket.sla.config import SlaConfig, load_sla
from mailticket.sla.models import TicketSla
from mailticket.store.db import Liveness, make_engine, make_session_factory
from mailticket.store.models import Ticket
from mailticket.workflows.loader import load_workflows
from mailticket.workflows.schema import WorkflowSet
from mailticket.yamlconfig import ConfigFileError, ConfigIssue


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    classifier: Classifier
    workflows: WorkflowSet
    pipeline: Pipeline
    # CUSTOMERS_PATH and SLA_PATH, validated (None: not configured).
    customers: CustomersConfig | None = None
    sla: SlaConfig | None = None
    # The clock of time-triggered work (the SLA sweep); tests set it, nothing sleeps.
    clock: Callable[[], datetime] = field(default=_now)

    def reload_workflows(self) -> WorkflowSet:
        """Swap in a freshly validated workflow set; a bad file leaves the old one running."""
        fresh = checked_workflows(self.settings, self.classifier, self.settings.workflows_path)
        self.workflows = fresh
        self.pipeline.workflows = fresh
        return fresh

    def close(self) -> None:
        self.engine.dispose()


def checked_workflows(
    settings: Settings, classifier: Classifier, path: Path | None
) -> WorkflowSet:
    """The workflows under `path`, checked against what this service has: the mail templates
    of TEMPLATES_PATH (or the shipped set) and the labels its classifier gives."""
    return load_workflows(path, templates=templates_dir(settings), labels=classifier.labels())


def build_runtime(settings: Settings, engine: Engine | None = None) -> Runtime:
    """Raises WorkflowLoadError / ConfigFileError (file:line) for a bad configuration file."""
    engine = engine or make_engine(settings.database_url, liveness=Liveness.of(settings))
    session_factory = make_session_factory(engine)
    classifier = Classifier.from_settings(settings)
    workflows = checked_workflows(settings, classifier, settings.workflows_path)
    customers = (
        load_customers(settings.customers_path, shared_for(settings))
        if settings.customers_path is not None
        else None
    )
    sla = load_sla(settings.sla_path) if settings.sla_path is not None else None
    pipeline = Pipeline(settings, session_factory, classifier, workflows)
    return Runtime(
        settings, engine, session_factory, classifier, workflows, pipeline, customers, sla
    )


def sync_customers(runtime: Runtime, session: Session) -> SyncReport | None:
    """CUSTOMERS_PATH into the tables (YAML mode), in the caller's transaction."""
    if runtime.customers is None:
        return None
    return sync_from_config(session, runtime.customers, now=runtime.clock())


def check_customer_names(runtime: Runtime, session: Session) -> list[ConfigIssue]:
    """Customers the SLA file and the workflows name that the directory lacks."""
    known = session.execute(select(Customer.id, Customer.key)).all()
    keys = {key for _, key in known}
    ids = {cid for cid, _ in known}
    issues = runtime.sla.unknown_customers(keys) if runtime.sla is not None else []
    for name, wf in runtime.workflows.customer_names():
        if (name not in ids) if isinstance(name, int) else (name not in keys):
            issues.append(ConfigIssue(
                wf.file, wf.customer_line,
                f"workflow {wf.name!r}: unknown customer {name!r}",
            ))
    return issues


def settle_heap() -> None:
    """Once start-up has built its long-lived objects (settings, workflows, the public-suffix
    list, SQLAlchemy's mappers and caches): freeze them out of the cyclic collector, and let
    the young generation grow bigger between collections. Ingest allocates many short-lived
    objects; with the defaults the collector ran full passes over the whole start-up heap
    several times per few thousand messages, about a tenth of ingest CPU (bench_pipeline
    --mix support: 0.87 -> 0.78 ms/msg, full collections 7 -> 3 per 5,000 messages).
    Reference counting still frees nearly everything at once; only cycles wait longer."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)


def prepare_worker(runtime: Runtime) -> SyncReport | None:
    """Start-up in one transaction: the customer file synced into the tables, every customer
    the SLA file and the workflows name checked against them (ConfigFileError with file:line
    otherwise, and nothing is changed), and the SLA state of open tickets marked stale (the
    policies may have changed since the last run)."""
    with runtime.session_factory() as session:
        report = sync_customers(runtime, session)
        issues = check_customer_names(runtime, session)
        if issues:
            session.rollback()
            raise ConfigFileError(issues)
        if runtime.sla is not None:
            open_tickets = select(Ticket.id).where(
                Ticket.status.not_in(("resolved", "closed", "merged"))
            )
            session.execute(
                update(TicketSla).where(TicketSla.ticket_id.in_(open_tickets)).values(
                    computed_at=None
                )
            )
        session.commit()
    return report
