"""`calpendo-mwl`: the operator's command line.

``calpendo-mwl check`` verifies a set-up before Dagster runs it: the config file, the
credentials, one cheap request per enabled source, and the worklist database and its
schema. It prints a short report per source and exits 0 when all is well, 1 otherwise.
It never prints a secret: passwords are neither echoed nor part of any URL shown.

``calpendo-mwl db upgrade`` brings the worklist database schema to the current revision.

``calpendo-mwl user add/list/disable/passwd`` manage mwl-api's accounts
(`mwl_service.user_commands`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from calpendo_assets.config import CONFIG_ENV, config_path, enabled_sources, load_config
from calpendo_assets.core.credentials import PASSWORD_ENV, USERNAME_ENV, env_credentials
from calpendo_assets.core.errors import (
    AuthRefusedError,
    BadAnswerError,
    ConfigError,
    NotFoundError,
    SourceError,
    SourceUnavailableError,
)
from calpendo_assets.core.source import DataSource
from calpendo_assets.sources.registry import plugin_for
from mwl_service import user_commands
from mwl_service.migrate import schema_state, upgrade
from mwl_service.database import db_url_origin, get_db_url
from mwl_service.engine import make_engine

OK, FAIL = "ok", "FAIL"

# What a failed probe means to an operator, most specific first ({label}: the
# plugin's name for its server, e.g. Calpendo or REDCap).
_PROBE_FAILURES: tuple[tuple[type[SourceError], str], ...] = (
    (AuthRefusedError, "credentials refused"),
    (NotFoundError, "not a {label} server (or that type is missing)"),
    (BadAnswerError, "the answer is not {label} JSON"),
    (SourceUnavailableError, "unreachable"),
    (SourceError, "failed"),
)


class Report:
    """Lines of the check report; remembers whether anything failed."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.failed = False

    def line(self, what: str, status: str, detail: str = "", indent: int = 1) -> None:
        if status == FAIL:
            self.failed = True
        text = f"{'  ' * indent}{what}: {status}" + (f" - {detail}" if detail else "")
        print(text, file=self.out)

    def warning(self, text: str) -> None:
        print(f"  warning: {text}", file=self.out)

    def heading(self, text: str) -> None:
        print(text, file=self.out)


def _hide_password(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(an invalid database URL)"


def check_source(source: DataSource, report: Report) -> None:
    report.heading(f"data source {source.name!r} (type {source.type})")
    plugin = plugin_for(source.type)
    credentials = None
    if plugin.needs_credentials:
        try:
            credentials = env_credentials(source, os.environ)
        except ConfigError as exc:
            report.line("credentials", FAIL, str(exc).split(": ", 2)[-1])
            return
        report.line("credentials", OK, f"{USERNAME_ENV} and {PASSWORD_ENV} are set")
    for name in plugin.secret_env(source):
        if not (os.environ.get(name) or "").strip():
            report.line("token", FAIL, f"environment variable {name} is not set")
            return
        report.line("token", OK, f"{name} is set")
    try:
        detail = plugin.probe(source, credentials)
    except SourceError as exc:
        meaning = next(text for kind, text in _PROBE_FAILURES if isinstance(exc, kind))
        report.line("source", FAIL, f"{meaning.format(label=plugin.label)}: {exc}")
        return
    report.line("source", OK, detail)


def check_database(url: str | None, report: Report) -> None:
    """Reachable, and its schema at the current revision (mwl_service.migrate)."""
    db_url = get_db_url(url)
    report.heading(f"worklist database {_hide_password(db_url)} (from {db_url_origin(url)})")
    if db_url.startswith("sqlite") and "///" in db_url:
        path = db_url.split("///", 1)[1]
        if path and path != ":memory:" and not Path(path).exists():
            report.line("database", FAIL, f"{path} does not exist (run: calpendo-mwl db upgrade)")
            return
    try:
        engine = make_engine(db_url, create=False, check_schema=False)
    except (SQLAlchemyError, ValueError, ImportError) as exc:
        report.line("database", FAIL, f"cannot use the URL: {type(exc).__name__}")
        return
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        report.line("database", OK, "reachable")
        state = schema_state(engine)
        if state.up_to_date:
            report.line("schema", OK, f"at revision {state.head} (current)")
            accounts_ok, detail = user_commands.api_accounts_line(engine)
            if accounts_ok:
                report.line("api tables", OK, detail)
            else:  # the worklist works without mwl-api: a warning, not a failure
                report.warning(detail)
        else:
            report.line(
                "schema", FAIL,
                f"at revision {state.current or 'none'}, current is {state.head} "
                "(run: calpendo-mwl db upgrade)",
            )
    except SQLAlchemyError as exc:
        # The driver's text may quote the URL; show only the kind and its first line.
        first = str(exc.orig if getattr(exc, "orig", None) else exc).splitlines()[0]
        report.line("database", FAIL, f"unreachable: {type(exc).__name__}: {first[:200]}")
    finally:
        engine.dispose()


def check(args: argparse.Namespace, out: TextIO | None = None) -> int:
    report = Report(out or sys.stdout)
    file = config_path(args.config)
    try:
        sources = load_config(str(file))
    except ConfigError as exc:
        report.heading(f"config {file}")
        report.line("config", FAIL, str(exc))
        return 1
    enabled = enabled_sources(sources)
    report.heading(f"config {file}")
    report.line("config", OK, f"data sources: {len(sources)}, enabled: {len(enabled)}")
    for source in sources:
        for note in source.notes:
            report.warning(note)
    if not enabled:
        report.line("config", FAIL, "no data source is enabled")
    for source in enabled:
        check_source(source, report)
    if not args.no_db:
        check_database(args.db_url, report)
    report.heading("all checks passed" if not report.failed else "some checks FAILED")
    return 1 if report.failed else 0


def db_upgrade(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    shown = _hide_password(get_db_url(args.db_url))
    try:
        before, after = upgrade(args.db_url)
    except Exception as exc:  # noqa: BLE001 - the operator sees one line, not a traceback
        print(f"database {shown}: upgrade failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if before == after:
        print(f"database {shown}: schema already at revision {after}", file=out)
    else:
        origin = f"revision {before}" if before else "an empty database"
        print(f"database {shown}: schema upgraded from {origin} to {after}", file=out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="calpendo-mwl", description="Check and maintain a calpendo-mwl installation."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    checker = commands.add_parser(
        "check",
        help="verify the config, credentials, sources and database; exit 0 when all is well",
        description="Validates the config file, checks that the credentials are set, makes one "
        "cheap authenticated request per enabled data source, and checks that the worklist "
        "database is reachable and its schema current. Exits 0 when all is well, 1 otherwise. "
        "Never prints a password.",
    )
    checker.add_argument(
        "--config", help=f"the data-source config file (default: ${CONFIG_ENV}, else "
        "config/calpendo.json)",
    )
    checker.add_argument(
        "--db-url", help="worklist database URL (default: $WORKLIST_DB_URL, else ./var SQLite)"
    )
    checker.add_argument(
        "--no-db", action="store_true", help="skip the database check (e.g. on a host without it)"
    )
    checker.set_defaults(run=check)

    db = commands.add_parser("db", help="worklist database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    upgrader = db_commands.add_parser(
        "upgrade", help="upgrade the worklist schema to the current revision"
    )
    upgrader.add_argument(
        "--db-url", help="worklist database URL (default: $WORKLIST_DB_URL, else ./var SQLite)"
    )
    upgrader.set_defaults(run=db_upgrade)
    user_commands.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Library warnings (config notes) are in the report already; keep stderr for errors.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
