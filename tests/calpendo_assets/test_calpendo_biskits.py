"""normalise_biskit's shortcut for plain keys gives what set_dotted gives for every key."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from calpendo_assets.core.records import set_dotted
from calpendo_assets.sources.calpendo.biskits import normalise_biskit


def through_set_dotted(value: Any) -> Any:
    """The general path alone: every key through set_dotted, properties first."""
    if isinstance(value, list):
        return [through_set_dotted(item) for item in value]
    if not isinstance(value, dict):
        return value
    out: dict = {}
    properties = value.get("properties")
    items = list(properties.items()) if isinstance(properties, dict) else []
    items += [(k, s) for k, s in value.items() if not (k == "properties" and isinstance(s, dict))]
    for key, sub in items:
        set_dotted(out, str(key), sub, through_set_dotted)
    return out


MIXED = [
    # plain keys only, a nested biskit, a list of biskits
    {"id": 1, "title": "T", "resource": {"id": 3, "properties": {"name": "3T MRI"}},
     "operators": [{"id": 9, "properties": {"name": "Op"}}, "Op2", None, [1, {"a.b": 2}]]},
    # a property and an envelope key of one name: the envelope's scalar wins over a
    # scalar, yields to a dict; envelope dicts merge into the property's dict
    {"id": "12", "properties": {"id": "ignored", "project": {"name": "P"}, "status": "A",
                                "resource": {"name": "EEG"}},
     "project": "display", "status": None, "resource": {"formattedName": "EEG lab"}},
    # a plain key after a dotted key of the same object, and the other way round
    {"resource.name": "3T", "resource": {"id": 3}, "dateRange": {"start": "s"},
     "dateRange.finish": "f", "x": {"y.z": 1, "y": {"w": 2}}},
    # a scalar first, then the structured form (the scalar yields); non-string keys
    {"project": "BRISKP", "project.name": "BRISKP", 7: "seven", "properties": "not a dict"},
    {"properties": {"a.b": 1, "a": {"c": 2}, "a.d": [3]}, "a": 4, "e": {"properties": {}}},
]


@pytest.mark.parametrize("raw", MIXED)
def test_the_shortcut_gives_the_general_result_in_the_same_key_order(raw):
    before = copy.deepcopy(raw)
    expected = through_set_dotted(raw)
    got = normalise_biskit(raw)
    assert got == expected
    # Key order too: records are hashed and fingerprinted as they come.
    assert json.dumps(got, default=str) == json.dumps(expected, default=str)
    assert raw == before  # the input is copied, never changed


def test_the_shortcut_copies_nested_values():
    raw = {"id": 1, "resource": {"name": "3T", "tags": ["a"]}}
    out = normalise_biskit(raw)
    out["resource"]["name"] = "changed"
    out["resource"]["tags"].append("b")
    assert raw == {"id": 1, "resource": {"name": "3T", "tags": ["a"]}}
