"""Booking times: site-local wall time -> aware instants, DST-safe.

Sources give naive site-local times (Calpendo's ``"2025-02-12 10:00:00.0"``, a file's
``"2025-02-12 10:00"``), ISO 8601 with an offset, Calpendo literals or epoch
milliseconds; all become aware datetimes in the site zone.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any
from zoneinfo import ZoneInfo

from calpendo_assets.core.records import get_path

log = logging.getLogger(__name__)


def _localize(
    naive: dt.datetime, tz: ZoneInfo, what: str = "", notes: list[str] | None = None
) -> dt.datetime:
    """Site-local wall time -> aware datetime, DST-safe.

    Nonexistent (spring-forward gap): fold=0 reads it with the offset before the
    change, i.e. it is shifted forward by the gap (02:30 -> 03:30 MDT).
    Ambiguous (fall-back overlap): fold=0 is the first occurrence (daylight time).
    The warning goes to `notes` when given (a sync's warnings, shown in the run
    log), else to this module's logger.
    """
    aware = naive.replace(tzinfo=tz, fold=0)
    if aware.utcoffset() == naive.replace(tzinfo=tz, fold=1).utcoffset():
        return aware  # the common case: neither in a gap nor in an overlap
    normal = aware.astimezone(dt.UTC).astimezone(tz)
    stamp, used = naive.isoformat(sep=" "), normal.isoformat(sep=" ")
    if normal.replace(tzinfo=None) != naive:
        message = f"{what}{stamp} does not exist in {tz.key} (DST gap); using {used}"
    else:
        message = (
            f"{what}{stamp} is ambiguous in {tz.key} (DST overlap); "
            f"using the first occurrence {used}"
        )
    if notes is None:
        log.warning(message)
    else:
        notes.append(message)
    return normal


_EPOCH_MS = re.compile(r"-?\d{10,}")


def parse_calpendo_datetime(
    value: Any, tz: ZoneInfo, *, what: str = "", notes: list[str] | None = None
) -> dt.datetime:
    """A Calpendo date-time as an aware datetime in `tz`.

    Accepts ``"2025-02-12 10:00:00.0"``, ISO 8601 with or without an offset
    (``"2025-02-12T10:00:00"``, ``"...Z"``, ``"...-07:00"``), Calpendo literals
    (``"20140526T1200"``), epoch milliseconds (int, or a string of digits) and
    datetime objects. Naive values are site-local wall time (DST gap/overlap handled,
    with a warning into `notes`, or logged; `what` prefixes it). Raises ValueError for
    anything else.
    """
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, bool) or value is None:
        raise ValueError(f"not a date-time: {value!r}")
    elif isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"not a date-time: {value!r}")
        return dt.datetime.fromtimestamp(value / 1000, dt.UTC).astimezone(tz)
    elif isinstance(value, str):
        text = value.strip()
        if _EPOCH_MS.fullmatch(text):
            return dt.datetime.fromtimestamp(int(text) / 1000, dt.UTC).astimezone(tz)
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"not a date-time: {value!r}") from None
    else:
        raise ValueError(f"not a date-time: {value!r}")
    if parsed.tzinfo is None:
        return _localize(parsed, tz, what, notes)
    return parsed.astimezone(tz)


_FORMATTED_RANGE = re.compile(r"^\s*\[\s*([^,\]]+?)\s*,\s*([^\]]*?)\s*\]\s*$")


def _range_part(booking: Mapping, index: int) -> Any:
    name = get_path(booking, "formattedName")
    if isinstance(name, str):
        m = _FORMATTED_RANGE.match(name)
        if m and m.group(index + 1):
            return m.group(index + 1)
    return None


def _candidates(booking: Mapping, key: str, index: int) -> Iterator[Any]:
    yield get_path(booking, f"dateRange.{key}")
    yield _range_part(booking, index)  # read only when dateRange gave no date-time


def _booking_instant(
    booking: Mapping, tz: ZoneInfo, key: str, index: int, notes: list[str] | None = None
) -> dt.datetime | None:
    what = f"booking {booking.get('id')}: {key} "
    for value in _candidates(booking, key, index):
        if value is None or value == "":
            continue
        try:
            return parse_calpendo_datetime(value, tz, what=what, notes=notes)
        except (ValueError, OverflowError, OSError):
            continue
    return None


def booking_start(
    booking: Mapping, tz: ZoneInfo, notes: list[str] | None = None
) -> dt.datetime | None:
    """``dateRange.start``, else the first part of ``formattedName`` "[start, finish]"."""
    return _booking_instant(booking, tz, "start", 0, notes)


def booking_finish(
    booking: Mapping, tz: ZoneInfo, notes: list[str] | None = None
) -> dt.datetime | None:
    """``dateRange.finish``, else the second part of ``formattedName``."""
    return _booking_instant(booking, tz, "finish", 1, notes)


def is_multi_day(start: dt.datetime, finish: dt.datetime | None, tz: ZoneInfo) -> bool:
    """Whether a booking ends on a later site-local day than it starts (ending at the
    midnight after its start is still the same day)."""
    if finish is None or finish <= start:
        return False
    last_moment = (finish - dt.timedelta(microseconds=1)).astimezone(tz)
    return last_moment.date() > start.astimezone(tz).date()
