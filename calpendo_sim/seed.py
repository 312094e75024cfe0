"""Deterministic, realistic seed bookings for the simulator.

For a given seed and ``today`` the same bookings come out every time. Every booking
starts inside ``[today - past_days, today + days)`` between 07:00 and 19:00 local time,
so a client fetching that window sees all ``n`` (benchmarks rely on it). While a
resource still has free slots, bookings do not overlap; beyond that (large ``n``) they do.
The first few bookings are APPROVED 3T MRI scans today with well-formed titles, so a demo
always has a worklist to show. MR scans carry the participant's weight (kg) and height
(cm) as a site's custom MRIScan properties would; one in ten has neither (not
weighed yet), except today's first scans, which always have both.
"""

from __future__ import annotations

import datetime as dt
import random
from zoneinfo import ZoneInfo

from .catalogue import OPERATORS, PROJECTS, RESEARCHERS, RESOURCES, Directory
from .schema import TypeRegistry
from .booking import Booking

FIRST_ID = 1001
DAY_START_HOUR, DAY_END_HOUR = 7, 19

RESOURCE_WEIGHTS = {"3T MRI": 70, "EEG Lab": 18, "Mock Scanner": 12}
SLOT_MINUTES = {"3T MRI": 60, "EEG Lab": 120, "Mock Scanner": 60}
DURATIONS = {"3T MRI": (30, 45, 60, 60), "EEG Lab": (90, 120), "Mock Scanner": (30, 60)}
STATUS_WEIGHTS = {"APPROVED": 70, "REQUESTED": 10, "TENTATIVE": 7, "DENIED": 5, "CANCELLED": 8}
CANCELLATION_REASONS = ("participant ill", "participant did not attend", "scanner fault",
                        "rescheduled at participant's request", "consent withdrawn")

# Title shapes seen at real sites; "malformed" ones carry no participant ID at all.
TITLE_WEIGHTS = {"bare": 30, "named": 25, "study": 15, "dicom": 15, "malformed": 15}
# Today's first bookings, one per well-formed shape, non-ASCII included.
SHOWCASE_TITLES = ("SUB0001", "SUB0002 - Jane Doe", "SUB0003 - Müller^Jürgen",
                   "SUB0004 - 山田^太郎", "BRISK-005_Smith")
ASCII_NAMES = (("Jane", "Doe"), ("John", "Smith"), ("Maria", "Lopez"), ("Wei", "Chen"),
               ("Amara", "Okoye"), ("Liam", "Walsh"))
NON_ASCII_NAMES = (("Müller", "Jürgen"), ("山田", "太郎"), ("Ødegård", "Åse"),
                   ("García", "José"), ("김", "민준"), ("O'Brien", "Siobhán"))
MALFORMED_TITLES = ("", "TBD", "phantom QA", "call Bob re: consent")


def window_days(today: dt.date, days: int, past_days: int) -> list[dt.date]:
    """The dates bookings may start on: ``[today - past_days, today + days)``."""
    if days < 0 or past_days < 0 or days + past_days < 1:
        raise ValueError(f"empty booking window: days={days}, past_days={past_days}")
    return [today + dt.timedelta(days=offset) for offset in range(-past_days, days)]


class _SlotPlanner:
    """Hands out start times on a per-resource grid, free slots first, in random order."""

    def __init__(self, rng: random.Random, dates: list[dt.date]) -> None:
        self.rng, self.dates = rng, dates
        self.free: dict[str, list[dt.datetime]] = {}
        for resource, step in SLOT_MINUTES.items():
            slots = [self._grid(day, index, step) for day in dates
                     for index in range(self._per_day(step))]
            rng.shuffle(slots)
            self.free[resource] = slots

    @staticmethod
    def _per_day(step: int) -> int:
        return (DAY_END_HOUR - DAY_START_HOUR) * 60 // step

    @staticmethod
    def _grid(day: dt.date, index: int, step: int) -> dt.datetime:
        return dt.datetime.combine(day, dt.time(DAY_START_HOUR)) + dt.timedelta(minutes=index * step)

    def take(self, resource: str, day: dt.date | None = None) -> dt.datetime:
        """A free slot (on ``day`` if given); once none is left, any grid slot (overlaps)."""
        free = self.free[resource]
        for index in range(len(free) - 1, -1, -1):
            if day is None or free[index].date() == day:
                return free.pop(index)
        step = SLOT_MINUTES[resource]
        day = day or self.rng.choice(self.dates)
        return self._grid(day, self.rng.randrange(self._per_day(step)), step)


def _pick(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _title(rng: random.Random, shape: str, seq: int) -> str:
    """A booking title of the given shape for participant number ``seq``."""
    subject = f"SUB{seq:04d}"
    if shape == "bare":
        return subject
    if shape == "named":
        first, last = rng.choice(ASCII_NAMES)
        return f"{subject} - {first} {last}"
    if shape == "study":
        return f"BRISK-{seq:03d}_{rng.choice(ASCII_NAMES)[1]}"
    if shape == "dicom":
        family, given = rng.choice(NON_ASCII_NAMES)
        return f"{subject} - {family}^{given}"
    return rng.choice(MALFORMED_TITLES)


def _history(rng: random.Random, start: dt.datetime, today: dt.date) -> tuple[dt.datetime, ...]:
    """created/modified: some days before the booking (and before today), in office hours."""
    day = min(start.date(), today) - dt.timedelta(days=rng.randint(2, 30))
    created = dt.datetime.combine(day, dt.time(rng.randint(8, 17), rng.randrange(60),
                                               rng.randrange(60)))
    return created, created + dt.timedelta(minutes=rng.choice((0, 0, 5, 90, 600)))


def _record(rng: random.Random, index: int, start: dt.datetime, resource: str,
            showcase: bool, today: dt.date, directory: Directory) -> dict:
    """One booking's typed properties."""
    biskit_type = RESOURCES[resource]
    status = "APPROVED" if showcase else _pick(rng, STATUS_WEIGHTS)
    shape = "showcase" if showcase else _pick(rng, TITLE_WEIGHTS)
    title = SHOWCASE_TITLES[index] if showcase else _title(rng, shape, index + 1)
    project = None if shape == "malformed" and rng.random() < 0.5 else \
        rng.choice([p for p in PROJECTS if p != "QA"])
    if title == "phantom QA":
        project = "QA"
    owner = rng.choice(RESEARCHERS[:-1])
    created, modified = _history(rng, start, today)
    props = {
        "id": FIRST_ID + index, "biskitType": biskit_type, "title": title, "status": status,
        "dateRange": {"start": start,
                      "finish": start + dt.timedelta(minutes=rng.choice(DURATIONS[resource]))},
        "resource": directory.resource(resource), "project": directory.project(project),
        "created": created, "modified": modified,
        "owner": directory.person(owner),
        "booker": directory.person(owner if rng.random() < 0.8 else RESEARCHERS[-1]),
        "cancelled": status == "CANCELLED",
        "cancellationReason": rng.choice(CANCELLATION_REASONS) if status == "CANCELLED" else None,
    }
    if biskit_type == "MRIScan":
        props["Operator"] = directory.operator(None if rng.random() < 0.1 else rng.choice(OPERATORS))
    return props


def _body(seed: int, index: int, showcase: bool) -> dict:
    """Weight (kg, one decimal) and height (cm) of an MR scan's participant, as text.

    From a generator of its own per booking, so the other seed values stay what they
    were before bookings carried these."""
    rng = random.Random(f"body:{seed}:{index}")
    if not showcase and rng.random() < 0.1:
        return {"Weight": None, "Height": None}
    weight = min(max(rng.gauss(75, 14), 45), 140)
    height = min(max(rng.gauss(171, 9), 150), 200)
    return {"Weight": f"{weight:.1f}", "Height": f"{height:.0f}"}


def generate_records(n: int, seed: int, today: dt.date, days: int, past_days: int,
                     directory: Directory) -> list[dict]:
    """``n`` bookings as typed property dicts (the store's internal form)."""
    if n < 0:
        raise ValueError(f"number of bookings must be >= 0, got {n}")
    rng = random.Random(seed)
    dates = window_days(today, days, past_days)
    planner = _SlotPlanner(rng, dates)
    showcase = len(SHOWCASE_TITLES) if today in dates else 0
    records = []
    for index in range(n):
        is_showcase = index < showcase
        resource = "3T MRI" if is_showcase else _pick(rng, RESOURCE_WEIGHTS)
        start = planner.take(resource, today if is_showcase else None)
        record = _record(rng, index, start, resource, is_showcase, today, directory)
        if record["biskitType"] == "MRIScan":
            record.update(_body(seed, index, is_showcase))
        records.append(record)
    return records


def generate_bookings(n: int, seed: int = 42, today: dt.date | None = None, days: int = 7,
                      past_days: int = 1, timezone: str = "America/Edmonton") -> list[dict]:
    """The seed bookings as full biskits: ``{"id", "biskitType", "properties": {...}}``.

    ``today`` defaults to the current date in ``timezone``; times are site-local wall time.
    The properties are every property of the booking's own type (``Operator``,
    ``Weight`` and ``Height`` on MRIScan),
    with timestamps as Calpendo strings, exactly as the simulator serves them.
    """
    today = today or dt.datetime.now(ZoneInfo(timezone)).date()
    records = generate_records(n, seed, today, days, past_days, Directory())
    registry = TypeRegistry()
    return [booking.as_biskit(registry.fields(booking.biskit_type))
            for booking in map(Booking.build, records)]
