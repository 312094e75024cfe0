"""Calpendo answers as plain records: biskits normalised to nested dicts, and checked.

Liberal in what we accept: fields nested under ``properties`` or as flat dotted keys
(at the top level or inside ``properties``), in any mix; values such as dates pass
through untouched for the mapping step to parse. Strict about the shape: a query
answer is ``{"biskits": [objects]}`` with ids that are numbers or short tokens, and
a booking without the fields every booking has is skipped, not guessed at.
Messages name the URL and position, never an answer's text: it holds participant names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from calpendo_assets.core.errors import BadAnswerError
from calpendo_assets.core.records import get_path, json_kind, set_dotted

# Without these a booking cannot be placed or scoped: an answer lacking them is
# unreadable, not a booking that left the window (its row must not be cancelled).
REQUIRED_PATHS: tuple[tuple[str, ...], ...] = (
    ("status",),
    ("resource.name",),
    ("dateRange.start", "formattedName"),
)
_BOOKING_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


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
        _put_all(out, properties.items())
    # Envelope keys after properties, so the biskit's own id/biskitType win.
    envelope = [(k, s) for k, s in value.items() if not (k == "properties" and isinstance(s, dict))]
    _put_all(out, envelope)
    return out


def _put_all(out: dict, items: Iterable[tuple[Any, Any]]) -> None:
    """``set_dotted(out, str(key), sub, _nest)`` for each item. A plain key not yet in
    `out` (nearly every key of an answer) is stored directly: exactly what set_dotted
    would do, without its calls (a sync normalises thousands of biskits)."""
    for key, sub in items:
        if key.__class__ is str and "." not in key and key not in out:
            out[key] = _nest(sub) if isinstance(sub, (dict, list)) else sub
        else:
            set_dotted(out, str(key), sub, _nest)


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


# ---------------------------------------------------------------- answer shapes


def id_problem(value: Any) -> str | None:
    """Why `value` is no booking id (a number, or a short token), else None; a missing
    id is not a problem here (such a biskit is skipped)."""
    if value in (None, ""):
        return None
    if isinstance(value, str):
        return None if _BOOKING_ID.fullmatch(value) else "is text that is not a booking id"
    if isinstance(value, int) and not isinstance(value, bool):
        return None
    if isinstance(value, float):
        return "is not a whole number"
    return f"is {json_kind(value, article=True)}, not a number"


def query_biskits(payload: Any, url: str) -> list[dict]:
    """A query answer ``{"biskits": [...]}`` as normalised records; BadAnswerError if
    it is not that shape or an id could be text other than an id."""
    if not isinstance(payload, dict) or "biskits" not in payload:
        kind = json_kind(payload, article=True)
        raise BadAnswerError(f"Calpendo answer for {url} is {kind} without a 'biskits' key")
    biskits = payload["biskits"]
    if not isinstance(biskits, list):
        kind = json_kind(biskits, article=True)
        raise BadAnswerError(f"Calpendo answer for {url}: 'biskits' is {kind}, not a list")
    for index, biskit in enumerate(biskits):
        if not isinstance(biskit, dict):
            kind = json_kind(biskit, article=True)
            raise BadAnswerError(
                f"Calpendo answer for {url}: biskits[{index}] is {kind}, "
                f"not an object ({len(biskits)} biskits)"
            )
    normalised = [normalise_biskit(b) for b in biskits]
    for index, biskit in enumerate(normalised):
        problem = id_problem(biskit.get("id"))
        if problem:
            # Ids are quoted in warnings and Dagster metadata: never text that may be a name.
            raise BadAnswerError(
                f"Calpendo answer for {url}: biskits[{index}].id {problem} ({len(biskits)} biskits)"
            )
    return normalised


def detail_biskit(payload: Any, url: str) -> dict:
    """A REST answer (one biskit) as a normalised record; BadAnswerError if it is not one."""
    # Liberal: a detail answer wrapped like a query result is unwrapped.
    if isinstance(payload, dict) and isinstance(payload.get("biskits"), list):
        if len(payload["biskits"]) == 1:
            payload = payload["biskits"][0]
    if not isinstance(payload, dict) or isinstance(payload.get("biskits"), list):
        kind = json_kind(payload, article=True)
        raise BadAnswerError(f"Calpendo answer for {url} is {kind}, not one biskit object")
    return normalise_biskit(payload)


def _has(record: dict, path: str) -> bool:
    return get_path(record, path) not in (None, "")


def missing_fields(biskit: dict) -> list[str]:
    """The `REQUIRED_PATHS` a biskit lacks (each alternative group counts once)."""
    return [" or ".join(alts) for alts in REQUIRED_PATHS if not any(_has(biskit, p) for p in alts)]


def split_unreadable(biskits: list[dict]) -> tuple[list[dict], dict[str, str]]:
    """Biskits without an id or without the fields a booking always has are skipped.

    Skipped bookings make the fetch incomplete: nothing is cancelled on their account.
    """
    kept, skipped = [], {}
    for index, biskit in enumerate(biskits):
        if biskit.get("id") in (None, ""):
            skipped[f"#{index}"] = "biskit without an id in the answer"
            continue
        missing = missing_fields(biskit)
        if missing:
            skipped[str(biskit["id"])] = f"answer lacks {', '.join(missing)}"
        else:
            kept.append(biskit)
    return kept, skipped
