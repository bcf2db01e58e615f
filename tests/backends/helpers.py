"""Shared helpers of the backend tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from mailticket.backends.delivery import KIND, deliver_backend_ops
from mailticket.backends.models import RemoteLink
from mailticket.backends.registry import registry_for
from mailticket.runtime import Runtime
from mailticket.store.outbox import DrainReport, RetryPolicy
from mailticket.store.outbox_models import OutboxItem, utcnow

HERE = Path(__file__).parent
PUSH_WORKFLOW = HERE / "push_workflow.yaml"
# Many attempts, so outage tests can retry as often as they like.
POLICY = RetryPolicy(max_attempts=50)


def write_backends(path: Path, instances: dict[str, dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"instances": instances}))
    return path


def make_due(rt: Runtime) -> None:
    """Pretend the back-off passed: every waiting backend item is due now."""
    with rt.session_factory() as s, s.begin():
        s.execute(
            update(OutboxItem)
            .where(OutboxItem.kind == KIND, OutboxItem.status == "pending")
            .values(next_attempt_at=utcnow())
        )


async def drain(rt: Runtime, *, due: bool = True) -> DrainReport:
    if due:
        make_due(rt)
    registry = registry_for(rt.settings.backends_file)
    return await deliver_backend_ops(rt.session_factory, registry, rt.settings, policy=POLICY)


async def drain_until_quiet(rt: Runtime, rounds: int = 10) -> DrainReport:
    total = DrainReport()
    for _ in range(rounds):
        report = await drain(rt)
        total += report
        if report.total == 0:
            break
    return total


def items(s: Session, status: str | None = None) -> list[OutboxItem]:
    stmt = select(OutboxItem).where(OutboxItem.kind == KIND).order_by(OutboxItem.id)
    if status:
        stmt = stmt.where(OutboxItem.status == status)
    return list(s.scalars(stmt))


def link_of(s: Session, ticket_id: int, backend: str) -> RemoteLink:
    return s.scalars(
        select(RemoteLink).where(RemoteLink.ticket_id == ticket_id, RemoteLink.backend == backend)
        .order_by(RemoteLink.id.desc())
    ).first()  # type: ignore[return-value]


def count(s: Session, model: Any, *where: Any) -> int:
    return s.scalar(select(func.count()).select_from(model).where(*where)) or 0


def workflow_for(folder: Path, backend: str) -> Path:
    """A workflow file like push_workflow.yaml, pushing to another instance."""
    path = folder / f"push_{backend}.yaml"
    path.write_text(PUSH_WORKFLOW.read_text().replace("backend: jira", f"backend: {backend}"))
    return path
