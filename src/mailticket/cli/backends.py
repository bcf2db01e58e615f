"""`mailticket backends list|test|refresh|deliver|poll`: external ticket systems."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from mailticket.backends.errors import AuthError, BackendError
from mailticket.backends.registry import (
    BackendConfigError,
    BackendRegistry,
    UnknownBackend,
    registry_for,
)
from mailticket.settings import Settings


def _registry(settings: Settings) -> BackendRegistry:
    try:
        return registry_for(settings.backends_file)
    except BackendConfigError as exc:
        print(f"mailticket: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _list(args: argparse.Namespace) -> int:
    from mailticket.cli.common import settings_or_exit

    settings = settings_or_exit()
    registry = _registry(settings)
    if not registry.instances:
        where = settings.backends_file or "BACKENDS_FILE (not set)"
        print(f"no backends configured in {where}")
        return 0
    for name in registry.names():
        inst = registry.get(name)
        caps = ",".join(sorted(c.value for c in inst.cls.capabilities)) or "-"
        print(f"{name:<20} {inst.kind:<12} {caps}")
    return 0


async def _with_backend(registry: BackendRegistry, name: str, what: str) -> Any:
    backend = registry.build(name)
    try:
        # Credentials first, for refresh too: a wrong password must fail even on a
        # backend that has no reference data to read.
        checked = await backend.test_connection()
        if what == "test":
            return checked
        return await backend.refresh_reference_data()
    finally:
        await backend.aclose()


def _show_reference(name: str, data: dict[str, dict[str, str]]) -> None:
    if not data:
        print(f"{name}: credentials ok; this backend has no reference data to refresh")
        return
    print(f"{name}: refreshed " + ", ".join(f"{k} {len(v)}" for k, v in sorted(data.items())))
    for kind, values in sorted(data.items()):
        shown = ", ".join(f"{label} ({key})" for key, label in list(values.items())[:20])
        more = f", … {len(values) - 20} more" if len(values) > 20 else ""
        print(f"  {kind}: {shown or '(none)'}{more}")


def _run(args: argparse.Namespace, what: str) -> int:
    from mailticket.cli.common import settings_or_exit

    registry = _registry(settings_or_exit())
    try:
        result = asyncio.run(_with_backend(registry, args.name, what))
    except UnknownBackend as exc:
        print(f"mailticket: {exc}", file=sys.stderr)
        return 2
    except AuthError as exc:
        print(f"mailticket: {args.name}: authentication failed: {exc}", file=sys.stderr)
        print("  check the credentials in BACKENDS_FILE (and the account's permissions)",
              file=sys.stderr)
        return 1
    except BackendError as exc:
        print(f"mailticket: {args.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if what == "test":
        print(f"{args.name}: ok, {result}")
    else:
        _show_reference(args.name, result)
    return 0


def _deliver(args: argparse.Namespace) -> int:
    from mailticket.backends.delivery import deliver_backend_ops
    from mailticket.cli.common import open_engine, settings_or_exit
    from mailticket.store.db import make_session_factory

    settings = settings_or_exit()
    registry = _registry(settings)
    engine = open_engine(settings)
    try:
        report = asyncio.run(deliver_backend_ops(
            make_session_factory(engine), registry, settings, target=args.name
        ))
    finally:
        engine.dispose()
    print(f"delivered {report.done}, retry later {report.retried}, dead {report.dead}, "
          f"unable {report.unable}")
    return 0 if report.dead == 0 and report.unable == 0 else 1


def _poll(args: argparse.Namespace) -> int:
    from mailticket.backends.sync import poll_backend
    from mailticket.cli.common import open_engine, settings_or_exit
    from mailticket.store.db import make_session_factory

    settings = settings_or_exit()
    registry = _registry(settings)
    engine = open_engine(settings)

    async def once() -> Any:
        backend = registry.build(args.name)
        try:
            return await poll_backend(make_session_factory(engine), settings, backend)
        finally:
            await backend.aclose()

    try:
        report = asyncio.run(once())
    except (UnknownBackend, BackendError) as exc:
        print(f"mailticket: {args.name}: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"{args.name}: {report.as_dict()}")
    return 0


def _relink(args: argparse.Namespace) -> int:
    from mailticket.backends import links
    from mailticket.backends.base import RemoteRef
    from mailticket.cli.common import open_engine, settings_or_exit
    from mailticket.store.db import make_session_factory
    from mailticket.ticketing import tickets

    settings = settings_or_exit()
    try:
        _registry(settings).get(args.name)
    except UnknownBackend as exc:
        print(f"mailticket: {exc}", file=sys.stderr)
        return 2
    engine = open_engine(settings)
    try:
        with make_session_factory(engine)() as session, session.begin():
            ticket = tickets.find_ticket(session, args.ticket)
            if ticket is None:
                print(f"mailticket: no ticket {args.ticket}", file=sys.stderr)
                return 1
            if links.by_remote_id(session, args.name, args.remote_id) is not None:
                print(f"mailticket: {args.name} {args.remote_id} is already linked",
                      file=sys.stderr)
                return 1
            ref = RemoteRef(args.name, args.remote_id, args.key, args.url)
            link = links.relink(session, ticket.id, ref)
            print(f"{ticket.ticket_number} linked to {args.name} {args.key or args.remote_id}"
                  f" (link {link.id})")
    finally:
        engine.dispose()
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("backends", help="external ticket systems (Jira, Zammad, ...)")
    s = p.add_subparsers(dest="backends_command", metavar="ACTION", required=True)
    s.add_parser("list", help="configured instances").set_defaults(func=_list)
    test = s.add_parser("test", help="check URL and credentials with one real call")
    test.add_argument("name")
    test.set_defaults(func=lambda a: _run(a, "test"))
    refresh = s.add_parser(
        "refresh", help="check credentials, re-read reference data (queues, groups, ...)")
    refresh.add_argument("name")
    refresh.set_defaults(func=lambda a: _run(a, "refresh"))
    deliver = s.add_parser("deliver", help="perform due backend operations once (cron/tests)")
    deliver.add_argument("name", nargs="?", help="only this instance")
    deliver.set_defaults(func=_deliver)
    poll = s.add_parser("poll", help="pull remote status changes of one instance once")
    poll.add_argument("name")
    poll.set_defaults(func=_poll)
    relink = s.add_parser("relink", help="point a ticket (e.g. with a broken link) at a remote one")
    relink.add_argument("ticket", help="TKT-… number or id")
    relink.add_argument("name", help="backend instance")
    relink.add_argument("remote_id", help="the vendor's stable id")
    relink.add_argument("--key", help="what humans see (OPS-12, ticket number)")
    relink.add_argument("--url")
    relink.set_defaults(func=_relink)
