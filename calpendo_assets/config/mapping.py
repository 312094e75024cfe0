"""``field_mapping``: its pydantic model, and its compilation into a `FieldMap`.

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

import dataclasses
import re
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, StringConstraints, Tag
from pydantic import ValidationInfo, field_validator

from calpendo_assets.core.errors import ConfigError
from calpendo_assets.core.source import FieldExtraction, FieldMap
from calpendo_assets.core.types import Model
from calpendo_assets.rows.clinical import TEMPLATE_FIELDS, template_record_paths
from calpendo_assets.rows.templates import validate_templates
from mwl_service.schema import MAPPABLE_FIELDS

PATH_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")

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

WorklistField = Literal[tuple([*MAPPABLE_FIELDS, *DERIVED_FIELDS])]  # type: ignore[valid-type]


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


# Tags in angle brackets: error messages drop them from paths.
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


def default_field_mapping() -> FieldMapping:
    return FieldMapping.model_validate(DEFAULT_FIELD_MAPPING)


class _Compiler:
    """Cross-key rules the models cannot see: paths, one target per field, patient_id,
    and the meaning of Pylantir's derived fields."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.direct: list[tuple[str, str]] = []
        self.extractions: list[tuple[str, tuple[FieldExtraction, ...]]] = []
        self.targeted: dict[str, str] = {}  # worklist field -> where it is mapped
        self.derived: list[str] = []
        self.paths: dict[str, str] = {}  # status_path / duration_path overrides

    def error(self, where: str, message: str) -> ConfigError:
        return ConfigError(f"{self.label}: {where}: {message}")

    def claim(self, target: str, where: str, path: str, extracted: bool) -> bool:
        """Record that `where` maps `target`; False when the sync derives it itself."""
        if target in self.targeted:
            already = self.targeted[target]
            raise self.error(where, f"worklist field {target!r} is already mapped by {already}")
        self.targeted[target] = where
        if target not in DERIVED_FIELDS:
            return True
        if target in _PATH_FIELDS and not extracted:
            self.paths[_PATH_FIELDS[target]] = path
            self.derived.append(f"{where} ({DERIVED_FIELDS[target]}, read from {path!r})")
        else:
            self.derived.append(f"{where} ({DERIVED_FIELDS[target]}; this mapping is not used)")
        return False

    def add(self, path: str, target: Any) -> None:
        where = f"field_mapping.{path}"
        if not PATH_PATTERN.fullmatch(path):
            raise self.error(where, "not a dotted record path (e.g. 'title', 'project.name')")
        if isinstance(target, Extract):
            items = [
                FieldExtraction(name, re.compile(spec.pattern), spec.group)
                for name, spec in target.extract.items()
                if self.claim(name, f"{where}._extract.{name}", path, True)
            ]
            if items:
                self.extractions.append((path, tuple(items)))
            return
        names = [target] if isinstance(target, str) else target
        for i, name in enumerate(names):
            at = where if isinstance(target, str) else f"{where}[{i}]"
            if self.claim(name, at, path, False):
                self.direct.append((path, name))

    def notes(self) -> tuple[str, ...]:
        if not self.derived:
            return ()
        return (
            f"{self.label}: field_mapping names fields the sync derives itself; they are "
            "accepted with this meaning: " + "; ".join(self.derived),
        )


def _record_paths(field_map: FieldMap) -> tuple[str, ...]:
    paths = [p for p, _ in field_map.direct] + [p for p, _ in field_map.extractions]
    paths += template_record_paths(field_map.templates)
    paths += [field_map.status_path, field_map.duration_path]
    return tuple(dict.fromkeys(paths))


def compile_mapping(label: str, mapping: FieldMapping) -> tuple[FieldMap, tuple[str, ...]]:
    """The compiled mapping of the source `label` names, and its config notes;
    a ConfigError names the key at fault."""
    compiler = _Compiler(label)
    for path, target in (mapping.model_extra or {}).items():
        compiler.add(path, target)
    for name in mapping.templates:
        compiler.claim(name, f"field_mapping._templates.{name}", "", True)
    if "patient_id" not in compiler.targeted:
        raise compiler.error("field_mapping", "nothing is mapped to patient_id")
    field_map = FieldMap(
        direct=tuple(compiler.direct),
        extractions=tuple(compiler.extractions),
        templates=dict(mapping.templates),
        **compiler.paths,
    )
    return dataclasses.replace(field_map, record_paths=_record_paths(field_map)), compiler.notes()
