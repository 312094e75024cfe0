"""Biskit types and their properties: what a query may filter on or select.

Calpendo is a typed object store. ``Calpendo.Booking`` is the base type; subtypes such as
``MRIScan`` add properties (``Operator``) that do not exist on the base type, so a query on
``Calpendo.Booking`` that names them is rejected. The registry is per simulator because
tests may add properties or subtypes at run time (``add_booking(..., **extra)``).
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import BadRequest, NotFound

BASE_TYPE = "Calpendo.Booking"

STRING, INT, BOOL, DATETIME, ENUM, OBJECT = "string", "int", "bool", "datetime", "enum", "object"

STATUSES = ("APPROVED", "REQUESTED", "TENTATIVE", "DENIED", "CANCELLED")


@dataclass(frozen=True)
class Field:
    """One property: its kind, the fields of an object, or the constants of an enum."""

    kind: str
    children: Mapping[str, "Field"] = field(default_factory=dict)
    choices: tuple[str, ...] = ()


def _object(**children: Field) -> Field:
    return Field(OBJECT, children=children)


_ID, _TEXT, _WHEN = Field(INT), Field(STRING), Field(DATETIME)
PERSON = _object(id=_ID, name=_TEXT)
NAMED_REF = _object(id=_ID, name=_TEXT, formattedName=_TEXT)

BOOKING_FIELDS: dict[str, Field] = {
    "id": _ID,
    "biskitType": _TEXT,
    "title": _TEXT,
    "status": Field(ENUM, choices=STATUSES),
    "formattedName": _TEXT,
    "dateRange": _object(start=_WHEN, finish=_WHEN),
    "resource": NAMED_REF,
    "project": NAMED_REF,
    "durationInMinutes": _ID,
    "created": _WHEN,
    "modified": _WHEN,
    "booker": PERSON,
    "owner": PERSON,
    "cancelled": Field(BOOL),
    "cancellationReason": _TEXT,
}

# The site's custom booking types: MR scans carry the operator and what the console
# needs for SAR (weight in kg, height in cm, as text the site types in).
SUBTYPE_FIELDS: dict[str, dict[str, Field]] = {
    "MRIScan": {"Operator": NAMED_REF, "Weight": _TEXT, "Height": _TEXT},
    "EEGBooking": {},
}

# Top-level properties reported outside ``properties`` in a biskit, never inside it.
ENVELOPE = ("id", "biskitType")


def infer_field(value: Any) -> Field:
    """The field kind of a Python value given as an extra property (tests' add_booking)."""
    if isinstance(value, bool):  # before int: bool is an int subclass
        return Field(BOOL)
    if isinstance(value, int):
        return Field(INT)
    if isinstance(value, dt.datetime):
        return Field(DATETIME)
    if isinstance(value, str):
        return Field(STRING)
    if isinstance(value, dict) and value:
        return _object(**{k: infer_field(v) for k, v in value.items()})
    raise ValueError(f"cannot infer a property kind from {value!r}; give a str, int, bool, "
                     "datetime or a non-empty dict")


class TypeRegistry:
    """The biskit types known to one simulator and the properties each one has."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._base = dict(BOOKING_FIELDS)
        self._extra = {name: dict(fields) for name, fields in SUBTYPE_FIELDS.items()}

    def types(self) -> list[str]:
        return [BASE_TYPE, *self._extra]

    def fields(self, type_name: str) -> dict[str, Field]:
        """All properties of a type; the base type sees none of its subtypes' extras."""
        if type_name == BASE_TYPE:
            return dict(self._base)
        extra = self._extra.get(type_name)
        if extra is None:
            raise NotFound(f"unknown biskit type {type_name!r}; known types: "
                           f"{', '.join(self.types())}")
        return {**self._base, **extra}

    @staticmethod
    def includes(query_type: str, biskit_type: str) -> bool:
        """Whether a query on ``query_type`` returns a biskit of ``biskit_type``."""
        return query_type == BASE_TYPE or query_type == biskit_type

    def resolve(self, type_name: str, path: str) -> Field:
        """The field a dotted path names on a type; 400 naming the part that does not exist."""
        fields = self.fields(type_name)
        segments = path.split(".")
        current: Field | None = None
        for depth, segment in enumerate(segments):
            if current is not None and current.kind != OBJECT:
                parent = ".".join(segments[:depth])
                raise BadRequest(f"property path {path!r}: {parent!r} is a {current.kind}, "
                                 "not an object")
            current = fields.get(segment)
            if current is None:
                raise BadRequest(self._unknown_message(type_name, path, segments, depth))
            fields = current.children
        assert current is not None
        return current

    def _unknown_message(self, type_name: str, path: str, segments: list[str], depth: int) -> str:
        missing = ".".join(segments[: depth + 1])
        message = f"type {type_name} has no property {missing!r} (in path {path!r})"
        if depth == 0 and type_name == BASE_TYPE:
            owners = [name for name, extra in self._extra.items() if segments[0] in extra]
            if owners:
                message += (f"; it is defined on subtype {', '.join(owners)}: "
                            f"query webdav/q/{owners[0]}/... instead")
        return message

    def leaf_paths(self, type_name: str) -> list[str]:
        """Every dotted path to a non-object property, for flat rendering of a whole biskit."""
        def walk(prefix: str, fields: Mapping[str, Field]) -> list[str]:
            out: list[str] = []
            for name, spec in fields.items():
                dotted = f"{prefix}{name}"
                out += walk(dotted + ".", spec.children) if spec.kind == OBJECT else [dotted]
            return out
        return walk("", self.fields(type_name))

    def register(self, type_name: str, extra: Mapping[str, Field]) -> None:
        """Add properties (and the type itself when new); existing names must keep their kind."""
        with self._lock:
            if type_name == BASE_TYPE:
                target = dict(self._base)
            else:
                target = dict(self._extra.get(type_name, {}))
            visible = {**self._base, **target}
            for name, spec in extra.items():
                if name not in visible:
                    target[name] = spec
                elif visible[name] != spec:
                    raise ValueError(f"property {name!r} of {type_name} is a "
                                     f"{visible[name].kind}, not a {spec.kind}")
            # Copy-on-write so concurrent readers always see a complete dict.
            if type_name == BASE_TYPE:
                self._base = target
            else:
                self._extra = {**self._extra, type_name: target}


def format_datetime(value: dt.datetime) -> str:
    """Calpendo's timestamp text: site-local wall time, ``2025-02-12 10:00:00.0``."""
    return value.strftime("%Y-%m-%d %H:%M:%S") + ".0"


def format_range(start: dt.datetime, finish: dt.datetime) -> str:
    """A booking's formattedName: ``[2025-02-12 10:00:00.0, 2025-02-12 11:00:00.0]``."""
    return f"[{format_datetime(start)}, {format_datetime(finish)}]"
