"""Schema versions of the worklist database (Alembic), and the upgrade in place.

The migrations live in ``mwl_service/migrations`` (shipped with the package).
Revision ``0001`` is the schema of the first release, whose databases carry no
version table; later revisions add to it. A new, empty database is created at the
newest revision directly (``create_all`` plus a version stamp); an existing one is
upgraded with ``calpendo-mwl db upgrade``, which calls :func:`upgrade`. The MWL
service and the sync refuse a database that is not at the newest revision
(:func:`require_current`, called by :func:`mwl_service.engine.make_engine`), naming
that command.

Public API::

    upgrade(url=None) -> (revision before, revision after)
    schema_state(engine) -> SchemaState(current, head, up_to_date)
    require_current(engine)              raises SchemaOutOfDateError
    create_at_head(engine)               a new database's tables, stamped at head
    lock_schema(conn, shared=False)      take turns with other processes (see below)

Any number of processes (mwl-service replicas, Dagster's webserver, daemon and run
workers, ``calpendo-mwl db upgrade``) may start together on one database: creating and
upgrading the schema take a lock in the database (:func:`lock_schema`) and look at the
schema only once they hold it, so one creates or upgrades and the others find it done.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from mwl_service import schema
from mwl_service.database import bare_engine, describe_db

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
RELEASE_1 = "0001"  # the first release's schema: tables but no alembic_version
# PostgreSQL advisory lock key of "the worklist schema" (any 64-bit number, fixed).
SCHEMA_LOCK_KEY = 0x6D776C5F736368

__all__ = [
    "RELEASE_1",
    "SchemaOutOfDateError",
    "SchemaState",
    "create_at_head",
    "lock_schema",
    "require_current",
    "schema_state",
    "upgrade",
]


class SchemaOutOfDateError(RuntimeError):
    """The worklist database is not at the schema revision this release needs."""


@dataclass(frozen=True)
class SchemaState:
    """Where a database stands: its revision (None: unversioned or empty), the
    newest revision, whether it is there, and whether it has worklist tables."""

    current: str | None
    head: str
    up_to_date: bool
    has_tables: bool = True


def _config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@functools.lru_cache(maxsize=1)
def _scripts() -> ScriptDirectory:
    # Reading the revision files costs ~40 ms; they do not change while a process runs.
    return ScriptDirectory.from_config(_config())


def head_revision() -> str:
    head = _scripts().get_current_head()
    assert head is not None
    return head


def lock_schema(conn: Connection, *, shared: bool = False) -> None:
    """Take the schema lock as the first statement of `conn`'s transaction; it is held
    until the transaction ends. PostgreSQL: an advisory transaction lock, exclusive to
    create or upgrade, shared to only read the revision (so a reader waits for an upgrade
    in progress instead of refusing the old schema). SQLite: BEGIN IMMEDIATE, the
    database's one write lock (WAL readers do not wait for it, so readers take it too)."""
    if conn.dialect.name == "postgresql":
        function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        conn.execute(text(f"SELECT {function}(:key)"), {"key": SCHEMA_LOCK_KEY})
    elif conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _state(conn: Connection) -> SchemaState:
    current = MigrationContext.configure(conn).get_current_revision()
    has_tables = inspect(conn).has_table(schema.WorklistItem.__tablename__)
    head = head_revision()
    return SchemaState(current, head, current == head and has_tables, has_tables)


def schema_state(engine: Engine) -> SchemaState:
    """The database's schema revision against the newest one."""
    with engine.begin() as conn:
        lock_schema(conn, shared=True)
        return _state(conn)


def _upgrade_command(engine: Engine) -> str:
    url = engine.url.render_as_string(hide_password=True)
    return f"calpendo-mwl db upgrade --db-url {url}"


def require_current(engine: Engine) -> None:
    """Raise :class:`SchemaOutOfDateError` unless the database is at the newest
    revision; the message names the upgrade command (password hidden)."""
    state = schema_state(engine)
    if state.up_to_date:
        return
    where = describe_db(engine)
    if not state.has_tables:
        problem = "has no worklist tables"
    elif state.current is None:
        problem = f"has the schema of the first release (revision {RELEASE_1}, unversioned)"
    else:
        problem = f"has schema revision {state.current}"
    raise SchemaOutOfDateError(
        f"The worklist database {where} {problem}; this release needs revision "
        f"{state.head}. Upgrade it in place (rows, MPPS instances and history are kept) "
        f"with: {_upgrade_command(engine)}"
    )


def create_at_head(engine: Engine) -> bool:
    """Create the tables of an empty database at the newest revision, in one
    transaction; False (nothing done) when it already has worklist tables or a
    version."""
    with engine.begin() as conn:
        lock_schema(conn)
        state = _state(conn)
        if state.has_tables or state.current is not None:
            return False
        schema.Base.metadata.create_all(conn)
        # What `alembic stamp head` does, without loading env.py and the revisions again.
        MigrationContext.configure(conn).stamp(_scripts(), "head")
    return True


def upgrade(url: str | None = None) -> tuple[str | None, str]:
    """Upgrade the database at ``url`` (default: ``WORKLIST_DB_URL``, else the
    default SQLite file) to the newest revision in place; returns the revision
    before (``RELEASE_1`` for a first-release database, None for an empty one) and
    after.

    An empty database gets every revision from the first; a first-release database
    (tables, no version table) is stamped at revision 0001 first.
    """
    engine = bare_engine(url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                # Batch ALTERs rebuild tables: referencing rows must not block the
                # drop of the old copy. Only outside a transaction, hence first.
                conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            lock_schema(conn)
            before = _state(conn)
            cfg = _config(conn)
            if before.current is None and before.has_tables:
                command.stamp(cfg, RELEASE_1)
            command.upgrade(cfg, "head")
            conn.commit()
            if engine.dialect.name == "sqlite":
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"foreign key check failed after the upgrade: {broken}")
            after = _state(conn)
        first_release = RELEASE_1 if before.has_tables else None
        return before.current or first_release, after.current or after.head
    finally:
        engine.dispose()
