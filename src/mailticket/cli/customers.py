"""`mailticket customers list|sync`."""

from __future__ import annotations

import argparse

from mailticket.cli.common import CliError, open_runtime, settings_or_exit
from mailticket.customers.directory import list_customers
from mailticket.runtime import check_customer_names, sync_customers
from mailticket.yamlconfig import ConfigFileError


def _list(args: argparse.Namespace) -> int:
    runtime = open_runtime(settings_or_exit())
    try:
        with runtime.session_factory() as session:
            rows = list_customers(session, active=None if args.all else True)
        for c in rows:
            state = "" if c.active else "  (inactive)"
            print(f"{c.id:>6}  {c.key:<20} {c.name}{state}  [{c.source}]")
            if c.domains:
                print(f"        domains: {', '.join(c.domains)}")
            if c.contacts:
                print(f"        contacts: {', '.join(x.address for x in c.contacts)}")
        if not rows:
            print("no customers")
    finally:
        runtime.close()
    return 0


def _sync(args: argparse.Namespace) -> int:
    runtime = open_runtime(settings_or_exit())
    try:
        if runtime.customers is None:
            raise CliError(
                "CUSTOMERS_PATH is not set: customers are managed through the API", code=2
            )
        with runtime.session_factory() as session:
            report = sync_customers(runtime, session)
            issues = check_customer_names(runtime, session)
            if issues:
                session.rollback()
                raise ConfigFileError(issues)
            session.commit()
        assert report is not None
        for label, keys in (("created", report.created), ("updated", report.updated),
                            ("deactivated", report.deactivated),
                            ("unchanged", report.unchanged)):
            print(f"{label}: {len(keys)}" + (f" ({', '.join(keys)})" if keys else ""))
    finally:
        runtime.close()
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("customers", help="the customer directory (CUSTOMERS_PATH or the API)")
    s = p.add_subparsers(dest="customers_command", metavar="ACTION", required=True)
    ls = s.add_parser("list", help="customers with their domains and contacts")
    ls.add_argument("--all", action="store_true", help="inactive customers too")
    ls.set_defaults(func=_list)
    sync = s.add_parser("sync", help="make the tables an exact copy of CUSTOMERS_PATH")
    sync.set_defaults(func=_sync)
