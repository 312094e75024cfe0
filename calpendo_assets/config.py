"""Data-source configuration: load, validate, and derive the sync window.

The file is JSON, its path from env ``CALPENDO_MWL_CONFIG`` (default
``config/calpendo.json`` relative to the current directory)::

    {"data_sources": [
      {"name": "mri3t", "type": "calpendo", "enabled": true,
       "sync_interval": 300,
       "operation_interval": {"start_time": [6, 0], "end_time": [22, 0]},
       "config": {"base_url": "http://127.0.0.1:8089", "resources": ["3T MRI"], ...},
       "field_mapping": {"title": {"_extract": {...}}, "project.name": "study_description"}}
    ]}

Everything is validated before any request is made; a `ConfigError` names the data
source and the exact key path at fault (``data source 'mri3t': config.timezone:
unknown time zone 'Mars/Base'``). Unknown keys are errors, so a typo is never
silently ignored.

Per source keys: ``name`` (required; usable as a Dagster asset-key prefix),
``type`` (required; ``"calpendo"``), ``enabled`` (default true), ``sync_interval``
(seconds, >= 60, default 300), ``operation_interval`` (optional; absent or
``[0, 0]``-``[0, 0]`` = always), ``config`` (required object, see `_CONFIG_KEYS`),
``field_mapping`` (optional; `DEFAULT_FIELD_MAPPING` when absent).

``field_mapping`` maps a Calpendo dotted path to
  - a worklist field name (one of ``mwl_service.schema.MAPPABLE_FIELDS``),
  - a list of such names (the same value feeds several fields), or
  - ``{"_extract": {field: {"pattern": regex, "group": n-or-name}}}`` to pull several
    fields out of one source value (``group`` defaults to 1).
A worklist field may be targeted only once. When ``modality`` or
``scheduled_station_ae_title`` are mapped and the booking has a value, it wins over
the resource mappings.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from calpendo_assets.calpendo_api import STRATEGIES
from mwl_service.schema import MAPPABLE_FIELDS
from mwl_service.vr import vr_problem

CONFIG_ENV = "CALPENDO_MWL_CONFIG"
DEFAULT_CONFIG_PATH = Path("config") / "calpendo.json"
URL_ENV = "CALPENDO_API_URL"
USERNAME_ENV = "CALPENDO_USERNAME"
PASSWORD_ENV = "CALPENDO_PASSWORD"

SOURCE_TYPES = ("calpendo",)
MIN_SYNC_INTERVAL = 60
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PATH_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")

# Participant ID then an optional name, e.g. "SUB0013 - Jane Doe", "SUB0013_Jane Doe",
# "BRISK-005_Smith", "sub-01: Doe, Jane", "P123". The ID is letters/digits with a digit,
# optionally in "-"/"." parts that contain digits ("sub-01", "BRISK.002"); a title without
# such an ID (e.g. "Phantom QA", "Jane Doe") does not match: the booking is skipped
# with a warning instead of inventing an ID.
DEFAULT_TITLE_PATTERN = (
    r"^\s*(?P<patient_id>(?:[A-Za-z]*\d[A-Za-z0-9]*|[A-Za-z]+(?=[-.][A-Za-z]*\d))"
    r"(?:[-.][A-Za-z]*\d[A-Za-z0-9]*)*)"
    r"(?:(?:\s*[-_:;,/|]\s*|\s+)(?P<patient_name>\S.*?))?\s*$"
)

DEFAULT_FIELD_MAPPING: dict[str, Any] = {
    "title": {
        "_extract": {
            "patient_id": {"pattern": DEFAULT_TITLE_PATTERN, "group": "patient_id"},
            "patient_name": {"pattern": DEFAULT_TITLE_PATTERN, "group": "patient_name"},
        }
    },
    "project.name": ["study_description", "requested_procedure_description"],
    "resource.name": "scheduled_station_name",  # SH: truncated to 16 characters
    "Operator": "performing_physician_name",
}

# `config` keys and their defaults. base_url has none: it falls back to
# CALPENDO_API_URL (the config value wins) and is an error when neither is set.
_CONFIG_DEFAULTS: dict[str, Any] = {
    "base_url": None,
    "resources": [],
    "status_filter": ["APPROVED"],
    "past_days": 1,
    "future_days": 7,
    "timezone": "America/Edmonton",
    "resource_modality_mapping": {},
    "resource_ae_title_mapping": {},
    "default_modality": "MR",
    "fetch_strategy": "bulk",
    "timeout": 30,
    "retries": 3,
    "backoff_factor": 0.5,
    "max_workers": 5,
    "max_cancel_fraction": 0.5,
    "min_cancel_guard_rows": 5,
}
_CONFIG_KEYS = tuple(_CONFIG_DEFAULTS)
_SOURCE_KEYS = (
    "name",
    "type",
    "enabled",
    "sync_interval",
    "operation_interval",
    "config",
    "field_mapping",
)
DEFAULT_SYNC_INTERVAL = 300


class ConfigError(ValueError):
    """A configuration problem; the message names the source and the key path."""


@dataclass(frozen=True)
class FieldExtraction:
    field: str
    pattern: re.Pattern
    group: int | str


@dataclass(frozen=True)
class DataSource:
    name: str
    type: str
    enabled: bool
    sync_interval: int
    operation_start: tuple[int, int]
    operation_end: tuple[int, int]
    base_url: str
    resources: tuple[str, ...]
    status_filter: tuple[str, ...]
    past_days: int
    future_days: int
    timezone: str
    resource_modality_mapping: dict
    resource_ae_title_mapping: dict
    default_modality: str
    fetch_strategy: str
    timeout: float
    retries: int
    backoff_factor: float
    max_workers: int
    max_cancel_fraction: float
    min_cancel_guard_rows: int
    direct_mappings: tuple[tuple[str, str], ...]
    extractions: tuple[tuple[str, tuple[FieldExtraction, ...]], ...]

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def calpendo_paths(self) -> tuple[str, ...]:
        """The dotted Calpendo paths the field mapping reads (in mapping order, unique)."""
        paths = [p for p, _ in self.direct_mappings] + [p for p, _ in self.extractions]
        return tuple(dict.fromkeys(paths))

    def mapped_fields(self) -> tuple[str, ...]:
        """Worklist fields the field mapping fills."""
        fields = [f for _, f in self.direct_mappings]
        fields += [x.field for _, xs in self.extractions for x in xs]
        return tuple(fields)


# ---------------------------------------------------------------- validation helpers


class _Ctx:
    """Builds error messages: the source label plus a key path."""

    def __init__(self, label: str):
        self.label = label

    def error(self, path: str, message: str) -> ConfigError:
        return ConfigError(
            f"{self.label}: {path}: {message}" if path else f"{self.label}: {message}"
        )


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "list",
        dict: "object",
    }.get(type(value), type(value).__name__)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float; bool is not a number here (JSON true is no count)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value)


def _int(ctx: _Ctx, path: str, value: Any, minimum: int | None = None) -> int:
    if not _is_int(value):
        raise ctx.error(path, f"must be an integer, got {_type_name(value)} {value!r}")
    if minimum is not None and value < minimum:
        raise ctx.error(path, f"must be >= {minimum}, got {value}")
    return value


def _number(
    ctx: _Ctx,
    path: str,
    value: Any,
    minimum: float | None = None,
    maximum: float | None = None,
    strict_min: bool = False,
) -> float:
    if not is_number(value):
        raise ctx.error(path, f"must be a number, got {_type_name(value)} {value!r}")
    if minimum is not None and (value < minimum or (strict_min and value == minimum)):
        raise ctx.error(path, f"must be {'>' if strict_min else '>='} {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ctx.error(path, f"must be <= {maximum}, got {value}")
    return value


def _str(ctx: _Ctx, path: str, value: Any, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ctx.error(path, f"must be a string, got {_type_name(value)} {value!r}")
    if not allow_empty and not value.strip():
        raise ctx.error(path, "must not be empty")
    return value


def _bool(ctx: _Ctx, path: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ctx.error(path, f"must be true or false, got {_type_name(value)} {value!r}")
    return value


def _object(ctx: _Ctx, path: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise ctx.error(path, f"must be an object, got {_type_name(value)}")
    return value


def _no_unknown(ctx: _Ctx, path: str, obj: dict, allowed: tuple[str, ...]) -> None:
    for key in obj:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise ctx.error(where, f"unknown key (allowed: {', '.join(allowed)})")


def _str_list(ctx: _Ctx, path: str, value: Any) -> tuple[str, ...]:
    """One string or a list of non-empty strings."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ctx.error(path, f"must be a string or a list of strings, got {_type_name(value)}")
    out = []
    for i, item in enumerate(value):
        out.append(_str(ctx, f"{path}[{i}]", item).strip())
    return tuple(out)


def _clock(ctx: _Ctx, path: str, value: Any) -> tuple[int, int]:
    if not isinstance(value, list) or len(value) != 2:
        raise ctx.error(path, f"must be [hour, minute], got {value!r}")
    hour = _int(ctx, f"{path}[0]", value[0])
    minute = _int(ctx, f"{path}[1]", value[1])
    if not 0 <= hour <= 23:
        raise ctx.error(f"{path}[0]", f"hour must be 0-23, got {hour}")
    if not 0 <= minute <= 59:
        raise ctx.error(f"{path}[1]", f"minute must be 0-59, got {minute}")
    return hour, minute


def _resource_mapping(ctx: _Ctx, path: str, value: Any, vr: str) -> dict[str, str]:
    mapping = _object(ctx, path, value)
    seen: dict[str, str] = {}
    out = {}
    for key, target in mapping.items():
        where = f"{path}.{key}"
        if not key.strip():
            raise ctx.error(path, "resource names must not be empty")
        _str(ctx, where, target)
        problem = vr_problem(vr, target)
        if problem:
            raise ctx.error(where, f"{target!r} is not a valid {vr} value: {problem}")
        folded = key.strip().casefold()
        if folded in seen:
            raise ctx.error(
                where, f"duplicates {seen[folded]!r} (resource names are case-insensitive)"
            )
        seen[folded] = key
        out[key.strip()] = target
    return out


def _field_name(ctx: _Ctx, path: str, value: Any) -> str:
    _str(ctx, path, value)
    if value not in MAPPABLE_FIELDS:
        raise ctx.error(
            path, f"unknown worklist field {value!r} (known: {', '.join(MAPPABLE_FIELDS)})"
        )
    return value


def _extraction(ctx: _Ctx, path: str, field: str, spec: Any) -> FieldExtraction:
    spec = _object(ctx, path, spec)
    _no_unknown(ctx, path, spec, ("pattern", "group"))
    if "pattern" not in spec:
        raise ctx.error(f"{path}.pattern", "missing")
    pattern_text = _str(ctx, f"{path}.pattern", spec["pattern"])
    try:
        pattern = re.compile(pattern_text)
    except re.error as exc:
        raise ctx.error(f"{path}.pattern", f"invalid regular expression: {exc}") from None
    group = spec.get("group", 1)
    if isinstance(group, str):
        if group not in pattern.groupindex:
            named = ", ".join(pattern.groupindex) or "none"
            raise ctx.error(
                f"{path}.group", f"no group named {group!r} in pattern (named groups: {named})"
            )
    elif _is_int(group):
        if not 0 <= group <= pattern.groups:
            raise ctx.error(
                f"{path}.group", f"group {group} not in pattern (it has {pattern.groups} groups)"
            )
    else:
        raise ctx.error(f"{path}.group", f"must be a group number or name, got {_type_name(group)}")
    return FieldExtraction(field=field, pattern=pattern, group=group)


def _field_mapping(ctx: _Ctx, value: Any):
    mapping = _object(ctx, "field_mapping", value)
    direct: list[tuple[str, str]] = []
    extractions: list[tuple[str, tuple[FieldExtraction, ...]]] = []
    targeted: dict[str, str] = {}

    def claim(field: str, where: str) -> None:
        if field in targeted:
            raise ctx.error(
                where, f"worklist field {field!r} is already mapped by {targeted[field]}"
            )
        targeted[field] = where

    for source_path, target in mapping.items():
        base = f"field_mapping.{source_path}"
        if not _PATH_PATTERN.fullmatch(source_path):
            raise ctx.error(base, "not a Calpendo dotted path (e.g. 'title', 'project.name')")
        if isinstance(target, dict):
            _no_unknown(ctx, base, target, ("_extract",))
            specs = _object(ctx, f"{base}._extract", target.get("_extract"))
            if not specs:
                raise ctx.error(f"{base}._extract", "must name at least one worklist field")
            items = []
            for field, spec in specs.items():
                where = f"{base}._extract.{field}"
                if field not in MAPPABLE_FIELDS:
                    raise ctx.error(
                        where,
                        f"unknown worklist field {field!r} (known: {', '.join(MAPPABLE_FIELDS)})",
                    )
                claim(field, where)
                items.append(_extraction(ctx, where, field, spec))
            extractions.append((source_path, tuple(items)))
        elif isinstance(target, list):
            if not target:
                raise ctx.error(base, "an empty list maps nothing")
            for i, item in enumerate(target):
                field = _field_name(ctx, f"{base}[{i}]", item)
                claim(field, f"{base}[{i}]")
                direct.append((source_path, field))
        else:
            field = _field_name(ctx, base, target)
            claim(field, base)
            direct.append((source_path, field))
    return tuple(direct), tuple(extractions)


def _base_url(ctx: _Ctx, value: Any, env: Mapping[str, str]) -> str:
    if value is None:
        value = (env.get(URL_ENV) or "").strip()
        if not value:
            raise ctx.error("config.base_url", f"missing (set it in the config or in {URL_ENV})")
        path = f"config.base_url (from {URL_ENV})"
    else:
        path = "config.base_url"
        _str(ctx, path, value)
    value = value.strip()
    if not re.match(r"https?://[^/\s]+", value):
        raise ctx.error(path, "must be an http:// or https:// URL")
    if "@" in value.split("/", 3)[2]:
        # Credentials come only from CALPENDO_USERNAME / CALPENDO_PASSWORD.
        raise ctx.error(path, f"must not contain credentials (use {USERNAME_ENV}/{PASSWORD_ENV})")
    return value.rstrip("/")


def _source(index: int, raw: Any, env: Mapping[str, str]) -> DataSource:
    ctx = _Ctx(f"data source #{index + 1}")
    if not isinstance(raw, dict):
        raise ctx.error("", f"must be an object, got {_type_name(raw)}")
    if "name" not in raw:
        raise ctx.error("name", "missing")
    name = _str(ctx, "name", raw["name"])
    if not NAME_PATTERN.fullmatch(name):
        raise ctx.error(
            "name",
            f"{name!r} cannot prefix Dagster asset keys (letters, digits and _, not starting "
            "with a digit)",
        )
    ctx = _Ctx(f"data source {name!r}")
    _no_unknown(ctx, "", raw, _SOURCE_KEYS)
    for key in ("type", "config"):
        if key not in raw:
            raise ctx.error(key, "missing")
    source_type = _str(ctx, "type", raw["type"])
    if source_type not in SOURCE_TYPES:
        raise ctx.error("type", f"unknown type {source_type!r} (known: {', '.join(SOURCE_TYPES)})")
    enabled = _bool(ctx, "enabled", raw.get("enabled", True))
    sync_interval = _int(ctx, "sync_interval", raw.get("sync_interval", DEFAULT_SYNC_INTERVAL))
    if sync_interval < MIN_SYNC_INTERVAL:
        raise ctx.error(
            "sync_interval", f"must be >= {MIN_SYNC_INTERVAL} seconds, got {sync_interval}"
        )

    op_start, op_end = (0, 0), (0, 0)
    if raw.get("operation_interval") is not None:
        op = _object(ctx, "operation_interval", raw["operation_interval"])
        _no_unknown(ctx, "operation_interval", op, ("start_time", "end_time"))
        for key in ("start_time", "end_time"):
            if key not in op:
                raise ctx.error(f"operation_interval.{key}", "missing")
        op_start = _clock(ctx, "operation_interval.start_time", op["start_time"])
        op_end = _clock(ctx, "operation_interval.end_time", op["end_time"])

    cfg = _object(ctx, "config", raw["config"])
    _no_unknown(ctx, "config", cfg, _CONFIG_KEYS)
    c = {**_CONFIG_DEFAULTS, **cfg}
    base_url = _base_url(ctx, c["base_url"], env)
    resources = _str_list(ctx, "config.resources", c["resources"])
    status_filter = tuple(
        dict.fromkeys(s.upper() for s in _str_list(ctx, "config.status_filter", c["status_filter"]))
    )
    if not status_filter:
        raise ctx.error("config.status_filter", "must name at least one status")
    past_days = _int(ctx, "config.past_days", c["past_days"], 0)
    future_days = _int(ctx, "config.future_days", c["future_days"], 0)
    timezone = _str(ctx, "config.timezone", c["timezone"]).strip()
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ctx.error("config.timezone", f"unknown time zone {timezone!r}") from None
    modality_map = _resource_mapping(
        ctx, "config.resource_modality_mapping", c["resource_modality_mapping"], "CS"
    )
    ae_map = _resource_mapping(
        ctx, "config.resource_ae_title_mapping", c["resource_ae_title_mapping"], "AE"
    )
    default_modality = _str(ctx, "config.default_modality", c["default_modality"])
    problem = vr_problem("CS", default_modality)
    if problem:
        raise ctx.error("config.default_modality", f"not a valid modality (CS): {problem}")
    strategy = _str(ctx, "config.fetch_strategy", c["fetch_strategy"])
    if strategy not in STRATEGIES:
        raise ctx.error(
            "config.fetch_strategy",
            f"unknown strategy {strategy!r} (known: {', '.join(STRATEGIES)})",
        )
    timeout = _number(ctx, "config.timeout", c["timeout"], 0, strict_min=True)
    retries = _int(ctx, "config.retries", c["retries"], 0)
    backoff = _number(ctx, "config.backoff_factor", c["backoff_factor"], 0)
    max_workers = _int(ctx, "config.max_workers", c["max_workers"], 1)
    max_cancel = _number(ctx, "config.max_cancel_fraction", c["max_cancel_fraction"], 0, 1)
    min_guard = _int(ctx, "config.min_cancel_guard_rows", c["min_cancel_guard_rows"], 0)

    mapping = raw.get("field_mapping")
    direct, extractions = _field_mapping(ctx, DEFAULT_FIELD_MAPPING if mapping is None else mapping)
    if not any(f == "patient_id" for _, f in direct) and not any(
        x.field == "patient_id" for _, xs in extractions for x in xs
    ):
        raise ctx.error("field_mapping", "nothing is mapped to patient_id")

    return DataSource(
        name=name,
        type=source_type,
        enabled=enabled,
        sync_interval=sync_interval,
        operation_start=op_start,
        operation_end=op_end,
        base_url=base_url,
        resources=resources,
        status_filter=status_filter,
        past_days=past_days,
        future_days=future_days,
        timezone=timezone,
        resource_modality_mapping=modality_map,
        resource_ae_title_mapping=ae_map,
        default_modality=default_modality,
        fetch_strategy=strategy,
        timeout=timeout,
        retries=retries,
        backoff_factor=backoff,
        max_workers=max_workers,
        max_cancel_fraction=max_cancel,
        min_cancel_guard_rows=min_guard,
        direct_mappings=direct,
        extractions=extractions,
    )


# ---------------------------------------------------------------- public API


def config_path(path: str | os.PathLike | None = None, env: Mapping[str, str] = os.environ) -> Path:
    """Explicit path, else `CALPENDO_MWL_CONFIG`, else ``config/calpendo.json``."""
    if path:
        return Path(path)
    from_env = (env.get(CONFIG_ENV) or "").strip()
    return Path(from_env) if from_env else DEFAULT_CONFIG_PATH


def parse_config(data: Any, env: Mapping[str, str] = os.environ) -> list[DataSource]:
    """Validate an already-parsed config document; every source, enabled or not."""
    ctx = _Ctx("config")
    data = _object(ctx, "", data)
    _no_unknown(ctx, "", data, ("data_sources",))
    if "data_sources" not in data:
        raise ctx.error("data_sources", "missing")
    raw_sources = data["data_sources"]
    if not isinstance(raw_sources, list):
        raise ctx.error("data_sources", f"must be a list, got {_type_name(raw_sources)}")
    sources: list[DataSource] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_sources):
        source = _source(i, raw, env)
        if source.name in seen:
            raise ConfigError(f"data source {source.name!r}: name: duplicate data source name")
        seen.add(source.name)
        sources.append(source)
    return sources


def load_config(path: str | None = None, env: Mapping[str, str] = os.environ) -> list[DataSource]:
    """Read and validate the config file; all sources (enabled and not)."""
    file = config_path(path, env)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {str(file)!r} not found (set {CONFIG_ENV} to the data-source config)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"config file {str(file)!r}: cannot read: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"config file {str(file)!r}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    try:
        return parse_config(data, env)
    except ConfigError as exc:
        raise ConfigError(f"config file {str(file)!r}: {exc}") from None


def enabled_sources(sources) -> list[DataSource]:
    return [s for s in sources if s.enabled]


def credentials(source: DataSource, env: Mapping[str, str] = os.environ) -> tuple[str, str]:
    """(username, password) from the environment; the password never appears in errors."""
    user = env.get(USERNAME_ENV) or ""
    password = env.get(PASSWORD_ENV) or ""
    for var, value in ((USERNAME_ENV, user), (PASSWORD_ENV, password)):
        if not value.strip():
            raise ConfigError(
                f"data source {source.name!r}: credentials: environment variable {var} is not set"
            )
    return user, password


@dataclass(frozen=True)
class Window:
    """[start, end) in the site zone: local midnights, aware."""

    start: dt.datetime
    end: dt.datetime
    timezone: str

    def contains(self, instant: dt.datetime) -> bool:
        return self.start <= instant < self.end


def _local_midnight(day: dt.date, tz: ZoneInfo) -> dt.datetime:
    # Round-trip through UTC so a (rare) nonexistent midnight is normalised.
    naive = dt.datetime.combine(day, dt.time(0))
    return naive.replace(tzinfo=tz).astimezone(dt.UTC).astimezone(tz)


def booking_window(source: DataSource, now: dt.datetime) -> Window:
    """[today - past_days, today + future_days + 1 day) at local midnights in the site zone.

    Day arithmetic is on calendar dates, so a DST change inside the window does not
    shift the bounds off midnight. A naive `now` is taken as site-local wall time.
    """
    tz = source.tz
    local_now = now.replace(tzinfo=tz) if now.tzinfo is None else now.astimezone(tz)
    today = local_now.date()
    start = _local_midnight(today - dt.timedelta(days=source.past_days), tz)
    end = _local_midnight(today + dt.timedelta(days=source.future_days + 1), tz)
    return Window(start=start, end=end, timezone=source.timezone)


def in_operation_interval(source: DataSource, local_time: dt.time) -> bool:
    """start <= t < end; start > end spans midnight; start == end means always."""
    start = dt.time(*source.operation_start)
    end = dt.time(*source.operation_end)
    t = local_time.replace(tzinfo=None)
    if start == end:
        return True
    if start < end:
        return start <= t < end
    return t >= start or t < end
