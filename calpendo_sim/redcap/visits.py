"""What tests do to a running simulator's data: add participants and visits, move,
re-date, change, cancel and delete visits. Visits are keyed by `RowKey`: a repeating
mri instance, or (projects without repetition) the record-event row holding it."""

from __future__ import annotations

import datetime as dt
import random

from .project import CANCELLED, FIELDS, MRI_FORM, SCHEDULED, Project
from .seed import participant
from .store import RecordStore, RowKey, Values

MRI_FIELDS = tuple(f.name for f in FIELDS if f.form == MRI_FORM) + ("mri_complete",)
VISIT_DEFAULTS = {"mri_scanner": "1", "mri_protocol": "BRAIN_MRI_3T", "mri_status": SCHEDULED,
                  "mri_notes": "", "mri_complete": "0"}
Day = dt.date | str | None
Time = dt.time | str | None


def _text(value: dt.date | dt.time | str | None, pattern: str) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else value.strftime(pattern)


def booking_id(project: Project, key: RowKey) -> str:
    """``RECORD:EVENT:INSTRUMENT:INSTANCE``, parts that do not apply left empty."""
    event = key.event if project.longitudinal else ""
    instance = "" if key.instance is None else str(key.instance)
    return f"{key.record}:{event}:{key.instrument}:{instance}"


class VisitEditing:
    """Mixed into the simulator, which provides ``project``, ``store`` and ``today``."""

    project: Project
    store: RecordStore
    today: dt.date

    def add_participant(self, record: str | None = None, **fields: str) -> str:
        """A new record with generated participant data (``fields`` override it)."""
        record = record or self.store.next_record()
        seeded = participant(random.Random(record), record, self.today, 9000)
        self.store.put(RowKey(record, self.project.participant_event), {**seeded, **fields})
        return record

    def add_visit(self, record: str | None = None, date: Day = None, time: Time = dt.time(9),
                  event: str | None = None, **fields: str) -> RowKey:
        """Schedule a visit (a new record unless ``record`` is given) on ``date`` (default
        today) at ``time`` in the first visit event unless ``event`` is given."""
        record = record or self.add_participant()
        event = event or self.project.visit_events[0]
        if self.project.repeating:
            key = RowKey(record, event, MRI_FORM, self.store.next_instance(record, event, MRI_FORM))
            number = key.instance
        else:
            key = RowKey(record, event)
            number = self.project.visit_events.index(event) + 1
        values = {**VISIT_DEFAULTS, "mri_instance": str(number),
                  "mri_date": _text(date or self.today, "%Y-%m-%d"),
                  "mri_time": _text(time, "%H:%M"), **fields}
        self.store.put(key, values)
        return key

    def move_visit(self, key: RowKey, date: Day, time: Time = None) -> None:
        """Re-date a visit (``date`` None clears it), and re-time it when ``time`` is given."""
        values = {"mri_date": _text(date, "%Y-%m-%d")}
        if time is not None:
            values["mri_time"] = _text(time, "%H:%M")
        self.store.put(key, values)

    def update_visit(self, key: RowKey, **fields: str) -> None:
        self.store.put(key, fields)

    def cancel_visit(self, key: RowKey) -> None:
        self.store.put(key, {"mri_status": CANCELLED})

    def delete_visit(self, key: RowKey) -> None:
        """Delete a repeating instance, or blank the visit fields of a record-event."""
        if key.instrument:
            self.store.remove(key)
        else:
            self.store.get(key)  # KeyError for a visit that is not there
            self.store.put(key, dict.fromkeys(MRI_FIELDS, ""))

    def delete_record(self, record: str) -> None:
        self.store.delete_record(record)

    def row(self, key: RowKey) -> Values:
        return self.store.get(key)

    def visits(self) -> list[tuple[RowKey, Values]]:
        """Every row holding a visit date, in export order."""
        return [(key, values) for key, values in self.store.rows()
                if values.get("mri_date") and (key.instrument or not self.project.repeating)]

    def booking_id(self, key: RowKey) -> str:
        return booking_id(self.project, key)
