"""The simulator's booking store: thread-safe mutations, cheap snapshots.

The store holds one :class:`~calpendo_sim.booking.Booking` version per booking. A
change replaces the version, so a reader's snapshot stays consistent without holding
the lock while it filters and serialises.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any, Callable, Iterable

from .booking import Booking
from .catalogue import RESEARCHERS, Directory, default_type
from .schema import STATUSES, TypeRegistry, infer_field

# Keyword arguments of add/update that map onto referenced objects or derived properties.
_REFERENCES = {"resource", "project", "operator", "booker", "owner"}
_SCHEDULE = {"start", "minutes"}


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
