"""One booking version as the simulator keeps it: typed values, JSON values, JSON texts.

Each booking is kept three ways: ``props`` with Python values (datetimes, ints) that
queries compare against, ``rendered``, the JSON-ready form with Calpendo's timestamp
strings, and ``texts``, the JSON text of every dotted property path (objects
included). All are built once per change, so a query over thousands of bookings does
no formatting or encoding (:mod:`calpendo_sim.render` only splices texts together).
A version is never mutated; a change builds a new one.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from json.encoder import encode_basestring  # C-accelerated; keeps non-ASCII as is
from typing import Any, Iterable

from .schema import ENVELOPE, format_datetime, format_range

# Compact JSON text, non-ASCII kept as is (as Java servers send it).
json_text = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


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
    texts: dict      # JSON text per dotted path (json_texts), for fast queries
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


def json_texts(rendered: dict) -> dict[str, str]:
    """The JSON text of every dotted property path of a rendered booking, objects included."""
    texts: dict[str, str] = {}

    def text(path: str, value: Any) -> str:
        if isinstance(value, dict):
            members = (f"{encode_basestring(key)}:{text(f'{path}.{key}', sub)}"
                       for key, sub in value.items())
            result = "{" + ",".join(members) + "}"
        elif isinstance(value, str):
            result = encode_basestring(value)
        else:
            result = json_text(value)
        texts[path] = result
        return result

    for name, value in rendered.items():
        text(name, value)
    return texts
