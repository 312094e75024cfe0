"""C-FIND matching for the Modality Worklist Information Model (DICOM PS3.4 Annex K).

The matcher's entry point: a query identifier (a pydicom ``Dataset``) in, one
answer per matching worklist row out, streamed from the database. The parts live by
concern: :mod:`mwl_service.query` parses the identifier into SQL (keys, values,
conditions, the SELECT), :mod:`mwl_service.encode` turns a selected row into its
answer. Nothing here knows about associations or pynetdicom events; the server's
C-FIND handler only wires :func:`find_worklist` up (the same split as pynetdicom's
``apps/qrscp``, which keeps matching in ``db.py``).

Public API (the names the other modules define are re-exported here)::

    QueryError, WorklistQuery, ReturnKey, parse_query, build_select   (mwl_service.query)
    row_to_dataset, row_to_bytes                                      (mwl_service.encode)
    find_worklist(conn_or_engine, identifier, *, limit=None, implicit_vr=False,
                  calling_station=None, offer_past_days=None, now=None,
                  convert=row_to_dataset) -> Iterator[answer]
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

from pydicom import Dataset
from sqlalchemy import Select
from sqlalchemy.engine import Connection, Engine

from mwl_service.encode import row_to_bytes, row_to_dataset
from mwl_service.query import (
    ACTIVE_STATUSES,
    STATUS_IDENTIFIER_DOES_NOT_MATCH,
    STATUS_UNABLE_TO_PROCESS,
    QueryError,
    ReturnKey,
    WorklistQuery,
    build_select,
    parse_query,
)
from mwl_service.query import __all__ as QUERY_API

__all__ = [
    *QUERY_API,
    "RowConverter",
    "find_worklist",
    "row_to_bytes",
    "row_to_dataset",
]


# Turns one selected row into its answer: row_to_dataset (a Dataset) or row_to_bytes
# (the same answer encoded), called as convert(row, query, implicit_vr=...).
RowConverter = Callable[..., Any]


def find_worklist(
    conn_or_engine: Connection | Engine,
    identifier: Dataset,
    *,
    limit: int | None = None,
    implicit_vr: bool = False,
    calling_station: str | None = None,
    offer_past_days: float | None = None,
    now: dt.datetime | None = None,
    convert: RowConverter = row_to_dataset,
) -> Iterator[Any]:
    """Parse ``identifier`` (raising :class:`QueryError` at once), then lazily yield
    one answer per matching row, streaming rows from the database.

    ``convert`` makes the answers: :func:`row_to_dataset` (the default) yields
    response datasets, :func:`row_to_bytes` the same answers already encoded in
    Implicit (``implicit_vr``) or Explicit VR Little Endian.
    ``calling_station`` and ``offer_past_days`` (with ``now``) are as in
    :func:`~mwl_service.query.parse_query`. Given an Engine, a connection is opened
    for the iteration and closed when it ends (or when the iterator is closed); a
    Connection is used as it is.
    """
    query = parse_query(
        identifier, limit=limit, calling_station=calling_station,
        offer_past_days=offer_past_days, now=now,
    )
    return _iterate(conn_or_engine, query, implicit_vr, convert)


def _iterate(
    conn_or_engine: Connection | Engine,
    query: WorklistQuery,
    implicit_vr: bool,
    convert: RowConverter,
) -> Iterator[Any]:
    stmt = build_select(query).execution_options(stream_results=True, yield_per=500)
    if isinstance(conn_or_engine, Engine):
        with conn_or_engine.connect() as conn:
            yield from _rows(conn, stmt, query, implicit_vr, convert)
    else:
        yield from _rows(conn_or_engine, stmt, query, implicit_vr, convert)


def _rows(
    conn: Connection,
    stmt: Select[Any],
    query: WorklistQuery,
    implicit_vr: bool,
    convert: RowConverter,
) -> Iterator[Any]:
    result = conn.execute(stmt)
    try:
        for row in result:
            yield convert(row, query, implicit_vr=implicit_vr)
    finally:
        result.close()
