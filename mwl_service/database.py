"""Where the worklist database is, and a connection pool to it.

The URL comes from the command line (``--db-url``), else ``WORKLIST_DB_URL``, else a
SQLite file under ``./var/``. :func:`bare_engine` only connects: no table is created
or checked (what :func:`mwl_service.engine.make_engine` adds, through
:mod:`mwl_service.migrate`).
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url

from mwl_service import dbfile

DEFAULT_DB_PATH = Path("var") / "worklist.db"


def get_db_url(url: str | None = None) -> str:
    """Explicit URL, else `WORKLIST_DB_URL`, else a SQLite file under ./var/."""
    if url:
        return url
    env = os.environ.get("WORKLIST_DB_URL", "").strip()
    if env:
        return env
    return f"sqlite:///{DEFAULT_DB_PATH}"


def db_url_origin(url: str | None = None) -> str:
    """Which setting chose the database: for error messages that say where to look."""
    if url:
        return "--db-url"
    if os.environ.get("WORKLIST_DB_URL", "").strip():
        return "WORKLIST_DB_URL"
    # Callers put this in parentheses: none of its own, so none nest.
    return f"the default, {DEFAULT_DB_PATH} under the current directory"


def describe_db(engine: Engine) -> str:
    """The database for logs: a SQLite file as its absolute path, else the URL
    without its password."""
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return f"SQLite file {Path(url.database).resolve()}"
    return url.render_as_string(hide_password=True)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cur = dbapi_connection.cursor()
    # WAL lets the MWL service read while a sync writes; the busy timeout makes a
    # writer wait for a lock instead of failing at once.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def bare_engine(url: str | None = None) -> Engine:
    """An engine for the worklist database at ``url`` (:func:`get_db_url`), its schema
    untouched. A new SQLite file is created private to its owner (:mod:`dbfile`)."""
    db_url = make_url(get_db_url(url))
    # hide_parameters: a database error's text must not quote row values (patient
    # names) into logs and Dagster's event storage.
    if db_url.get_backend_name() == "sqlite":
        path = db_url.database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            dbfile.create_private(path)
        engine = create_engine(db_url, connect_args={"timeout": 10}, hide_parameters=True)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(db_url, pool_pre_ping=True, hide_parameters=True)
