"""Calpendo answers as plain records: biskits normalised to nested dicts.

Liberal in what we accept: fields nested under ``properties`` or as flat dotted keys
(at the top level or inside ``properties``), in any mix; values such as dates pass
through untouched for the mapping step to parse.
"""

from __future__ import annotations

from typing import Any



def _merge(target: dict, key: str, value: Any) -> None:
    """Set ``target[key]``; dicts are merged so nested and dotted forms of one object combine."""
    current = target.get(key)
    if isinstance(current, dict):
        if isinstance(value, dict):
            for sub_key, sub_value in _nest(value).items():
                _merge(current, sub_key, sub_value)
        # else: a scalar (null, display string) never replaces the structured form.
        return
    target[key] = _nest(value)


def set_dotted(target: dict, dotted: str, value: Any) -> None:
    head, _, rest = dotted.partition(".")
    if not rest:
        _merge(target, head, value)
        return
    child = target.get(head)
    if not isinstance(child, dict):
        # A scalar (e.g. a display string) yields to the structured form of the same object.
        child = target[head] = {}
    set_dotted(child, rest, value)


def _nest(value: Any) -> Any:
    """Copy ``value`` as nested dicts: dotted keys expanded, ``properties`` hoisted.

    Applied recursively because referenced objects (``resource``, ``project``...) may be
    serialised as biskits themselves: ``{"id", "biskitType", "properties": {...}}``.
    """
    if isinstance(value, list):
        return [_nest(item) for item in value]
    if not isinstance(value, dict):
        return value
    out: dict = {}
    properties = value.get("properties")
    if isinstance(properties, dict):
        for key, sub in properties.items():
            set_dotted(out, str(key), sub)
    # Envelope keys after properties, so the biskit's own id/biskitType win.
    for key, sub in value.items():
        if not (key == "properties" and isinstance(sub, dict)):
            set_dotted(out, str(key), sub)
    return out


def normalise_biskit(raw: dict) -> dict:
    """A biskit as one nested dict: ``{"id", "biskitType", "title", "resource": {"name"}, ...}``.

    Accepts fields under ``properties`` (nested or flat dotted keys) and flat dotted keys at
    the top level, in any mix. Top-level ``id``/``biskitType`` win over same-named properties.
    """
    if not isinstance(raw, dict):
        raise TypeError(f"a biskit must be a JSON object, got {type(raw).__name__}")
    return _nest(raw)


def operator_name(value: Any) -> str | None:
    """Display name of an ``Operator`` property: a string, or an object's ``name`` then
    ``formattedName``. Blank or unknown shapes give None."""
    if isinstance(value, dict):
        value = value.get("name") or value.get("formattedName")
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None
