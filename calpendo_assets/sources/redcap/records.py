"""Merged REDCap visits -> the records the shared mapping step reads (pure).

Each record keeps the visit's REDCap fields by their names (what ``field_mapping``
paths, ``_extract`` and ``_templates`` read) and gains the keys every source type gives
(docs/architecture.md, "The plugin seam"): ``id`` (``RECORD:EVENT:INSTRUMENT:INSTANCE``),
``dateRange.start`` (site-local wall time from the date and time fields),
``durationInMinutes``, ``resource.name``, ``status`` (``config.status_mapping``'s state)
and, for a cancelled visit, ``cancellationReason``; Pylantir's site and protocol when
configured. The export's window filter admits blank dates (to bring the participant
rows), and widens a date-and-time field to whole days: the exact window is applied
here. A visit whose date or scanner cannot be read is set aside (counted as present,
so its row is kept, never cancelled), named by its booking id, never by a value.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from calpendo_assets.core.records import set_dotted
from calpendo_assets.core.window import Window, site_local
from calpendo_assets.sources.redcap import pylantir
from calpendo_assets.sources.redcap.settings import CANCELLED, RedcapSettings

_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_TIME = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")


@dataclass
class WindowRecords:
    """The window's records, and visits set aside (booking id -> reason, no content)."""

    records: list[dict] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def visit_start(visit: Mapping[str, Any], settings: RedcapSettings
                ) -> tuple[dt.date, dt.datetime | None] | str:
    """(date, naive site-local start or None without a time), or why it is unreadable."""
    text = _text(visit.get(settings.date_field))
    date_part, _, rest = text.partition(" ")
    match = _DATE.fullmatch(date_part)
    if match is None:
        return f"config.date_field {settings.date_field!r} is not a date (YYYY-MM-DD)"
    try:
        day = dt.date(*map(int, match.groups()))
    except ValueError:
        return f"config.date_field {settings.date_field!r} is not a date (YYYY-MM-DD)"
    clock = _text(visit.get(settings.time_field)) if settings.time_field else rest.strip()
    found = _TIME.fullmatch(clock)
    if found is None:
        return day, None  # dated, no (readable) time: the mapping step says "no start time"
    hour, minute, second = (int(part or 0) for part in found.groups())
    if hour > 23 or minute > 59 or second > 59:
        return day, None
    return day, dt.datetime.combine(day, dt.time(hour, minute, second))


def in_window(day: dt.date, start: dt.datetime | None, window: Window) -> bool:
    """A visit with a start is in the window when its start is; one without, by its day."""
    first, end = site_local(window.start), site_local(window.end)
    if start is not None:
        return first <= start < end
    return first <= dt.datetime.combine(day, dt.time(0)) < end


def duration_of(visit: Mapping[str, Any], settings: RedcapSettings) -> int:
    value = _text(visit.get(settings.duration_field)) if settings.duration_field else ""
    return int(value) if value.isdigit() and int(value) > 0 else settings.duration_minutes


def visit_record(visit: Mapping[str, Any], settings: RedcapSettings, resource: str,
                 start: dt.datetime | None) -> dict:
    """One visit as a record (see the module's docstring)."""
    record: dict = dict(visit)  # the REDCap fields by name, and the booking id
    if start is not None:
        set_dotted(record, "dateRange.start", start.strftime("%Y-%m-%d %H:%M:%S"))
    record["durationInMinutes"] = duration_of(visit, settings)
    set_dotted(record, "resource.name", resource)
    raw = visit.get(settings.status_field) if settings.status_field else None
    state = settings.status_of(raw)
    record["status"], record["cancelled"] = state, state == CANCELLED
    if state == CANCELLED:
        record["cancellationReason"] = f"REDCap {settings.status_field} = {_text(raw)}"
    site = settings.site_setting()
    if site is not None:
        record[site[0]] = site[1]
    protocol = settings.protocol_name()
    if protocol is not None:
        record[pylantir.PROTOCOL_PATH] = protocol
    return record


def window_records(visits: list[Mapping[str, Any]], settings: RedcapSettings,
                   window: Window, default_resource: str) -> WindowRecords:
    """The visits dated in the window as records; unreadable ones set aside."""
    out = WindowRecords()
    for visit in visits:
        found = visit_start(visit, settings)
        if isinstance(found, str):
            out.skipped[visit["id"]] = found
            continue
        day, start = found
        if not in_window(day, start, window):
            continue
        resource = settings.resource or default_resource
        if settings.resource_field:
            resource = _text(visit.get(settings.resource_field))
            if not resource:
                out.skipped[visit["id"]] = (f"config.resource_field "
                                            f"{settings.resource_field!r} is blank")
                continue
        out.records.append(visit_record(visit, settings, resource, start))
    return out
