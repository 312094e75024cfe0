"""Data-source configuration: pydantic models of the config file, loading, the window.

The file is JSON, its path from env ``CALPENDO_MWL_CONFIG`` (default
``config/calpendo.json`` relative to the current directory), in the seed's format::

    {"data_sources": [
      {"name": "mri3t", "type": "calpendo", "enabled": true, "sync_interval": 300,
       "operation_interval": {"start_time": [6, 0], "end_time": [22, 0]},
       "config": {"base_url": "http://127.0.0.1:8089", "resources": ["3T MRI"], ...},
       "field_mapping": {"title": {"_extract": {...}}, "project.name": "study_description"}}
    ]}

The models below are the reference: `config/calpendo-mwl.schema.json` is generated from
them (`python -m calpendo_assets.config --schema`) and the README's configuration
reference lists the same keys. Each source type (`calpendo_assets.sources.registry`)
brings the model of its ``config`` object, a subclass of `SourceSettings` (the keys
every type shares). Everything is validated before any request is made; a
`ConfigError` names the file, the data source and the dotted key at fault
(``data source 'mri3t': config.timezone: unknown time zone 'Mars/Base'``). Unknown keys
are errors, so a typo is never silently ignored.

``field_mapping`` maps a record's dotted path to
  - a worklist field name (one of ``mwl_service.schema.MAPPABLE_FIELDS``),
  - a list of such names (the same value feeds several fields), or
  - ``{"_extract": {field: {"pattern": regex, "group": n-or-name}}}`` to pull several
    fields out of one source value (``group`` defaults to 1);
  - the key ``_templates`` maps worklist fields to text with ``{path}`` / ``{field}``
    placeholders.
A worklist field may be targeted only once. Pylantir's derived field names are
accepted with one warning per source and given their meaning (`DERIVED_FIELDS`).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
)

from calpendo_assets.rows.clinical import TEMPLATE_FIELDS
from calpendo_assets.rows.clinical import calpendo_paths as template_calpendo_paths
from calpendo_assets.rows.templates import validate_templates
from calpendo_assets.sources.base import Credentials
from mwl_service.schema import MANUAL_SOURCE, MAPPABLE_FIELDS, MAX_STATION_AE_TITLES
from mwl_service.vr import vr_problem

log = logging.getLogger(__name__)

CONFIG_ENV = "CALPENDO_MWL_CONFIG"
DEFAULT_CONFIG_PATH = Path("config") / "calpendo.json"
URL_ENV = "CALPENDO_API_URL"
USERNAME_ENV = "CALPENDO_USERNAME"
PASSWORD_ENV = "CALPENDO_PASSWORD"

MIN_SYNC_INTERVAL = 60
DEFAULT_SYNC_INTERVAL = 300
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PATH_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")

# Worklist field names Pylantir configs target that the sync derives itself. Each is
# accepted (one warning per source) with the meaning given here, never copied blindly.
DERIVED_FIELDS: dict[str, str] = {
    "scheduled_start_date": "the booking's start (dateRange.start, else formattedName), "
    "converted DST-safely to site-local DA",
    "scheduled_start_time": "the booking's start (dateRange.start, else formattedName), "
    "converted DST-safely to site-local TM",
    "scheduled_procedure_step_duration": "the booking's duration in minutes",
    "performed_procedure_step_status": "the booking status through the status mapping "
    "(status_filter -> SCHEDULED, CANCELLED/DENIED -> DISCONTINUED; MPPS owns it after)",
}
# Derived fields whose mapped path is honoured as the source of what they derive from.
_PATH_FIELDS = {
    "scheduled_procedure_step_duration": "duration_path",
    "performed_procedure_step_status": "status_path",
}

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


class ConfigError(ValueError):
    """A configuration problem; the message names the file, source and key path."""


# ---------------------------------------------------------------- value types


def _vr_value(vr: str, what: str):
    def check(value: str) -> str:
        problem = vr_problem(vr, value)
        if problem:
            raise ValueError(f"{value!r} is not a valid {vr} value ({what}): {problem}")
        return value

    return check


def _ae_title(value: str) -> str:
    # A backslash would split the value when several titles are joined (DICOM multi-value).
    if "\\" in value or re.search(r"[\x00-\x1f\x7f]", value):
        raise ValueError(f"{value!r} is not a valid AE value: backslash or control character")
    return _vr_value("AE", "an AE title")(value)


def _station_count(value: str | list[str]) -> str | list[str]:
    if isinstance(value, list) and len(value) > MAX_STATION_AE_TITLES:
        raise ValueError(f"{len(value)} AE titles (max {MAX_STATION_AE_TITLES} per resource)")
    return value


def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return value


def _names(value: str | list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([value] if isinstance(value, str) else value))


def _unique_resources(mapping: dict[str, Any]) -> dict[str, Any]:
    seen: dict[str, str] = {}
    for key in mapping:
        folded = key.casefold()
        if folded in seen:
            raise ValueError(f"{key!r} duplicates {seen[folded]!r} (resource names are case-insensitive)")
        seen[folded] = key
    return mapping


def one_or_many(item: Any, what: str) -> Any:
    """``item`` or a list of them (tagged, so an error names one reading, not two)."""
    return Annotated[
        Union[Annotated[item, Tag("<one>")], Annotated[list[item], Tag("<many>")]],
        Discriminator(
            lambda v: "<many>" if isinstance(v, list) else "<one>" if isinstance(v, str) else None,
            custom_error_type="one_or_many",
            custom_error_message=f"must be {what} or a list of them",
        ),
    ]


Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Names = Annotated[one_or_many(Text, "a string"), AfterValidator(_names)]
Modality = Annotated[Text, AfterValidator(_vr_value("CS", "a modality"))]
AETitle = Annotated[Text, AfterValidator(_ae_title)]
TimeZone = Annotated[Text, AfterValidator(_time_zone)]
Hour = Annotated[int, Field(ge=0, le=23)]
Minute = Annotated[int, Field(ge=0, le=59)]
Count = Annotated[int, Field(ge=0)]
WorklistField = Literal[tuple([*MAPPABLE_FIELDS, *DERIVED_FIELDS])]  # type: ignore[valid-type]


class Model(BaseModel):
    """Strict JSON types, unknown keys refused, immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class OperationInterval(Model):
    """Local hours in which the schedule and sensor run; equal bounds mean always."""

    start_time: tuple[Hour, Minute] = Field(description="[hour, minute], site-local")
    end_time: tuple[Hour, Minute] = Field(description="[hour, minute]; before start spans midnight")


class Units(Model):
    """Units of the weight and size values the field mapping reads."""

    patient_weight: Literal["kg", "lb"] = "kg"
    patient_size: Literal["m", "cm", "in"] = "m"


class Code(Model):
    """A DICOM code (code sequence item)."""

    code_value: Text
    coding_scheme_designator: Text
    code_meaning: Text


class SourceSettings(Model):
    """The ``config`` keys every source type shares (not about fetching)."""

    timezone: TimeZone = Field("America/Edmonton", description="site zone of booking times")
    resources: Names = Field(
        (), description="resource names in scope (case-insensitive prefixes); empty = all"
    )
    past_days: Count = Field(1, description="window starts this many days before today")
    future_days: Count = Field(7, description="window ends this many days after today")
    resource_modality_mapping: Annotated[
        dict[Text, Modality], AfterValidator(_unique_resources)
    ] = Field(default_factory=dict, description="resource name -> modality (CS)")
    resource_ae_title_mapping: Annotated[
        dict[Text, Annotated[one_or_many(AETitle, "an AE title"), AfterValidator(_station_count)]],
        AfterValidator(_unique_resources),
    ] = Field(default_factory=dict, description="resource name -> station AE title(s)")
    default_modality: Modality = Field("MR", description="modality of unmapped resources")
    max_cancel_fraction: Annotated[float, Field(ge=0, le=1)] = Field(
        0.5, description="largest share of the window one sync may cancel"
    )
    min_cancel_guard_rows: Count = Field(
        5, description="windows with fewer active rows skip the fraction guard"
    )
    units: Units = Field(default_factory=Units)
    scheduled_protocol_codes: dict[Text, Code] = Field(
        default_factory=dict, description="project name -> Scheduled Protocol Code"
    )
    requested_procedure_codes: dict[Text, Code] = Field(
        default_factory=dict, description="project name -> Requested Procedure Code"
    )

    def scheduled_statuses(self) -> tuple[str, ...]:
        """Upper-case booking statuses published as SCHEDULED; empty: every status that
        is not cancelled or denied (a type without a status filter)."""
        return ()

    def notes(self) -> tuple[str, ...]:
        """Warnings about accepted-but-unused keys, logged once per load."""
        return ()


class Extraction(Model):
    """One regex capture feeding one worklist field."""

    pattern: Annotated[str, StringConstraints(min_length=1)]
    group: Annotated[
        Union[Annotated[int, Tag("<number>")], Annotated[str, Tag("<name>")]],
        Discriminator(
            lambda v: "<name>" if isinstance(v, str)
            else "<number>" if isinstance(v, int) and not isinstance(v, bool) else None,
            custom_error_type="group",
            custom_error_message="must be a group number or name",
        ),
    ] = Field(1, description="group number or name")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
        return value

    @field_validator("group")
    @classmethod
    def _in_pattern(cls, value: int | str, info: ValidationInfo) -> int | str:
        text = info.data.get("pattern")
        if text is None:
            return value
        pattern = re.compile(text)
        if isinstance(value, str) and value not in pattern.groupindex:
            named = ", ".join(pattern.groupindex) or "none"
            raise ValueError(f"no group named {value!r} in pattern (named groups: {named})")
        if isinstance(value, int) and not 0 <= value <= pattern.groups:
            raise ValueError(f"group {value} not in pattern (it has {pattern.groups} groups)")
        return value


class Extract(Model):
    extract: dict[WorklistField, Extraction] = Field(alias="_extract", min_length=1)


def _target_kind(value: Any) -> str | None:
    return {str: "<field>", list: "<fields>", dict: "<extract>"}.get(type(value))


# Tags in angle brackets: `_dotted` drops them from error paths.
Target = Annotated[
    Union[
        Annotated[WorklistField, Tag("<field>")],
        Annotated[list[WorklistField], Field(min_length=1), Tag("<fields>")],
        Annotated[Extract, Tag("<extract>")],
    ],
    Discriminator(
        _target_kind,
        custom_error_type="target",
        custom_error_message='must be a worklist field, a list of them or {"_extract": ...}',
    ),
]


class FieldMapping(BaseModel):
    """Record path -> worklist field(s); ``_templates``: field -> text with placeholders."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)
    templates: dict[WorklistField, str] = Field(default_factory=dict, alias="_templates")
    __pydantic_extra__: dict[str, Target]  # type: ignore[assignment]

    @field_validator("templates")
    @classmethod
    def _placeholders(cls, value: dict[str, str]) -> dict[str, str]:
        return dict(validate_templates(value, TEMPLATE_FIELDS))


class SourceBase(Model):
    """One entry of ``data_sources``; ``type`` picks the plugin and its ``config`` model."""

    name: Annotated[str, StringConstraints(min_length=1)] = Field(
        description="letters, digits and _; prefixes the Dagster asset keys"
    )
    enabled: bool = True
    sync_interval: Annotated[int, Field(ge=MIN_SYNC_INTERVAL)] = Field(
        DEFAULT_SYNC_INTERVAL, description="seconds between scheduled syncs"
    )
    operation_interval: OperationInterval | None = None
    field_mapping: FieldMapping | None = Field(
        None, description="absent: the default mapping (title -> patient ID and name, ...)"
    )

    @field_validator("name")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not NAME_PATTERN.fullmatch(value):
            raise ValueError(
                f"{value!r} cannot prefix Dagster asset keys (letters, digits and _, "
                "not starting with a digit)"
            )
        return value


def _source_kind(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else None
    return f"<{kind}>" if isinstance(kind, str) else None


@functools.cache
def file_model() -> type[BaseModel]:
    """The model of the whole file, built from the registered source types."""
    from calpendo_assets.sources.registry import PLUGINS

    members = []
    for type_name, plugin in PLUGINS.items():
        model = create_model(
            f"{plugin.config_model.__name__.removesuffix('Settings')}Source",
            __base__=SourceBase,
            __doc__=f"A data source of type {type_name!r}.",
            type=(Literal[type_name], ...),
            config=(plugin.config_model, ...),
        )
        members.append(Annotated[model, Tag(f"<{type_name}>")])
    source = Annotated[Union[tuple(members)], Discriminator(_source_kind)]

    class ConfigFile(Model):
        """The calpendo-mwl data-source config file (CALPENDO_MWL_CONFIG)."""

        model_config = ConfigDict(title="calpendo-mwl configuration")
        data_sources: list[source]  # type: ignore[valid-type]

    return ConfigFile


def json_schema() -> dict:
    """The JSON Schema shipped as config/calpendo-mwl.schema.json."""
    schema = file_model().model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


# ---------------------------------------------------------------- the loaded form


@dataclass(frozen=True)
class FieldExtraction:
    field: str
    pattern: re.Pattern
    group: int | str


@dataclass(frozen=True)
class DataSource:
    """A validated data source, as the sync and the Dagster layer use it."""

    name: str
    type: str
    enabled: bool
    sync_interval: int
    operation_start: tuple[int, int]
    operation_end: tuple[int, int]
    settings: SourceSettings  # the plugin's config model instance
    timezone: str
    resources: tuple[str, ...]
    status_filter: tuple[str, ...]  # empty: every status that is not cancelled/denied
    past_days: int
    future_days: int
    resource_modality_mapping: dict[str, str]
    resource_ae_title_mapping: dict[str, str]  # several titles joined by "\\"
    default_modality: str
    max_cancel_fraction: float
    min_cancel_guard_rows: int
    units: Units
    scheduled_protocol_codes: dict[str, Code]
    requested_procedure_codes: dict[str, Code]
    templates: dict[str, str]
    direct_mappings: tuple[tuple[str, str], ...]
    extractions: tuple[tuple[str, tuple[FieldExtraction, ...]], ...]
    status_path: str = "status"
    duration_path: str = "durationInMinutes"
    notes: tuple[str, ...] = field(default=(), compare=False)  # config warnings

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def plugin(self):
        from calpendo_assets.sources.registry import plugin_for

        return plugin_for(self.type)

    def record_paths(self) -> tuple[str, ...]:
        """The dotted record paths the mapping reads (mapping order, unique), including
        template placeholders that are not worklist fields."""
        paths = [p for p, _ in self.direct_mappings] + [p for p, _ in self.extractions]
        paths += template_calpendo_paths(self.templates)
        paths += [self.status_path, self.duration_path]
        return tuple(dict.fromkeys(paths))

    def mapped_fields(self) -> tuple[str, ...]:
        """Worklist fields the field mapping fills."""
        fields = [f for _, f in self.direct_mappings]
        fields += [x.field for _, xs in self.extractions for x in xs]
        return tuple(fields)


def _compile_mapping(label: str, mapping: FieldMapping) -> dict[str, Any]:
    """Cross-key rules the models cannot see: paths, one target per field, patient_id,
    and the meaning of Pylantir's derived fields."""

    def error(path: str, message: str) -> ConfigError:
        return ConfigError(f"{label}: {path}: {message}")

    direct: list[tuple[str, str]] = []
    extractions: list[tuple[str, tuple[FieldExtraction, ...]]] = []
    targeted: dict[str, str] = {}
    derived: list[str] = []
    paths: dict[str, str] = {}

    def claim(target: str, where: str, path: str, extracted: bool) -> bool:
        if target in targeted:
            raise error(where, f"worklist field {target!r} is already mapped by {targeted[target]}")
        targeted[target] = where
        if target in DERIVED_FIELDS:
            if target in _PATH_FIELDS and not extracted:
                paths[_PATH_FIELDS[target]] = path
                derived.append(f"{where} ({DERIVED_FIELDS[target]}, read from {path!r})")
            else:
                derived.append(f"{where} ({DERIVED_FIELDS[target]}; this mapping is not used)")
            return False
        return True

    for path, target in (mapping.model_extra or {}).items():
        where = f"field_mapping.{path}"
        if not _PATH_PATTERN.fullmatch(path):
            raise error(where, "not a dotted record path (e.g. 'title', 'project.name')")
        if isinstance(target, Extract):
            items = []
            for name, spec in target.extract.items():
                if claim(name, f"{where}._extract.{name}", path, True):
                    items.append(FieldExtraction(name, re.compile(spec.pattern), spec.group))
            if items:
                extractions.append((path, tuple(items)))
        else:
            names = [target] if isinstance(target, str) else target
            for i, name in enumerate(names):
                at = where if isinstance(target, str) else f"{where}[{i}]"
                if claim(name, at, path, False):
                    direct.append((path, name))
    for name in mapping.templates:
        claim(name, f"field_mapping._templates.{name}", "", True)
    if "patient_id" not in targeted:
        raise error("field_mapping", "nothing is mapped to patient_id")
    notes = []
    if derived:
        notes.append(
            f"{label}: field_mapping names fields the sync derives itself; they are "
            "accepted with this meaning: " + "; ".join(derived)
        )
    return {
        "direct_mappings": tuple(direct),
        "extractions": tuple(extractions),
        "templates": dict(mapping.templates),
        "notes": tuple(notes),
        **paths,
    }


def _data_source(model: SourceBase) -> DataSource:
    label = f"data source {model.name!r}"
    settings: SourceSettings = model.config  # type: ignore[attr-defined]
    mapping = model.field_mapping or FieldMapping.model_validate(DEFAULT_FIELD_MAPPING)
    compiled = _compile_mapping(label, mapping)
    op = model.operation_interval
    notes = compiled.pop("notes") + tuple(f"{label}: {note}" for note in settings.notes())
    return DataSource(
        name=model.name,
        type=model.type,  # type: ignore[attr-defined]
        enabled=model.enabled,
        sync_interval=model.sync_interval,
        operation_start=op.start_time if op else (0, 0),
        operation_end=op.end_time if op else (0, 0),
        settings=settings,
        timezone=settings.timezone,
        resources=settings.resources,
        status_filter=settings.scheduled_statuses(),
        past_days=settings.past_days,
        future_days=settings.future_days,
        resource_modality_mapping=dict(settings.resource_modality_mapping),
        resource_ae_title_mapping={
            k: v if isinstance(v, str) else "\\".join(v)
            for k, v in settings.resource_ae_title_mapping.items()
        },
        default_modality=settings.default_modality,
        max_cancel_fraction=settings.max_cancel_fraction,
        min_cancel_guard_rows=settings.min_cancel_guard_rows,
        units=settings.units,
        scheduled_protocol_codes=dict(settings.scheduled_protocol_codes),
        requested_procedure_codes=dict(settings.requested_procedure_codes),
        notes=notes,
        **compiled,
    )


# ---------------------------------------------------------------- error messages


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part.startswith("<") and part != "[key]":
            out += f".{part}" if out else part
    return out


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
_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}


def _json_kind(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
            dict: "object"}.get(type(value), "null" if value is None else type(value).__name__)


def _got(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return f", got {_json_kind(value)}"
    return f", got {_json_kind(value)} {value!r}"


def _allowed_keys(model: type[BaseModel] | None) -> str:
    if model is None:
        return ""
    keys = [f.alias or name for name, f in model.model_fields.items()]
    return f" (allowed: {', '.join(keys)})"


def _model_at(raw_source: Any, path: tuple) -> type[BaseModel] | None:
    """The model that owns the object at `path` of a source, for "allowed keys"."""
    from calpendo_assets.sources.registry import PLUGINS

    plugin = PLUGINS.get(raw_source.get("type")) if isinstance(raw_source, dict) else None
    where = tuple(p for p in path if not (isinstance(p, str) and p.startswith("<")))
    return {
        (): SourceBase if plugin else None,
        ("config",): plugin.config_model if plugin else None,
        ("operation_interval",): OperationInterval,
        ("config", "units"): Units,
    }.get(where[:-1])


def _message(error: dict, raw_source: Any, path: tuple) -> str:
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "missing":
        return "missing"
    if kind == "extra_forbidden":
        model = _model_at(raw_source, path)
        if model is SourceBase:
            return "unknown key" + _allowed_keys(model).replace(")", ", type, config)")
        return "unknown key" + _allowed_keys(model)
    if kind == "union_tag_invalid":
        from calpendo_assets.sources.registry import PLUGINS

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


def _config_error(exc: ValidationError, data: Any) -> ConfigError:
    """The first problem, as "<source label>: <dotted key>: <what is wrong>"."""
    errors = exc.errors(include_url=False)
    # An unknown key is usually the typo behind a "missing" one: name it first.
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(error["loc"])
    sources = data.get("data_sources") if isinstance(data, dict) else None
    if loc[:1] == ("data_sources",) and len(loc) >= 2 and isinstance(loc[1], int):
        raw = sources[loc[1]] if isinstance(sources, list) and loc[1] < len(sources) else None
        name = raw.get("name") if isinstance(raw, dict) else None
        named = isinstance(name, str) and bool(NAME_PATTERN.fullmatch(name))
        label = f"data source {name!r}" if named else f"data source #{loc[1] + 1}"
        path = loc[2:]
        if error["type"] == "union_tag_not_found" and isinstance(raw, dict):
            path = ("type",)
        elif error["type"] == "union_tag_invalid":
            path = ("type",)
    else:
        label, path, raw = "config", loc, None
        if error["type"] == "extra_forbidden":
            return ConfigError(f"{label}: {_dotted(path)}: unknown key (allowed: data_sources)")
    if error["type"] in ("model_type", "dict_type") and not path:
        message = f"must be an object, got {_json_kind(error.get('input'))}"
    elif error["type"] == "union_tag_not_found" and not isinstance(raw, dict):
        message = f"must be an object, got {_json_kind(error.get('input'))}"
    elif error["type"] == "union_tag_not_found" and path == ("type",) and "type" in raw:
        message = f"must be a string{_got(raw['type'])}"
    else:
        message = _message(error, raw, path)
    dotted = _dotted(path)
    return ConfigError(f"{label}: {dotted}: {message}" if dotted else f"{label}: {message}")


# ---------------------------------------------------------------- public API


def config_path(path: str | os.PathLike | None = None, env: Mapping[str, str] = os.environ) -> Path:
    """Explicit path, else `CALPENDO_MWL_CONFIG`, else ``config/calpendo.json``."""
    if path:
        return Path(path)
    from_env = (env.get(CONFIG_ENV) or "").strip()
    return Path(from_env) if from_env else DEFAULT_CONFIG_PATH


def parse_config(
    data: Any, env: Mapping[str, str] = os.environ, base_dir: Path | None = None
) -> list[DataSource]:
    """Validate an already-parsed config document; every source, enabled or not.

    `base_dir` is where relative paths in the config (a file source's ``path``) start:
    the config file's directory when loaded from a file.
    """
    context = {"env": env, "base_dir": base_dir or Path.cwd()}
    try:
        # JSON mode: JSON's own types, so "300" is no count and [6, 0] is a clock.
        document = file_model().model_validate_json(json.dumps(data), context=context)
    except ValidationError as exc:
        raise _config_error(exc, data) from None
    sources: list[DataSource] = []
    seen: set[str] = set()
    for model in document.data_sources:
        source = _data_source(model)
        if source.name in seen:
            raise ConfigError(f"data source {source.name!r}: name: duplicate data source name")
        if source.name.casefold() == MANUAL_SOURCE:
            raise ConfigError(
                f"data source {source.name!r}: name: reserved for the worklist's manual items "
                "(walk-ins made over mwl-api); choose another name"
            )
        seen.add(source.name)
        sources.append(source)
    return sources


def json_document(text: str, where: str, error: type[Exception]) -> Any:
    """Parsed JSON; `error` names `where` and the line and column of a syntax error
    (never the text: a file of entries holds participant names)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{where}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


def load_config(path: str | None = None, env: Mapping[str, str] = os.environ) -> list[DataSource]:
    """Read and validate the config file; all sources (enabled and not).

    Config warnings (Pylantir keys given their meaning here) are logged once per
    process for a file as it is: Dagster loads the code location several times.
    """
    file = config_path(path, env)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {str(file)!r} not found (set {CONFIG_ENV} to the data-source config)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"config file {str(file)!r}: cannot read: {exc.strerror}") from None
    data = json_document(text, f"config file {str(file)!r}", ConfigError)
    try:
        sources = parse_config(data, env, base_dir=file.resolve().parent)
    except ConfigError as exc:
        raise ConfigError(f"config file {str(file)!r}: {exc}") from None
    seen = (str(file.resolve()), hashlib.sha256(text.encode()).hexdigest())
    for source in sources:
        for note in source.notes:
            if (seen, note) not in _LOGGED_NOTES:
                _LOGGED_NOTES.add((seen, note))
                log.warning(f"config file {str(file)!r}: {note}")
    return sources


# (file, content digest), note: what load_config has logged in this process.
_LOGGED_NOTES: set[tuple[tuple[str, str], str]] = set()


def forget_logged_notes() -> None:
    """Log every config note again at the next load (tests that read the log)."""
    _LOGGED_NOTES.clear()


def enabled_sources(sources) -> list[DataSource]:
    return [s for s in sources if s.enabled]


def env_credentials(source: DataSource, env: Mapping[str, str] = os.environ) -> Credentials:
    """CALPENDO_USERNAME / CALPENDO_PASSWORD; the password never appears in errors."""
    user = env.get(USERNAME_ENV) or ""
    password = env.get(PASSWORD_ENV) or ""
    for var, value in ((USERNAME_ENV, user), (PASSWORD_ENV, password)):
        if not value.strip():
            raise ConfigError(
                f"data source {source.name!r}: credentials: environment variable {var} is not set"
            )
    return Credentials(user, password)


# ---------------------------------------------------------------- window and schedule


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


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--schema"]:
        raise SystemExit("usage: python -m calpendo_assets.config --schema > config/calpendo-mwl.schema.json")
    print(json.dumps(json_schema(), indent=2))
