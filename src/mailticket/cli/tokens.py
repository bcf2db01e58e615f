"""`mailticket tokens create|list|revoke`: API bearer tokens."""

from __future__ import annotations

import argparse
import sys

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from mailticket.api import tokens
from mailticket.cli.common import open_engine, settings_or_exit
from mailticket.store.db import make_session_factory


def _session_factory() -> tuple[Engine, sessionmaker[Session]]:
    engine = open_engine(settings_or_exit())
    return engine, make_session_factory(engine)


def _create(args: argparse.Namespace) -> int:
    engine, factory = _session_factory()
    try:
        with factory() as session:
            try:
                row, plain = tokens.create_token(
                    session, name=args.name, scope=args.scope, customer=args.customer
                )
            except tokens.TokenError as exc:
                print(f"mailticket: {exc}", file=sys.stderr)
                return 2
            session.commit()
            # The only time the token is ever shown: only its hash is stored.
            print(plain)
            print(
                f"token {row.id} {row.name!r} scope {row.scope}"
                + (f" customer {row.customer_id}" if row.customer_id is not None else "")
                + ": store it now, "
                "it is not shown again",
                file=sys.stderr,
            )
    finally:
        engine.dispose()
    return 0


def _list(args: argparse.Namespace) -> int:
    engine, factory = _session_factory()
    try:
        with factory() as session:
            listed = tokens.list_with_states(session)
            # The state a use meets: a token of a deactivated customer is refused, so it is
            # listed as suspended, never as active (the column widens to keep rows aligned).
            width = max([8, *(len(state) for _, state in listed)])
            for row, state in listed:
                used = row.last_used_at.isoformat() if row.last_used_at else "never"
                who = f"customer {row.customer_id}" if row.customer_id is not None else "all"
                print(
                    f"{row.id:>5} {row.scope:<6} {state:<{width}} {who:<16} last used {used:<32} "
                    f"{row.name}"
                )
    finally:
        engine.dispose()
    return 0


def _revoke(args: argparse.Namespace) -> int:
    engine, factory = _session_factory()
    try:
        with factory() as session:
            try:
                row = tokens.revoke_token(session, args.id)
            except tokens.TokenError as exc:
                print(f"mailticket: {exc}", file=sys.stderr)
                return 1
            session.commit()
            print(f"token {row.id} {row.name!r} revoked")
    finally:
        engine.dispose()
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("tokens", help="API bearer tokens (stored hashed; shown once)")
    s = p.add_subparsers(dest="tokens_command", metavar="ACTION", required=True)
    create = s.add_parser("create", help="create a token and print it once")
    create.add_argument("--scope", choices=tokens.SCOPES, required=True)
    create.add_argument("--name", required=True, help="who or what uses it")
    create.add_argument(
        "--customer", metavar="KEY_OR_ID",
        help="scope the token to one customer: it sees that customer's tickets and mail "
        "only (read or write scope)",
    )
    create.set_defaults(func=_create)
    ls = s.add_parser(
        "list",
        help="tokens, their scope, state (active, revoked, suspended: customer "
        "deactivated) and last use (never the token)",
    )
    ls.set_defaults(func=_list)
    revoke = s.add_parser("revoke", help="revoke a token by id; it stops working at once")
    revoke.add_argument("id", type=int)
    revoke.set_defaults(func=_revoke)
