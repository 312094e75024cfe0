"""Records: nested dicts read and written by dotted paths, and the JSON they come from.

A source plugin hands the mapping step one record per booking, e.g.
``{"id": 7, "title": ..., "resource": {"name": "3T MRI"}, "dateRange": {"start": ...}}``;
``get_path(record, "resource.name")`` reads it, `set_dotted` builds it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

_KINDS = {dict: "object", list: "list", str: "string", bool: "boolean", int: "integer",
          float: "number"}
_ARTICLES = {"object": "an object", "integer": "an integer", "null": "null"}


def get_path(record: dict, dotted: str, default: Any = None) -> Any:
    """``get_path(b, "resource.name")``; also finds a literal dotted key in un-normalised data."""
    node: Any = record
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return record.get(dotted, default) if isinstance(record, dict) else default
        node = node[part]
    return node


def expand(value: Any) -> Any:
    """A copy of `value` with the dotted keys of its dicts expanded into nested dicts."""
    if isinstance(value, list):
        return [expand(item) for item in value]
    if not isinstance(value, dict):
        return value
    out: dict = {}
    for key, sub in value.items():
        set_dotted(out, str(key), sub)
    return out


def _merge(target: dict, key: str, value: Any, copy: Callable[[Any], Any]) -> None:
    """Set ``target[key]``; dicts are merged so nested and dotted forms of one object combine."""
    current = target.get(key)
    if isinstance(current, dict):
        if isinstance(value, dict):
            for sub_key, sub_value in copy(value).items():
                _merge(current, sub_key, sub_value, copy)
        # else: a scalar (null, display string) never replaces the structured form.
        return
    target[key] = copy(value)


def set_dotted(target: dict, dotted: str, value: Any, copy: Callable[[Any], Any] = expand) -> None:
    """``set_dotted(r, "resource.name", "3T")`` sets ``r["resource"]["name"]``.

    `value` is stored as `copy` makes it (default: dotted keys expanded); a dict
    merges into the dict already there.
    """
    head, _, rest = dotted.partition(".")
    if not rest:
        _merge(target, head, value, copy)
        return
    child = target.get(head)
    if not isinstance(child, dict):
        # A scalar (e.g. a display string) yields to the structured form of the same object.
        child = target[head] = {}
    set_dotted(child, rest, value, copy)


def records_fingerprint(records: list[dict]) -> str:
    """sha256 of records, order-independent: what a sensor compares between ticks."""
    canonical = sorted(
        json.dumps(r, sort_keys=True, separators=(",", ":"), default=str) for r in records
    )
    return hashlib.sha256("\n".join(canonical).encode("utf-8")).hexdigest()


def json_kind(value: Any, article: bool = False) -> str:
    """The JSON name of a value's kind ("object", "integer", ...), with "a"/"an" if asked:
    what an error may say about a value without quoting it."""
    kind = "null" if value is None else _KINDS.get(type(value), type(value).__name__)
    return _ARTICLES.get(kind, f"a {kind}") if article else kind


def json_document(text: str, where: str, error: type[Exception]) -> Any:
    """Parsed JSON; `error` names `where` and the line and column of a syntax error
    (never the text: a file of entries holds participant names)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        at = f"line {exc.lineno} column {exc.colno}"
        raise error(f"{where}: invalid JSON at {at}: {exc.msg}") from None
