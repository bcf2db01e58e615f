"""`mailticket workflows validate|list`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mailticket.reading.classification import Classifier
from mailticket.runtime import checked_workflows
from mailticket.workflows.loader import WorkflowLoadError
from mailticket.workflows.schema import Workflow, WorkflowSet


def _describe(wf: Workflow, *, disabled: bool = False) -> list[str]:
    flags = [f"order {wf.order}", f"trigger {wf.trigger_text}"]
    if wf.confidence_threshold:
        flags.append(f"confidence >= {wf.confidence_threshold:g}")
    flags.append("stop" if wf.stop else "continue")
    if disabled:
        flags.append("DISABLED")
    steps = " → ".join(step.action for step in wf.steps)
    return [f"  {wf.name}  ({', '.join(flags)})", f"      {steps}   [{wf.file}:{wf.line}]"]


def _summary(workflows: WorkflowSet) -> str:
    lines = []
    for wf in workflows:
        lines += _describe(wf)
    for wf in workflows.disabled:
        lines += _describe(wf, disabled=True)
    head = f"{len(workflows)} enabled, {len(workflows.disabled)} disabled workflow(s)"
    return "\n".join([head, *lines])


def _validate(args: argparse.Namespace) -> int:
    from mailticket.cli import settings_or_exit

    # Checked as at start-up: the templates the steps name must be where the service looks
    # for them, and the labels they trigger on ones its classifier gives.
    settings = settings_or_exit()
    classifier = Classifier.from_settings(settings)
    failed = False
    for path in args.paths:
        try:
            workflows = checked_workflows(settings, classifier, path)
        except WorkflowLoadError as exc:
            failed = True
            for issue in exc.issues:
                print(issue)
            continue
        print(f"{path}: OK, {_summary(workflows)}")
    return 1 if failed else 0


def _list(args: argparse.Namespace) -> int:
    from mailticket.cli import settings_or_exit

    settings = settings_or_exit()
    try:
        workflows = checked_workflows(
            settings, Classifier.from_settings(settings), settings.workflows_path
        )
    except WorkflowLoadError as exc:
        print(f"mailticket: the active workflows do not load:\n{exc}", file=sys.stderr)
        return 1
    source = settings.workflows_path or "the shipped default (WORKFLOWS_PATH not set)"
    print(f"workflows from {source}")
    if not settings.email_workflows_enabled:
        print("note: EMAIL_WORKFLOWS_ENABLED=false, so none of these run")
    print(_summary(workflows))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("workflows", help="check and show the YAML workflows")
    wsub = p.add_subparsers(dest="workflows_command", metavar="SUBCOMMAND", required=True)
    v = wsub.add_parser("validate", help="check workflow files; print file:line: reason")
    v.add_argument("paths", nargs="+", type=Path, metavar="FILE_OR_DIR")
    v.set_defaults(func=_validate)
    ls = wsub.add_parser("list", help="show the workflows the service would run")
    ls.set_defaults(func=_list)
