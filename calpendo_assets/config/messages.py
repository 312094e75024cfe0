"""pydantic's validation errors as one line an operator can act on.

``data source 'mri3t': config.timezone: unknown time zone 'Mars/Base'``: the source
(by name, else by position), the dotted key at fault and what is wrong with it, in
the words of a JSON file (object, list, integer), never pydantic's own vocabulary.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from calpendo_assets.config.models import NAME_PATTERN, SourceBase
from calpendo_assets.core.errors import ConfigError
from calpendo_assets.core.records import json_kind
from calpendo_assets.core.settings import OperationInterval, Units
from calpendo_assets.sources.registry import PLUGINS
from mwl_service.schema import MAPPABLE_FIELDS

_KINDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "string": "a string",
    "dict": "an object",
    "model": "an object",
    "list": "a list",
    "tuple": "a list",
}
_BOUNDS = {
    "greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<",
}


def dotted(loc: tuple) -> str:
    """An error location as a key path (``config.resources[1]``); tags in angle
    brackets and pydantic's ``[key]`` are dropped."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part.startswith("<") and part != "[key]":
            out += f".{part}" if out else part
    return out


def _got(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return f", got {json_kind(value)}"
    return f", got {json_kind(value)} {value!r}"


def _allowed_keys(model: type[BaseModel] | None) -> str:
    if model is None:
        return ""
    keys = [f.alias or name for name, f in model.model_fields.items()]
    return f" (allowed: {', '.join(keys)})"


def _model_at(raw_source: Any, path: tuple) -> type[BaseModel] | None:
    """The model that owns the object at `path` of a source, for "allowed keys"."""
    plugin = PLUGINS.get(raw_source.get("type")) if isinstance(raw_source, dict) else None
    where = tuple(p for p in path if not (isinstance(p, str) and p.startswith("<")))
    return {
        (): SourceBase if plugin else None,
        ("config",): plugin.config_model if plugin else None,
        ("operation_interval",): OperationInterval,
        ("config", "units"): Units,
    }.get(where[:-1])


def _unknown_key(raw_source: Any, path: tuple) -> str:
    model = _model_at(raw_source, path)
    if model is SourceBase:
        return "unknown key" + _allowed_keys(model).replace(")", ", type, config)")
    return "unknown key" + _allowed_keys(model)


def _message(error: dict, raw_source: Any, path: tuple) -> str:
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "missing":
        return "missing"
    if kind == "extra_forbidden":
        return _unknown_key(raw_source, path)
    if kind == "union_tag_invalid":
        return f"unknown type {raw_source.get('type')!r} (known: {', '.join(PLUGINS)})"
    if kind == "literal_error" and "patient_id" in ctx.get("expected", ""):
        return f"unknown worklist field {value!r} (known: {', '.join(MAPPABLE_FIELDS)})"
    if kind == "literal_error":
        return f"must be {ctx.get('expected')}, got {value!r}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind in _BOUNDS:
        limit = next(iter(ctx.values()))
        limit = int(limit) if isinstance(limit, float) and limit.is_integer() else limit
        return f"must be {_BOUNDS[kind]} {limit}, got {value!r}"
    if kind in ("string_too_short", "too_short"):
        return "must not be empty"
    base = kind.removesuffix("_type").removesuffix("_parsing")
    if base in _KINDS:
        return f"must be {_KINDS[base]}{_got(value)}"
    if kind in ("target", "one_or_many", "group"):
        return error["msg"] + _got(value)
    if kind == "union_tag_not_found":
        return "must be an object with a type" if not isinstance(value, dict) else "missing"
    return error["msg"] + ("" if isinstance(value, (dict, list)) else _got(value))


def _source_of(error: dict, data: Any) -> tuple[str, tuple, Any]:
    """(label, path inside the source, the source as written) of an error in
    ``data_sources``; the label names the source, or its position when it has no
    usable name."""
    loc = tuple(error["loc"])
    sources = data.get("data_sources") if isinstance(data, dict) else None
    raw = sources[loc[1]] if isinstance(sources, list) and loc[1] < len(sources) else None
    name = raw.get("name") if isinstance(raw, dict) else None
    named = isinstance(name, str) and bool(NAME_PATTERN.fullmatch(name))
    label = f"data source {name!r}" if named else f"data source #{loc[1] + 1}"
    path = loc[2:]
    if error["type"] == "union_tag_invalid" or (
        error["type"] == "union_tag_not_found" and isinstance(raw, dict)
    ):
        path = ("type",)
    return label, path, raw


def _source_message(error: dict, raw: Any, path: tuple) -> str:
    kind = error["type"]
    if kind in ("model_type", "dict_type") and not path:
        return f"must be an object, got {json_kind(error.get('input'))}"
    if kind == "union_tag_not_found" and not isinstance(raw, dict):
        return f"must be an object, got {json_kind(error.get('input'))}"
    if kind == "union_tag_not_found" and path == ("type",) and "type" in raw:
        return f"must be a string{_got(raw['type'])}"
    return _message(error, raw, path)


def config_error(exc: ValidationError, data: Any) -> ConfigError:
    """The first problem, as "<source label>: <dotted key>: <what is wrong>"."""
    errors = exc.errors(include_url=False)
    # An unknown key is usually the typo behind a "missing" one: name it first.
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(error["loc"])
    if loc[:1] == ("data_sources",) and len(loc) >= 2 and isinstance(loc[1], int):
        label, path, raw = _source_of(error, data)
        message = _source_message(error, raw, path)
    elif error["type"] == "extra_forbidden":
        return ConfigError(f"config: {dotted(loc)}: unknown key (allowed: data_sources)")
    else:
        label, path = "config", loc
        message = _source_message(error, None, path)
    where = dotted(path)
    return ConfigError(f"{label}: {where}: {message}" if where else f"{label}: {message}")
