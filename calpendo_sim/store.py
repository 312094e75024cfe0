"""The simulator's booking store: typed records, thread-safe mutations, cheap snapshots.

Each booking is kept three ways: ``props`` with Python values (datetimes, ints) that
queries compare against, ``rendered``, the JSON-ready form with Calpendo's timestamp
strings, and ``texts``, the JSON text of every property path. All are built once per
change, so a query over thousands of bookings does no formatting or encoding.
Records are never mutated; a change replaces the record, so a reader's snapshot stays
consistent without holding the lock while it filters and serialises.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from .catalogue import RESEARCHERS, Directory, default_type
from .render import json_texts
from .schema import (ENVELOPE, STATUSES, TypeRegistry, format_datetime, format_range,
                     infer_field)

# Keyword arguments of add/update that map onto referenced objects or derived properties.
_REFERENCES = {"resource", "project", "operator", "booker", "owner"}
_SCHEDULE = {"start", "minutes"}


def render_value(value: Any) -> Any:
    """JSON-ready copy: datetimes become Calpendo timestamp strings, dicts are copied."""
    if isinstance(value, dt.datetime):
        return format_datetime(value)
    if isinstance(value, dict):
        return {key: render_value(sub) for key, sub in value.items()}
    return value


@dataclass(frozen=True)
class Booking:
    """One immutable booking version."""

    props: dict      # typed values, including id and biskitType
    rendered: dict   # the same properties as JSON values
    texts: dict      # JSON text per dotted path (render.json_texts), for fast queries
    # Spliced result biskits per path selection (render.Selection); valid for this version.
    fragments: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def id(self) -> int:
        return self.props["id"]

    @property
    def biskit_type(self) -> str:
        return self.props["biskitType"]

    @classmethod
    def build(cls, props: dict) -> "Booking":
        """Fill the derived properties (duration, formattedName) and render once."""
        start, finish = props["dateRange"]["start"], props["dateRange"]["finish"]
        props = {**props,
                 "durationInMinutes": int((finish - start).total_seconds() // 60),
                 "formattedName": format_range(start, finish)}
        rendered = render_value(props)
        return cls(props, rendered, json_texts(rendered))

    def as_biskit(self, names: Iterable[str]) -> dict:
        """``{"id", "biskitType", "properties": {...}}`` with the given property names."""
        return {"id": self.id, "biskitType": self.biskit_type,
                "properties": {name: render_value(self.rendered.get(name))
                               for name in names if name not in ENVELOPE}}


def local_naive(value: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    """Site wall-clock time without tzinfo, whole seconds (what Calpendo stores and shows)."""
    if value.tzinfo is not None:
        value = value.astimezone(zone).replace(tzinfo=None)
    return value.replace(microsecond=0)


class BookingStore:
    """All bookings of one simulator, safe to read and change from several threads."""

    def __init__(self, registry: TypeRegistry, directory: Directory, zone: dt.tzinfo,
                 clock: Callable[[], dt.datetime] | None = None) -> None:
        self.registry = registry
        self.directory = directory
        self.zone = zone
        self._clock = clock or (lambda: dt.datetime.now(zone))
        self._lock = threading.RLock()
        self._bookings: dict[int, Booking] = {}
        self._snapshot: tuple[Booking, ...] | None = None
        self._last_id = 1000  # ids are never reused, even after a delete (like a sequence)

    # ----------------------------------------------------------------- reading

    def snapshot(self) -> tuple[Booking, ...]:
        """All bookings ordered by id; cached until the next change."""
        with self._lock:
            if self._snapshot is None:
                self._snapshot = tuple(sorted(self._bookings.values(), key=lambda b: b.id))
            return self._snapshot

    def get(self, booking_id: int) -> Booking:
        with self._lock:
            try:
                return self._bookings[booking_id]
            except KeyError:
                raise KeyError(f"no booking with id {booking_id}") from None

    # ----------------------------------------------------------------- writing

    def _put(self, booking: Booking) -> None:
        with self._lock:
            self._bookings[booking.id] = booking
            self._last_id = max(self._last_id, booking.id)
            self._snapshot = None

    def load(self, records: Iterable[dict]) -> None:
        """Add complete typed property dicts (the seed data) as they are."""
        for props in records:
            self._put(Booking.build(props))

    def now(self) -> dt.datetime:
        return local_naive(self._clock(), self.zone)

    def add(self, *, resource: str, start: dt.datetime, minutes: int,
            biskit_type: str | None, **changes: Any) -> int:
        """Create a booking; unspecified properties get a new booking's defaults."""
        biskit_type = biskit_type or default_type(resource)
        self.registry.register(biskit_type, {})
        now = self.now()
        props: dict[str, Any] = {
            "biskitType": biskit_type, "title": "", "status": "APPROVED",
            "project": None, "cancelled": False, "cancellationReason": None,
            "booker": self.directory.person(RESEARCHERS[0]),
            "owner": self.directory.person(RESEARCHERS[0]),
            "created": now, "modified": now,
        }
        if "Operator" in self.registry.fields(biskit_type):
            props["Operator"] = None
        with self._lock:
            props["id"] = self._last_id + 1
            props = self._apply(props, {"resource": resource, "start": start,
                                        "minutes": minutes, **changes})
            self._put(Booking.build(props))
        return props["id"]

    def update(self, booking_id: int, **changes: Any) -> None:
        """Change properties (same keywords as add); ``modified`` always moves forward."""
        if "biskit_type" in changes or "biskitType" in changes or "id" in changes:
            raise ValueError("a booking's id and biskit type cannot change")
        with self._lock:
            current = self.get(booking_id)
            props = self._apply(dict(current.props), changes)
            props["modified"] = max(self.now(), current.props["modified"]
                                    + dt.timedelta(seconds=1))
            self._put(Booking.build(props))

    def delete(self, booking_id: int) -> None:
        with self._lock:
            self.get(booking_id)
            del self._bookings[booking_id]
            self._snapshot = None

    # ----------------------------------------------------------------- change mapping

    def _apply(self, props: dict, changes: dict) -> dict:
        """Return ``props`` with keyword changes applied, validated like a booking form."""
        changes = dict(changes)
        self._apply_schedule(props, {k: changes.pop(k) for k in _SCHEDULE & changes.keys()})
        for name in _REFERENCES & changes.keys():
            self._apply_reference(props, name, changes.pop(name))
        if "status" in changes:
            self._apply_status(props, changes)
        for name, value in changes.items():
            self._apply_plain(props, name, value)
        return props

    def _apply_schedule(self, props: dict, changes: dict) -> None:
        if not changes:
            return
        old = props.get("dateRange")
        start = changes.get("start") or (old and old["start"])
        minutes = changes.get("minutes")
        if minutes is None:
            minutes = props.get("durationInMinutes", 60)
        if not isinstance(start, dt.datetime):
            raise TypeError(f"start must be a datetime, got {start!r}")
        if not isinstance(minutes, int) or minutes <= 0:
            raise ValueError(f"minutes must be a positive int, got {minutes!r}")
        start = local_naive(start, self.zone)
        props["dateRange"] = {"start": start, "finish": start + dt.timedelta(minutes=minutes)}

    def _apply_reference(self, props: dict, name: str, value: Any) -> None:
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name} is given by name (str), got {value!r}")
        if name == "resource":
            props["resource"] = self.directory.resource(value)
        elif name == "project":
            props["project"] = self.directory.project(value)
        elif name == "operator":
            if "Operator" not in self.registry.fields(props["biskitType"]):
                raise ValueError(f"{props['biskitType']} bookings have no Operator property")
            props["Operator"] = self.directory.operator(value)
        else:
            props[name] = self.directory.person(value)

    @staticmethod
    def _apply_status(props: dict, changes: dict) -> None:
        """Keep status, the cancelled flag and the reason consistent, as Calpendo does."""
        status = changes.pop("status")
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        props["status"] = status
        props["cancelled"] = changes.pop("cancelled", status == "CANCELLED")
        if not props["cancelled"]:
            props["cancellationReason"] = changes.pop("cancellationReason", None)

    def _apply_plain(self, props: dict, name: str, value: Any) -> None:
        """A scalar or extra property; extras are registered on the booking's type."""
        if name in ("formattedName", "durationInMinutes", "created", "modified"):
            raise ValueError(f"{name} is derived by the server and cannot be set")
        fields = self.registry.fields(props["biskitType"])
        if isinstance(value, dt.datetime):
            value = local_naive(value, self.zone)
        if value is None:
            if name not in fields:
                raise ValueError(f"unknown property {name!r} cannot be set to None")
        else:
            self.registry.register(props["biskitType"], {name: infer_field(value)})
        props[name] = value
