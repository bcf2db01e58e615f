"""`mailticket customers list|sync|add|remove`."""

from __future__ import annotations

import argparse

from pydantic import ValidationError

from mailticket.cli.common import CliError, open_runtime, settings_or_exit
from mailticket.customers import directory
from mailticket.customers.directory import CustomersMode, list_customers
from mailticket.customers.schema import CustomerSpec
from mailticket.runtime import Runtime, check_customer_names, sync_customers
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


def _add(args: argparse.Namespace) -> int:
    from mailticket.customers.lookup import shared_for

    runtime = open_runtime(settings_or_exit())
    try:
        _database_mode(runtime)
        try:
            spec = CustomerSpec.model_validate({
                "key": args.key, "name": args.name, "id": args.id,
                "domains": args.domain, "contacts": args.contact,
            })
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise CliError(f"the customer is not valid: {problems}", code=2) from None
        with runtime.session_factory() as session:
            try:
                view = directory.create_customer(
                    session, spec, mode=CustomersMode.db, shared=shared_for(runtime.settings),
                    now=runtime.clock(),
                )
            except (directory.CustomerInvalid, directory.CustomerConflict) as exc:
                raise CliError(str(exc), code=2) from None
            session.commit()
        print(f"customer {view.id} {view.key!r} created")
    finally:
        runtime.close()
    return 0


def _remove(args: argparse.Namespace) -> int:
    from mailticket.api.customers import outside_uses

    runtime = open_runtime(settings_or_exit())
    try:
        _database_mode(runtime)
        with runtime.session_factory() as session:
            ref = str(args.customer)
            try:
                view = (directory.get_customer(session, int(ref))
                        if ref.isascii() and ref.isdigit() and len(ref) <= 10
                        else directory.get_customer_by_key(session, ref))
                directory.delete_customer(
                    session, view.id, mode=CustomersMode.db,
                    also_used_by=outside_uses(session, runtime, view),
                )
            except directory.CustomerNotFound as exc:
                raise CliError(str(exc)) from None
            except directory.CustomerConflict as exc:
                raise CliError(str(exc)) from None
            session.commit()
        print(f"customer {view.id} {view.key!r} removed")
    finally:
        runtime.close()
    return 0


def _database_mode(runtime: Runtime) -> None:
    if runtime.customers is not None:
        raise CliError(
            f"customers are managed in CUSTOMERS_PATH ({runtime.customers.source}); "
            "change the file and run `mailticket customers sync`", code=2,
        )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("customers", help="the customer directory (CUSTOMERS_PATH or the API)")
    s = p.add_subparsers(dest="customers_command", metavar="ACTION", required=True)
    ls = s.add_parser("list", help="customers with their domains and contacts")
    ls.add_argument("--all", action="store_true", help="inactive customers too")
    ls.set_defaults(func=_list)
    sync = s.add_parser("sync", help="make the tables an exact copy of CUSTOMERS_PATH")
    sync.set_defaults(func=_sync)
    add = s.add_parser("add", help="add a customer (without CUSTOMERS_PATH), as the API's POST")
    add.add_argument("key", help="stable name: workflows and SLA policies use it")
    add.add_argument("--name", required=True)
    add.add_argument("--id", type=int, help="pin the numeric id tickets carry")
    add.add_argument("--domain", action="append", default=[], help="repeatable")
    add.add_argument("--contact", action="append", default=[], help="an address; repeatable")
    add.set_defaults(func=_add)
    remove = s.add_parser(
        "remove", help="delete a customer nothing refers to (without CUSTOMERS_PATH)"
    )
    remove.add_argument("customer", help="its key or id")
    remove.set_defaults(func=_remove)
