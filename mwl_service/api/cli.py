"""`mwl-api`: serve the worklist's REST API and page with uvicorn."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence

import uvicorn

# The one place mwl-api reads the data-source config (the default of --timezone, a zone
# checked as the config checks one); the app gets the zone passed in and never depends
# on calpendo_assets.
from calpendo_assets.config import config_path, enabled_sources, load_config
from calpendo_assets.core.errors import ConfigError
from calpendo_assets.core.types import time_zone
from mwl_service import database
from mwl_service.api.app import create_app
from mwl_service.api.middleware import DEFAULT_MAX_BODY
from mwl_service.api.settings import ApiSettings
from mwl_service.cli import LOG_LEVELS, _int_at_least, _port, checked_by
from mwl_service.sessions import DEFAULT_FAILURE_WINDOW, DEFAULT_MAX_FAILURES, DEFAULT_TOKEN_TTL

LOG = logging.getLogger("mwl_service.api.cli")
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000

DESCRIPTION = """\
The worklist's HTTP face: a REST API under /api/v1 (OpenAPI docs at /docs) and a
page at / for technologists and administrators. It shares only the worklist
database with mwl-service and Dagster; run several behind a load balancer if you
like (accounts, tokens and the login rate limit live in the database).
"""

EPILOG = f"""\
environment:
  WORKLIST_DB_URL      database URL when --db-url is not given
                       (fallback: sqlite:///{database.DEFAULT_DB_PATH})
  CALPENDO_MWL_CONFIG  data-source config whose first enabled source's timezone is
                       the default of --timezone

accounts:
  There is no built-in account. Add one with
    calpendo-mwl user add NAME --role admin|write|read --password-stdin
  POST /api/v1/login gives a bearer token valid for --token-ttl; disabling the
  account (calpendo-mwl user disable NAME) revokes its tokens at once. After
  {DEFAULT_MAX_FAILURES} refused logins from one address within
  {int(DEFAULT_FAILURE_WINDOW.total_seconds())} s that address gets 429 until the window passes.

security and logging:
  Request bodies over {DEFAULT_MAX_BODY // 1024} KiB get 413. CORS is off unless --cors-origin is
  given. The access log names the route template (e.g. /api/v1/worklist/{{accession_number}}),
  status and duration, never a query string: no patient name or ID is logged.
  Errors are JSON bodies without stack traces. X-Forwarded-For and
  X-Forwarded-Proto are ignored unless the request comes from an address given
  to --forwarded-allow-ips (a reverse proxy), so no client can pick the address
  the login limit counts.

It refuses to start on a worklist database whose schema is out of date (run
calpendo-mwl db upgrade). SIGTERM or SIGINT stops it gracefully (open requests
finish) and the process exits with status 0.
"""


_at_least_a_minute = _int_at_least(60)


def _seconds(text: str) -> dt.timedelta:
    return dt.timedelta(seconds=_at_least_a_minute(text))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mwl-api", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--host", default=DEFAULT_HOST,
        help=f"address to listen on (default: {DEFAULT_HOST}; 0.0.0.0 for all IPv4 interfaces)")
    add("--port", type=_port, default=DEFAULT_PORT, help=f"TCP port (default: {DEFAULT_PORT})")
    add("--db-url", metavar="URL", help="SQLAlchemy URL of the worklist database (default: "
        f"$WORKLIST_DB_URL, else sqlite:///{database.DEFAULT_DB_PATH}); missing tables are created")
    add("--timezone", type=checked_by(time_zone), metavar="ZONE", help="the site's IANA zone: "
        "which day is today, and how a time without an offset is read (default: the timezone "
        "of the first enabled data source in $CALPENDO_MWL_CONFIG)")
    add("--tls-cert", metavar="PEM", help="server certificate (PEM); serves HTTPS")
    add("--tls-key", metavar="PEM", help="private key of --tls-cert (PEM)")
    add("--token-ttl", type=_seconds, default=DEFAULT_TOKEN_TTL, metavar="SECONDS",
        help=f"lifetime of a login's token, at least 60 (default: "
        f"{int(DEFAULT_TOKEN_TTL.total_seconds())})")
    add("--cors-origin", action="append", default=[], metavar="ORIGIN",
        help="allow browser scripts from this origin (e.g. https://ris.example.org); repeat "
        "for more. Default: no CORS")
    add("--forwarded-allow-ips", metavar="IPS", default="",
        help="comma-separated addresses of reverse proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto are trusted, e.g. 127.0.0.1 (default: none, the headers are "
        "ignored)")
    add("--log-level", type=str.upper, choices=LOG_LEVELS, default="INFO",
        help="logging level (default: INFO)")
    return parser


def configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(getattr(logging, level))
    logging.getLogger("alembic").setLevel(logging.WARNING)


def config_timezone(env: Mapping[str, str] = os.environ) -> str:
    """The zone of the first enabled data source of the config file; ConfigError
    (naming the file) when there is none."""
    path = config_path(None, env)
    sources = enabled_sources(load_config(str(path), env))
    if not sources:
        raise ConfigError(f"{path}: no enabled data source to take the site time zone from")
    return sources[0].settings.timezone


def settings_from_args(args: argparse.Namespace) -> ApiSettings:
    """ConfigError when no zone is given and the config cannot tell one."""
    return ApiSettings(
        timezone=args.timezone or config_timezone(), token_ttl=args.token_ttl,
        cors_origins=tuple(args.cors_origin), max_login_failures=DEFAULT_MAX_FAILURES,
    )


def _stopped(signum: int, _frame: object) -> None:
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then raises the signal again
    # for the handler it found: this one, so the process ends with status 0.
    LOG.info("Received %s: mwl-api stopped", signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    configure_logging(args.log_level)
    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        parser.error(f"cannot tell the site time zone ({exc}); give --timezone")
    try:
        app = create_app(database.get_db_url(args.db_url), settings)
    except Exception as exc:  # noqa: BLE001 - out-of-date schema, bad URL, unreachable ...
        LOG.error("Cannot start mwl-api: %s: %s (database from %s)", type(exc).__name__, exc,
                  database.db_url_origin(args.db_url))
        return 1
    LOG.info("mwl-api on %s://%s:%d (site zone %s, database %s)",
             "https" if args.tls_cert else "http", args.host, args.port, settings.timezone,
             database.describe_db(app.state.engine))
    signal.signal(signal.SIGTERM, _stopped)
    signal.signal(signal.SIGINT, _stopped)
    uvicorn.run(app, **uvicorn_options(args))
    return 0


def uvicorn_options(args: argparse.Namespace) -> dict[str, object]:
    """uvicorn's settings from the command line. uvicorn trusts X-Forwarded-* from
    127.0.0.1 by default: a local client could then name any address and escape the
    per-address login limit, so proxy headers are read only from --forwarded-allow-ips."""
    proxies = args.forwarded_allow_ips.strip()
    return {"host": args.host, "port": args.port, "ssl_certfile": args.tls_cert,
            "ssl_keyfile": args.tls_key, "access_log": False, "log_config": None,
            "log_level": args.log_level.lower(), "server_header": False,
            "proxy_headers": bool(proxies), "forwarded_allow_ips": proxies or None}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
