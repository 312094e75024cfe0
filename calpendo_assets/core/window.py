"""When a sync looks and when it runs: the booking window and the operation interval.

Both are days and hours in the site zone (``config.timezone``), computed from the
loaded `DataSource`, never stored in the config.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from calpendo_assets.core.source import DataSource


@dataclass(frozen=True)
class Window:
    """[start, end) in the site zone: local midnights, aware."""

    start: dt.datetime
    end: dt.datetime
    timezone: str

    def contains(self, instant: dt.datetime) -> bool:
        return self.start <= instant < self.end


def local_midnight(day: dt.date, tz: ZoneInfo) -> dt.datetime:
    """The aware start of `day` in `tz` (a nonexistent midnight is normalised)."""
    # Round-trip through UTC so a (rare) nonexistent midnight is normalised.
    naive = dt.datetime.combine(day, dt.time(0))
    return naive.replace(tzinfo=tz).astimezone(dt.UTC).astimezone(tz)


def booking_window(source: DataSource, now: dt.datetime) -> Window:
    """[today - past_days, today + future_days + 1 day) at local midnights in the site zone.

    Day arithmetic is on calendar dates, so a DST change inside the window does not
    shift the bounds off midnight. A naive `now` is taken as site-local wall time.
    """
    tz, settings = source.tz, source.settings
    local_now = now.replace(tzinfo=tz) if now.tzinfo is None else now.astimezone(tz)
    today = local_now.date()
    start = local_midnight(today - dt.timedelta(days=settings.past_days), tz)
    end = local_midnight(today + dt.timedelta(days=settings.future_days + 1), tz)
    return Window(start=start, end=end, timezone=settings.timezone)


def site_local(instant: dt.datetime) -> dt.datetime:
    """An aware window bound as site wall-clock time without a zone (what sources compare)."""
    return instant.replace(tzinfo=None)


def in_operation_interval(source: DataSource, local_time: dt.time) -> bool:
    """start <= t < end; start > end spans midnight; start == end (or none) means always."""
    interval = source.operation_interval
    if interval is None:
        return True
    start, end = dt.time(*interval.start_time), dt.time(*interval.end_time)
    t = local_time.replace(tzinfo=None)
    if start == end:
        return True
    if start < end:
        return start <= t < end
    return t >= start or t < end
