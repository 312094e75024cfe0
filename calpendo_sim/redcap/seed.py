"""Deterministic, realistic seed data for the REDCap simulator.

The same seed, counts, ``today`` and project shape give the same rows every time.
Participants carry fake but plausible identifiers, names (non-ASCII among them), dates of
birth, sex and weight in lb. Visits: the first three are scheduled today (a demo always
has a worklist); of the rest most fall in ``[today - past_days, today + days)``, some
long before or after that window, and a few have no date yet (planned, not booked).
Past visits are mostly completed, some no-shows; a few upcoming ones are cancelled.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Iterator

from .project import CANCELLED, COMPLETED, MRI_FORM, NO_SHOW, SCHEDULED, Project
from .store import RowKey, Values

NAMES = (("Jane", "Doe"), ("Liam", "Walsh"), ("Amara", "Okoye"), ("Wei", "Chen"),
         ("Jürgen", "Müller"), ("Åse", "Ødegård"), ("José", "García"), ("Siobhán", "O'Brien"),
         ("太郎", "山田"), ("민준", "김"), ("Noah", "Tremblay"), ("Maya", "Cardinal"),
         ("Ethan", "Nguyen"), ("Olivia", "Singh"), ("Lucas", "Martin"), ("Aroha", "Ngata"))
PROTOCOLS = ("BRAIN_MRI_3T", "BRAIN_MRI_3T", "BRAIN_MRI_3T_DTI", "BRAIN_MRI_3T_FMRI")
NOTES = ("", "", "", "", "Claustrophobic: mock scan first", "Braces: check the safety form",
         "Needs a parent in the room", "Left-handed")
SHOWCASE_TIMES = (dt.time(8, 0), dt.time(9, 30), dt.time(11, 0))
# Where a visit's date falls (after the showcase ones), by weight.
DATE_KINDS = {"window": 68, "before": 12, "after": 15, "undated": 5}


def window_days(today: dt.date, days: int, past_days: int) -> list[dt.date]:
    """The dates of the visit window ``[today - past_days, today + days)``."""
    if days < 0 or past_days < 0 or days + past_days < 1:
        raise ValueError(f"empty visit window: days={days}, past_days={past_days}")
    return [today + dt.timedelta(days=offset) for offset in range(-past_days, days)]


def participant(rng: random.Random, record: str, today: dt.date, family: int) -> Values:
    """The non-repeating participant instrument of one record."""
    first, last = rng.choice(NAMES)
    age_days = rng.randint(6 * 365, 17 * 365)
    dob = today - dt.timedelta(days=age_days)
    weight = 40 + (age_days / 365 - 6) * 10 + rng.uniform(-8, 12)
    return {
        "study_id": f"CPIP-{1000 + int(record) if record.isdigit() else record}",
        "family_id": f"FAM-{family:04d}", "first_name": first, "last_name": last,
        "dob": dob.isoformat(), "youth_dob_y": str(dob.year),
        "demo_sex": rng.choice(("1", "2", "1", "2", "3")), "mri_wt_lbs": f"{weight:.1f}",
        "participant_complete": "2",
    }


def _visit_day(rng: random.Random, index: int, today: dt.date, dates: list[dt.date],
               days: int, past_days: int) -> dt.date | None:
    if index < len(SHOWCASE_TIMES):
        return today
    kind = rng.choices(list(DATE_KINDS), weights=list(DATE_KINDS.values()))[0]
    if kind == "window":
        return rng.choice(dates)
    if kind == "before":
        return today - dt.timedelta(days=rng.randint(past_days + 1, past_days + 120))
    if kind == "after":
        return today + dt.timedelta(days=rng.randint(days + 1, days + 90))
    return None


def _status(rng: random.Random, day: dt.date | None, today: dt.date, showcase: bool) -> str:
    if showcase or day is None:
        return SCHEDULED
    if day < today:
        return rng.choices((COMPLETED, NO_SHOW, CANCELLED), weights=(85, 10, 5))[0]
    return rng.choices((SCHEDULED, CANCELLED), weights=(88, 12))[0]


def visit(rng: random.Random, index: int, today: dt.date, dates: list[dt.date],
          days: int, past_days: int) -> Values:
    """The mri instrument of one visit (``mri_instance`` is set by the caller)."""
    day = _visit_day(rng, index, today, dates, days, past_days)
    showcase = index < len(SHOWCASE_TIMES)
    time = (SHOWCASE_TIMES[index] if showcase
            else dt.time(rng.randint(7, 17), rng.choice((0, 30))))
    status = _status(rng, day, today, showcase)
    mock = not showcase and rng.random() < 0.1
    return {
        "mri_date": day.isoformat() if day else "",
        "mri_time": time.strftime("%H:%M") if day else "",
        "mri_scanner": "2" if mock else "1",
        "mri_protocol": "MOCK_SCAN" if mock else rng.choice(PROTOCOLS),
        "mri_status": status, "mri_notes": rng.choice(NOTES),
        "mri_complete": "2" if status == COMPLETED else "0",
    }


def visit_slots(project: Project, records: list[str], rng: random.Random,
                count: int) -> Iterator[RowKey]:
    """Where ``count`` visits go: repeating instances, else free record-events."""
    if project.repeating:
        instances: dict[tuple[str, str], int] = {}
        for _ in range(count):
            place = (rng.choice(records), rng.choice(project.visit_events))
            instances[place] = instances.get(place, 0) + 1
            yield RowKey(*place, MRI_FORM, instances[place])
        return
    free = [RowKey(r, e) for r in records for e in project.visit_events]
    if count > len(free):
        raise ValueError(f"{count} visits do not fit {len(records)} records of a "
                         f"non-repeating project ({len(free)} record-events at most)")
    yield from rng.sample(free, count)


def generate_rows(project: Project, records: int, visits: int, seed: int, today: dt.date,
                  days: int = 7, past_days: int = 1) -> list[tuple[RowKey, Values]]:
    """Seed rows: ``records`` participants (record names "1", "2", ...), ``visits`` visits."""
    if records < 0 or visits < 0:
        raise ValueError("records and visits must be >= 0")
    if visits and not records:
        raise ValueError("visits need at least one record")
    rng = random.Random(seed)
    dates = window_days(today, days, past_days)
    names = [str(number) for number in range(1, records + 1)]
    rows: list[tuple[RowKey, Values]] = []
    family = 0
    for name in names:
        family += rng.random() > 0.25  # about a quarter are siblings of the one before
        rows.append((RowKey(name, project.participant_event),
                     participant(rng, name, today, max(family, 1))))
    for index, key in enumerate(visit_slots(project, names, rng, visits)):
        values = visit(rng, index, today, dates, days, past_days)
        number = key.instance or project.visit_events.index(key.event) + 1
        rows.append((key, {**values, "mri_instance": str(number)}))
    return rows

