"""The engine every user of the worklist database opens: the sync, the DICOM server,
the CLI and the tests.

It sits above :mod:`mwl_service.migrate` (which creates and checks the schema) and
:mod:`mwl_service.database` (which only connects), so imports point one way.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from mwl_service import migrate
from mwl_service.database import bare_engine


def make_engine(
    url: str | None = None, *, create: bool = True, check_schema: bool = True
) -> Engine:
    """Engine for the worklist DB (:func:`mwl_service.database.get_db_url` picks it).

    ``create``: an empty database gets its tables at the newest schema revision.
    ``check_schema``: a database at an older revision (e.g. one written by the first
    release) is refused with :class:`mwl_service.migrate.SchemaOutOfDateError`,
    whose message names ``calpendo-mwl db upgrade``.
    """
    engine = bare_engine(url)
    try:
        if create:
            migrate.create_at_head(engine)
        if check_schema:
            migrate.require_current(engine)
    except Exception:
        engine.dispose()
        raise
    return engine
