"""Thread-safe record data of the simulated project, changeable while the server runs.

REDCap keeps one value per (record, event, repeat instrument, instance, field). Here a
row is one of those (record, event, instrument, instance) groups: ``instrument`` is
empty and ``instance`` None for a record-event's non-repeating row. As REDCap stores the
record id on every event a record has data in, each event of a record with any row
also has a non-repeating row holding at least the record id.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Callable, Iterable, NamedTuple

Values = dict[str, str]


class RowKey(NamedTuple):
    record: str
    event: str
    instrument: str = ""  # "" for the non-repeating row of a record-event
    instance: int | None = None  # None for the non-repeating row


def record_sort_key(record: str) -> tuple[int, int, str]:
    """REDCap lists numeric record names numerically, before the others."""
    return (0, int(record), "") if record.isdigit() else (1, 0, record)


class RecordStore:
    """Rows by key, plus each record's last modification time (``dateRangeBegin/End``)."""

    def __init__(self, record_id_field: str, event_order: Iterable[str],
                 clock: Callable[[], dt.datetime]) -> None:
        self.record_id_field = record_id_field
        self._event_rank = {name: rank for rank, name in enumerate(event_order)}
        self._clock = clock
        self._lock = threading.Lock()
        self._rows: dict[RowKey, Values] = {}
        self._modified: dict[str, dt.datetime] = {}

    def _sort_key(self, key: RowKey) -> tuple:
        return (record_sort_key(key.record), self._event_rank.get(key.event, 99),
                key.instrument, key.instance or 0)

    def put(self, key: RowKey, values: Values) -> None:
        """Create or change a row (values given replace the stored ones)."""
        if key.event not in self._event_rank:
            raise KeyError(f"no event {key.event!r} in this project")
        if (key.instrument == "") != (key.instance is None):
            raise ValueError("a repeating row needs an instrument and an instance, "
                             "the non-repeating row neither")
        with self._lock:
            base = RowKey(key.record, key.event)
            self._rows.setdefault(base, {})[self.record_id_field] = key.record
            self._rows.setdefault(key, {}).update({k: str(v) for k, v in values.items()})
            self._modified[key.record] = self._clock()

    def remove(self, key: RowKey) -> None:
        """Delete a repeating instance, or clear a non-repeating row to its record id."""
        with self._lock:
            if key not in self._rows:
                raise KeyError(f"no row {tuple(key)!r}")
            if key.instrument:
                del self._rows[key]
            else:
                self._rows[key] = {self.record_id_field: key.record}
            self._modified[key.record] = self._clock()

    def delete_record(self, record: str) -> None:
        with self._lock:
            keys = [key for key in self._rows if key.record == record]
            if not keys:
                raise KeyError(f"no record {record!r}")
            for key in keys:
                del self._rows[key]
            self._modified.pop(record, None)

    def get(self, key: RowKey) -> Values:
        with self._lock:
            if key not in self._rows:
                raise KeyError(f"no row {tuple(key)!r}")
            return dict(self._rows[key])

    def rows(self) -> list[tuple[RowKey, Values]]:
        """Every row, copied, in REDCap's export order: record, event, then the
        non-repeating row before the instances."""
        with self._lock:
            items = [(key, dict(values)) for key, values in self._rows.items()]
        return sorted(items, key=lambda item: self._sort_key(item[0]))

    def modified(self) -> dict[str, dt.datetime]:
        with self._lock:
            return dict(self._modified)

    def records(self) -> list[str]:
        with self._lock:
            names = {key.record for key in self._rows}
        return sorted(names, key=record_sort_key)

    def next_record(self) -> str:
        """REDCap's auto-numbering: one more than the highest numeric record name."""
        numbers = [int(name) for name in self.records() if name.isdigit()]
        return str(max(numbers, default=0) + 1)

    def next_instance(self, record: str, event: str, instrument: str) -> int:
        with self._lock:
            used = [key.instance or 0 for key in self._rows
                    if key[:3] == (record, event, instrument)]
        return max(used, default=0) + 1
