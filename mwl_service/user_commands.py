"""``calpendo-mwl user add/list/disable/passwd``: mwl-api accounts from the command line.

Passwords come only from standard input (``--password-stdin``: the first line), never
from an argument (process lists and shell histories show those) and are never printed.
`add_parser` registers the commands on the ``calpendo-mwl`` parser.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from mwl_service import users
from mwl_service.database import db_url_origin
from mwl_service.engine import make_engine
from mwl_service.schema import ROLES, ApiUser

DB_URL_HELP = "worklist database URL (default: $WORKLIST_DB_URL, else ./var SQLite)"


def _password(stdin: TextIO) -> str:
    line = stdin.readline()
    return line[:-1] if line.endswith("\n") else line


def _engine(args: argparse.Namespace) -> Engine:
    return make_engine(args.db_url)  # a new database gets its tables, as mwl-service does


def _run(args: argparse.Namespace, action, out: TextIO, err: TextIO) -> int:
    try:
        engine = _engine(args)
    except Exception as exc:  # noqa: BLE001 - one line for the operator, no traceback
        print(f"error: {type(exc).__name__}: {exc} (database from {db_url_origin(args.db_url)})",
              file=err)
        return 1
    try:
        print(action(engine), file=out)
        return 0
    except users.UserError as exc:
        print(f"error: {exc}", file=err)
        return 1
    finally:
        engine.dispose()


def _needs_stdin(args: argparse.Namespace, err: TextIO) -> bool:
    if not args.password_stdin:
        print("error: give the password on standard input with --password-stdin "
              "(never as an argument)", file=err)
        return False
    return True


def _password_command(args, action, out, err, stdin) -> int:
    """Run ``action(engine, password)`` with the password from standard input."""
    out, err = out or sys.stdout, err or sys.stderr
    if not _needs_stdin(args, err):
        return 2
    password = _password(stdin or sys.stdin)
    return _run(args, lambda engine: action(engine, password), out, err)


def user_add(args, out: TextIO | None = None, err: TextIO | None = None, stdin=None) -> int:
    def add(engine: Engine, password: str) -> str:
        user = users.add_user(engine, args.name, args.role, password)
        return f"user {user.username!r} added with role {user.role}"

    return _password_command(args, add, out, err, stdin)


def user_passwd(args, out: TextIO | None = None, err: TextIO | None = None, stdin=None) -> int:
    def change(engine: Engine, password: str) -> str:
        user = users.set_password(engine, args.name, password)
        return f"user {user.username!r}: password changed; its tokens are revoked"

    return _password_command(args, change, out, err, stdin)


def user_disable(args, out: TextIO | None = None, err: TextIO | None = None) -> int:
    def disable(engine: Engine) -> str:
        user = users.disable_user(engine, args.name)
        return f"user {user.username!r} disabled; its tokens are revoked"

    return _run(args, disable, out or sys.stdout, err or sys.stderr)


def user_list(args, out: TextIO | None = None, err: TextIO | None = None) -> int:
    def listing(engine: Engine) -> str:
        rows = users.list_users(engine)
        if not rows:
            return "no users (add one: calpendo-mwl user add NAME --role ROLE --password-stdin)"
        lines = [f"{'USER':<24} {'ROLE':<6} {'STATE':<9} TOKENS"]
        for r in rows:
            state = "disabled" if r["disabled"] else "enabled"
            lines.append(f"{r['username']:<24} {r['role']:<6} {state:<9} {r['tokens']}")
        return "\n".join(lines)

    return _run(args, listing, out or sys.stdout, err or sys.stderr)


def api_accounts_line(engine: Engine) -> tuple[bool, str]:
    """For `calpendo-mwl check`: whether mwl-api has an enabled account, and a summary."""
    with engine.connect() as conn:
        counts = users.account_counts(conn)
        total = conn.scalar(select(func.count()).select_from(ApiUser))
    if not counts:
        return False, (f"no enabled mwl-api account ({total} in all); add one with: "
                       "calpendo-mwl user add NAME --role admin --password-stdin")
    parts = ", ".join(f"{counts[r]} {r}" for r in ROLES if r in counts)
    return True, f"enabled mwl-api accounts: {parts}"


def add_parser(commands) -> None:
    """Register ``user`` and its subcommands on the ``calpendo-mwl`` subparsers."""
    user = commands.add_parser("user", help="mwl-api accounts (roles: read, write, admin)")
    user_commands = user.add_subparsers(dest="user_command", required=True)
    add = user_commands.add_parser(
        "add", help="add an account; the password is read from standard input",
        description="Add an mwl-api account. read: see the worklist; write: also add, "
        "change and cancel manual items; admin: also list accounts over the API.",
    )
    add.add_argument("name", help="user name (letters, digits, _ . @ -; at most 64)")
    add.add_argument("--role", required=True, choices=ROLES, help="the account's role")
    passwd = user_commands.add_parser(
        "passwd", help="set a new password (from standard input); revokes the account's tokens"
    )
    passwd.add_argument("name", help="user name")
    for sub in (add, passwd):
        sub.add_argument(
            "--password-stdin", action="store_true",
            help=f"read the password from the first line of standard input (at least "
            f"{users.MIN_PASSWORD_LENGTH} characters); required",
        )
    add.set_defaults(run=user_add)
    passwd.set_defaults(run=user_passwd)
    disable = user_commands.add_parser(
        "disable", help="disable an account and revoke its tokens at once"
    )
    disable.add_argument("name", help="user name")
    disable.set_defaults(run=user_disable)
    listing = user_commands.add_parser("list", help="list accounts: role, state, live tokens")
    listing.set_defaults(run=user_list)
    for sub in (add, passwd, disable, listing):
        sub.add_argument("--db-url", help=DB_URL_HELP)
