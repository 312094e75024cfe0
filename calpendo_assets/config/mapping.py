"""``field_mapping``: its pydantic model, and its compilation into a `FieldMap`.

``field_mapping`` maps a record's dotted path to
  - a worklist field name (one of ``mwl_service.schema.MAPPABLE_FIELDS``),
  - a list of such names (the same value feeds several fields), or
  - ``{"_extract": {field: {"pattern": regex, "group": n-or-name}}}`` to pull several
    fields out of one source value (``group`` defaults to 1); a name that is no
    worklist field is a variable, which only templates read;
  - the key ``_templates`` maps worklist fields to text with ``{path}`` / ``{field}``
    placeholders.
A worklist field may be targeted only once. Pylantir's names (fields the sync derives,
its own columns) are accepted with one warning per source and given their meaning
(`calpendo_assets.config.targets`). The source type's `MappingRules` add what that
type says (its derived fields' meaning, mapping entries it implies, which record
paths it can fetch).
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Annotated, Any, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    ValidationInfo,
    field_validator,
)

from calpendo_assets.config.targets import (
    DERIVED_FIELDS,
    KNOWN_TARGETS,
    PATH_FIELDS,
    PYLANTIR_COLUMNS,
    PYLANTIR_UNITS,
    TargetName,
    WorklistField,
    is_name,
    unknown_field,
)
from calpendo_assets.core.errors import ConfigError
from calpendo_assets.core.settings import MappingRules
from calpendo_assets.core.source import FieldExtraction, FieldMap
from calpendo_assets.core.types import Model
from calpendo_assets.rows.clinical import TEMPLATE_FIELDS, template_record_paths
from calpendo_assets.rows.templates import placeholders, validate_templates

PATH_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")

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
    extract: dict[TargetName, Extraction] = Field(alias="_extract", min_length=1)


def _target_kind(value: Any) -> str | None:
    return {str: "<field>", list: "<fields>", dict: "<extract>"}.get(type(value))


# Tags in angle brackets: error messages drop them from paths.
Target = Annotated[
    Union[
        Annotated[TargetName, Tag("<field>")],
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
    variables, the meaning of Pylantir's names, and the source type's rules."""

    def __init__(self, label: str, rules: MappingRules, templates: dict[str, str]) -> None:
        self.label, self.rules = label, rules
        self.direct: list[tuple[str, str]] = []
        self.extractions: list[tuple[str, tuple[FieldExtraction, ...]]] = []
        self.templates = dict(templates)
        self.placeholders = {p for t in templates.values() for p in placeholders(t)}
        self.targeted: dict[str, str] = {}  # worklist field or variable -> where it is mapped
        self.variables: list[str] = []
        self.units: dict[str, str] = {}
        self.paths: dict[str, str] = {}  # status_path / duration_path overrides
        self.said: dict[str, list[str]] = {"derived": [], "columns": [], "others": [],
                                           "implied": []}

    def error(self, where: str, message: str) -> ConfigError:
        return ConfigError(f"{self.label}: {where}: {message}")

    def _name(self, target: str, where: str, extracted: bool) -> str | None:
        """Our name for `target`: a worklist field, a derived field or a variable; None
        for another type's name the rules accept (unused)."""
        if target in PYLANTIR_COLUMNS:
            ours, what = PYLANTIR_COLUMNS[target]
            self.said["columns"].append(f"{where} -> {target} ({ours}{', ' if what else ''}{what})")
            self.units.update(PYLANTIR_UNITS.get(target, {}))
            return ours
        if target in KNOWN_TARGETS:
            return target
        if extracted and target in self.placeholders and is_name(target):
            self.variables.append(target)
            return target
        if not extracted and self.rules.other_targets and is_name(target):
            self.said["others"].append(f"{where} -> {target}")
            return None
        raise self.error(where, unknown_field(target))

    def claim(self, target: str, where: str, path: str, extracted: bool) -> str | None:
        """Record that `where` maps `target`: the field (or variable) it fills, or None
        when it fills none (the sync derives it, or it is another type's name)."""
        name = self._name(target, where, extracted)
        if name is None:
            return None
        if name in self.targeted:
            already = self.targeted[name]
            raise self.error(where, f"worklist field {name!r} is already mapped by {already}")
        self.targeted[name] = where
        if name not in DERIVED_FIELDS:
            return name
        meaning = self.rules.derived.get(name) or DERIVED_FIELDS[name]
        if name in PATH_FIELDS and not extracted and name not in self.rules.derived:
            self.paths[PATH_FIELDS[name]] = path
            self.said["derived"].append(f"{where} ({meaning}, read from {path!r})")
        else:
            self.said["derived"].append(f"{where} ({meaning}; this mapping is not used)")
        return None

    def add(self, path: str, target: Any, where: str = "") -> None:
        where = where or f"field_mapping.{path}"
        if not PATH_PATTERN.fullmatch(path):
            raise self.error(where, "not a dotted record path (e.g. 'title', 'project.name')")
        if isinstance(target, Extract):
            items = []
            for name, spec in target.extract.items():
                ours = self.claim(name, f"{where}._extract.{name}", path, True)
                if ours is not None:
                    items.append(FieldExtraction(ours, re.compile(spec.pattern), spec.group))
            if items:
                self.extractions.append((path, tuple(items)))
            return
        names = [target] if isinstance(target, str) else target
        for i, name in enumerate(names):
            at = where if isinstance(target, str) else f"{where}[{i}]"
            ours = self.claim(name, at, path, False)
            if ours is not None:
                self.direct.append((path, ours))

    def imply(self, implied: FieldMapping) -> None:
        """The implied entries whose worklist fields the mapping leaves untargeted."""
        def free(name: str) -> bool:
            return PYLANTIR_COLUMNS.get(name, (name,))[0] not in self.targeted

        templates = {f: t for f, t in implied.templates.items() if free(f)}
        uses = {p for t in templates.values() for p in placeholders(t)}
        self.placeholders |= uses
        used: dict[str, Any] = {}
        for path, target in (implied.model_extra or {}).items():
            if isinstance(target, Extract):
                keep = {n: x for n, x in target.extract.items()
                        if (n in uses and n not in KNOWN_TARGETS) or (n in KNOWN_TARGETS and free(n))}
                target = target.model_copy(update={"extract": keep}) if keep else None
            elif isinstance(target, str) and not free(target):
                target = None
            if target is not None:
                self.add(path, target, f"field_mapping (implied) {path}")
                used[path] = target.model_dump(by_alias=True) if isinstance(target, Extract) else target
        for name, template in templates.items():
            self.claim(name, f"field_mapping (implied) _templates.{name}", "", True)
            self.templates[name] = template
        if templates:
            used["_templates"] = templates
        filled = [*templates, *(t for t in used.values() if isinstance(t, str))]
        if filled:
            self.said["implied"].append(
                f"field_mapping maps nothing to {', '.join(filled)}, which "
                f"{self.rules.implied_why}: they are mapped as {json.dumps(used, ensure_ascii=False)}")

    def notes(self) -> tuple[str, ...]:
        said, notes = self.said, []
        if said["derived"]:
            notes.append("field_mapping names fields the sync derives itself; they are "
                         "accepted with this meaning: " + "; ".join(said["derived"]))
        if said["columns"]:
            notes.append("field_mapping names Pylantir's worklist columns; here they are: "
                         + "; ".join(said["columns"]))
        if said["others"]:
            notes.append("field_mapping names targets that are no worklist field (Pylantir "
                         "stored nothing for them either); they are not used, and the fields they "
                         "name are not fetched unless a template reads them: "
                         + "; ".join(said["others"]))
        notes += said["implied"]
        return tuple(f"{self.label}: {note}" for note in notes)


def _record_paths(field_map: FieldMap) -> tuple[str, ...]:
    paths = [p for p, _ in field_map.direct] + [p for p, _ in field_map.extractions]
    paths += [p for p in template_record_paths(field_map.templates)
              if p not in field_map.variables]
    paths += [field_map.status_path, field_map.duration_path]
    return tuple(dict.fromkeys(paths))


def _check_paths(label: str, field_map: FieldMap, rules: MappingRules) -> None:
    """Every record path the source must fetch is one its type can fetch."""
    if rules.record_path is None:
        return
    pattern, what = rules.record_path
    for path in field_map.record_paths:
        if path not in rules.own_paths and not re.fullmatch(pattern, path):
            raise ConfigError(f"{label}: field_mapping: {path!r} is not {what}")


_NO_RULES = MappingRules()


def compile_mapping(
    label: str, mapping: FieldMapping, rules: MappingRules = _NO_RULES
) -> tuple[FieldMap, tuple[str, ...]]:
    """The compiled mapping of the source `label` names, and its config notes;
    a ConfigError names the key at fault."""
    compiler = _Compiler(label, rules, dict(mapping.templates))
    for path, target in (mapping.model_extra or {}).items():
        compiler.add(path, target)
    for name in mapping.templates:
        compiler.claim(name, f"field_mapping._templates.{name}", "", True)
    if rules.implied:
        compiler.imply(FieldMapping.model_validate(rules.implied))
    if "patient_id" not in compiler.targeted:
        raise compiler.error("field_mapping", "nothing is mapped to patient_id")
    field_map = FieldMap(
        direct=tuple(compiler.direct),
        extractions=tuple(compiler.extractions),
        templates=compiler.templates,
        variables=tuple(compiler.variables),
        units=compiler.units,
        **compiler.paths,
    )
    field_map = dataclasses.replace(field_map, record_paths=_record_paths(field_map))
    _check_paths(label, field_map, rules)
    return field_map, compiler.notes()
