"""JSON shapes of biskits as the simulator serves them.

Nested (default): ``{"id": 7, "biskitType": "MRIScan", "properties": {"title": "...",
"resource": {"name": "3T MRI"}}}``. Flat (``flat_keys``): the selected paths become dotted
keys beside id and biskitType: ``{"id": 7, "biskitType": "MRIScan", "resource.name": "3T MRI"}``.
A path naming an object returns the whole object; a path through a null object is null
(nested: the object itself is reported as null).

Encoding thousands of small dicts per query would dominate a big query's cost, so every
booking version carries the JSON text of each of its property paths (``Booking.texts``,
built once per change) and a query only splices those texts together; the spliced result
is also kept per selection on that (immutable) booking version, so a repeated sync query
costs little more than its filter.
"""

from __future__ import annotations

from json.encoder import encode_basestring  # C-accelerated; keeps non-ASCII as is
from typing import Any, Sequence

from .booking import Booking, json_text

# What a query without ``paths=`` returns besides id and biskitType.
DEFAULT_PATHS = ("formattedName",)
NULL = "null"
_CACHED_SELECTIONS = 8  # per booking version; bounds memory when clients vary their paths


def encode(payload: Any) -> bytes:
    """Compact UTF-8 JSON, non-ASCII kept as is (as Java servers send it)."""
    return json_text(payload).encode("utf-8")


def _tree(paths: Sequence[str]) -> dict:
    """``["resource.name", "title"]`` -> ``{"resource": {"name": None}, "title": None}``.

    None marks "the whole value"; a whole object wins over paths into it.
    """
    tree: dict = {}
    for path in paths:
        node = tree
        *parents, leaf = path.split(".")
        for segment in parents:
            if segment in node and node[segment] is None:
                break
            node = node.setdefault(segment, {})
        else:
            node[leaf] = None
    return tree


def _compile(tree: dict, prefix: str = "") -> list[tuple[str, str, list | None]]:
    """Tree -> [(path, '"key":', children or None)] so rendering does no string work twice."""
    return [(prefix + key, encode_basestring(key) + ":",
             None if sub is None else _compile(sub, f"{prefix}{key}."))
            for key, sub in tree.items()]


def _splice(texts: dict[str, str], members: list) -> str:
    parts = []
    for path, key, children in members:
        text = texts.get(path, NULL)
        if children is not None and text != NULL:
            text = _splice(texts, children)
        parts.append(key + text)
    return "{" + ",".join(parts) + "}"


class Selection:
    """A validated ``paths=`` list, compiled once per request."""

    def __init__(self, paths: Sequence[str], flat: bool) -> None:
        self.flat = flat
        self.key = (tuple(paths), flat)
        self._members = _compile(_tree(paths))
        self._flat = [(path, encode_basestring(path) + ":") for path in paths]

    def fragment(self, booking: Booking) -> bytes:
        """The UTF-8 JSON of one result biskit, cached on the booking version."""
        cache = booking.fragments
        text = cache.get(self.key)
        if text is None:
            if len(cache) >= _CACHED_SELECTIONS:
                cache.clear()
            text = cache[self.key] = self._splice(booking).encode("utf-8")
        return text

    def _splice(self, booking: Booking) -> str:
        texts = booking.texts
        head = '{"id":' + texts["id"] + ',"biskitType":' + texts["biskitType"]
        if self.flat:
            return head + "".join("," + key + texts.get(path, NULL)
                                  for path, key in self._flat) + "}"
        return head + ',"properties":' + _splice(texts, self._members) + "}"


def query_body(bookings: Sequence[Booking], selection: Selection) -> bytes:
    """``{"biskits": [...]}`` for the matching bookings."""
    fragment = selection.fragment
    return b'{"biskits":[' + b",".join([fragment(b) for b in bookings]) + b"]}"


def detail(booking: Booking, property_names: Sequence[str], leaf_paths: Sequence[str],
           flat: bool) -> bytes:
    """One whole biskit for ``webdav/b/TYPE/ID``: every property the requested type has.

    The flat form lists every leaf as a dotted key, the way a flat client would read it.
    """
    if flat:
        leaves = [path for path in leaf_paths if path not in ("id", "biskitType")]
        return Selection(leaves, flat=True).fragment(booking)
    return encode(booking.as_biskit(property_names))
