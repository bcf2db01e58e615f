"""/api/v1/workflows: the active workflows, validation of a file, and reload."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from fastapi import APIRouter, Depends

from mailticket.api.auth import RuntimeDep, require
from mailticket.api.errors import Problem
from mailticket.api.schemas import (
    StepOut,
    WorkflowIssueOut,
    WorkflowList,
    WorkflowOut,
    WorkflowValidateIn,
    WorkflowValidation,
)
from mailticket.runtime import checked_workflows
from mailticket.workflows.loader import WorkflowLoadError
from mailticket.workflows.schema import Workflow, WorkflowSet

router = APIRouter(prefix="/api/v1/workflows", tags=["workflows"])


def _out(wf: Workflow) -> WorkflowOut:
    return WorkflowOut(
        name=wf.name, description=wf.description, triggers=list(wf.triggers),
        confidence_threshold=wf.confidence_threshold, order=wf.order, stop=wf.stop,
        enabled=wf.enabled, file=wf.file, line=wf.line,
        steps=[
            StepOut(
                action=s.action, params=s.params.model_dump(mode="json"), line=s.line,
                continue_on_error=s.continue_on_error,
            )
            for s in wf.steps
        ],
    )


def _listing(workflows: WorkflowSet) -> WorkflowList:
    return WorkflowList(
        sources=list(workflows.sources),
        workflows=[_out(wf) for wf in (*workflows.workflows, *workflows.disabled)],
    )


@router.get("", response_model=WorkflowList, dependencies=[Depends(require("read"))])
def list_workflows(runtime: RuntimeDep) -> WorkflowList:
    """The workflows the running service uses, in run order, then the disabled ones."""
    return _listing(runtime.workflows)


@router.post(
    "/validate", response_model=WorkflowValidation, dependencies=[Depends(require("read"))]
)
def validate(body: WorkflowValidateIn, runtime: RuntimeDep) -> WorkflowValidation:
    """Check one workflow file's text; problems come back as file:line: reason."""
    # The loader reads files (it reports per file); a private temporary one is the input.
    with tempfile.TemporaryDirectory(prefix="mailticket-validate-") as tmp:
        path = Path(tmp) / "workflows.yaml"
        path.write_text(body.yaml, encoding="utf-8")
        try:
            loaded = checked_workflows(runtime.settings, runtime.classifier, path)
        except WorkflowLoadError as exc:
            return _invalid([(i.line, i.reason) for i in exc.issues])
        except yaml.YAMLError as exc:
            # The loader builds its YAML reader outside its own error handling, so text
            # PyYAML refuses outright (control characters) surfaces here.
            line = body.yaml.count("\n", 0, getattr(exc, "position", 0) or 0) + 1
            return _invalid([(line, f"YAML error: {exc}".splitlines()[0])])
    return WorkflowValidation(valid=True, issues=[], workflows=[wf.name for wf in loaded])


def _invalid(issues: list[tuple[int, str]]) -> WorkflowValidation:
    return WorkflowValidation(
        valid=False,
        issues=[WorkflowIssueOut(file="workflows.yaml", line=ln, reason=r) for ln, r in issues],
        workflows=[],
    )


@router.post("/reload", response_model=WorkflowList, dependencies=[Depends(require("admin"))])
def reload(runtime: RuntimeDep) -> WorkflowList:
    """Load WORKFLOWS_PATH again; a file with problems is refused and the old set keeps running."""
    try:
        fresh = runtime.reload_workflows()
    except WorkflowLoadError as exc:
        raise Problem(
            422, "the workflow files have problems; the running set is unchanged",
            extra={"issues": [str(i) for i in exc.issues]},
        ) from None
    except yaml.YAMLError as exc:  # see validate(): text PyYAML refuses before parsing
        raise Problem(
            422, "the workflow files have problems; the running set is unchanged",
            extra={"issues": [f"YAML error: {exc}".splitlines()[0]]},
        ) from None
    return _listing(fresh)
