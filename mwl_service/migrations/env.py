"""Alembic environment for the worklist database (run through mwl_service.migrate).

``mwl_service.migrate`` passes an open connection in ``config.attributes``; the
``alembic`` command line may instead set ``sqlalchemy.url``. SQLite ALTERs go
through batch mode (copy and move), which needs foreign keys off while the table
is rebuilt: the caller turns them off before the transaction starts.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from mwl_service.schema import Base

config = context.config


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; upgrade a live database")

_connection = config.attributes.get("connection")
if _connection is not None:
    _run(_connection)
else:
    _engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with _engine.connect() as _conn:
        if _engine.dialect.name == "sqlite":
            _conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        _run(_conn)
