"""The row model: the worklist columns the sync writes and the content hash.

The columns come from `mwl_service.schema.WorklistItem` (never redefined here); a row
is a dict of those columns plus ``skip_reason``, a frame is a DataFrame of rows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from mwl_service.excluded import Excluded
from mwl_service.schema import WorklistItem


# Columns the database manages itself; the sync never supplies them from a booking.
DB_MANAGED_COLUMNS = ("id", "step_status_owner", "discontinued_at", "created_at", "updated_at")
# Every WorklistItem column the sync writes, in table order (taken from the schema,
# never redefined here).
SYNC_COLUMNS: tuple[str, ...] = tuple(
    c.name for c in WorklistItem.__table__.columns if c.name not in DB_MANAGED_COLUMNS
)
ROW_COLUMNS: tuple[str, ...] = SYNC_COLUMNS + ("skip_reason",)
# What the content hash covers: all content, not the hash itself nor bookkeeping.
HASH_COLUMNS: tuple[str, ...] = tuple(c for c in SYNC_COLUMNS if c != "content_hash")
COLUMN_LENGTH = {
    c.name: c.type.length for c in WorklistItem.__table__.columns if getattr(c.type, "length", None)
}


# json.dumps(values, separators=(",", ":"), ensure_ascii=False), its encoder made once.
_HASH_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)

VANISHED_REASON = "no longer in the source: deleted, moved out of the window, or status changed"


def canonical_value(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value is pd.NaT:
            return None
        if value.tzinfo is None:
            raise ValueError("content_hash needs aware datetimes")
        if value.tzinfo is not dt.UTC:
            value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None).isoformat() + "Z"
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return int(value) if value.is_integer() else value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return value
    if pd.isna(value):
        return None
    if hasattr(value, "item"):  # numpy scalar
        return canonical_value(value.item())
    return str(value)


def content_hash(row: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of the row's content columns.

    The JSON is the array of the `HASH_COLUMNS` values in schema order (every
    WorklistItem column the sync writes except the hash itself; not the timestamps
    the database manages, nor ``skip_reason``). Datetimes are hashed as UTC ISO
    text, NaN/NaT/NA as null, numpy scalars as Python numbers. Stable across runs
    and processes (no use of Python's randomised ``hash``).
    """
    get = row.get
    values = [get(c) for c in HASH_COLUMNS]
    for i, value in enumerate(values):
        if value.__class__ is not str and value is not None:
            values[i] = canonical_value(value)
    text = _HASH_JSON.encode(values)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class TransformResult:
    frame: pd.DataFrame
    excluded: dict[str, int] = field(default_factory=dict)  # reason -> count
    warnings: list[str] = field(default_factory=list)
    present_ids: set[str] = field(default_factory=set)  # in scope, incl. unpublishable
    # booking id -> what to tell the administrator about a booking that spans days
    multi_day: dict[str, str] = field(default_factory=dict)
    # Each booking fetched but not offered as work, and why (mwl_service.excluded).
    left_out: list[Excluded] = field(default_factory=list)

    @property
    def publishable(self) -> int:
        return int((self.frame["skip_reason"] == "").sum()) if len(self.frame) else 0


def to_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows, columns=list(ROW_COLUMNS))
    frame["scheduled_start_utc"] = pd.to_datetime(frame["scheduled_start_utc"], utc=True).astype(
        "datetime64[us, UTC]"
    )
    frame["duration_minutes"] = frame["duration_minutes"].astype("Int64")
    for col in ROW_COLUMNS:
        if col not in ("scheduled_start_utc", "duration_minutes"):
            frame[col] = frame[col].astype("str")
    return frame


def frame_records(frame: pd.DataFrame) -> list[dict]:
    """The frame's rows as plain Python dicts (aware datetimes, None for missing)."""
    if frame is None or len(frame) == 0:
        return []
    columns = {}
    for name in frame.columns:
        series = frame[name]
        if name == "scheduled_start_utc":
            values = [
                None if pd.isna(v) else (v.to_pydatetime() if isinstance(v, pd.Timestamp) else v)
                for v in series.tolist()
            ]
        elif name == "duration_minutes":
            values = [None if pd.isna(v) else int(v) for v in series.tolist()]
        else:
            values = [
                v if v.__class__ is str
                else "" if v is None or (isinstance(v, float) and math.isnan(v)) else v
                for v in series.tolist()
            ]
        columns[name] = values
    keys = list(columns)
    return [dict(zip(keys, row)) for row in zip(*columns.values())]


def present_booking_ids(frame: pd.DataFrame, skipped: Mapping[str, str]) -> set[str]:
    """Bookings that still exist in scope: every frame row (publishable or not) and
    those the fetch saw but could not read. Reconciliation never cancels these."""
    ids = set(frame["booking_id"].astype(str)) if len(frame) else set()
    return ids | {str(k) for k in skipped}
