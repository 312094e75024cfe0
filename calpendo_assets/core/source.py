"""A data source as loaded: its validated settings and its compiled field mapping.

`calpendo_assets.config` builds these from the config file; plugins, the mapping
step, the sync and the Dagster wiring read them. The settings stay one object (the
source type's `SourceSettings` model), never copied field by field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from zoneinfo import ZoneInfo

from calpendo_assets.core.settings import OperationInterval, SourceSettings

DEFAULT_SYNC_INTERVAL = 300


@dataclass(frozen=True)
class FieldExtraction:
    """One regex capture of a record path feeding one worklist field."""

    field: str
    pattern: re.Pattern
    group: int | str


@dataclass(frozen=True)
class FieldMap:
    """``field_mapping`` compiled: which record path feeds which worklist field."""

    direct: tuple[tuple[str, str], ...]  # (record path, worklist field)
    extractions: tuple[tuple[str, tuple[FieldExtraction, ...]], ...]
    templates: Mapping[str, str]  # worklist field -> template
    status_path: str = "status"
    duration_path: str = "durationInMinutes"
    # Every record path the mapping step reads (mapping order, unique), template
    # placeholders and the status and duration paths included: what a fetch asks for.
    record_paths: tuple[str, ...] = ()
    # `_extract` targets that are no worklist field: values only templates read.
    variables: tuple[str, ...] = ()
    # Units of mapped values that override ``config.units`` (Pylantir's
    # ``patient_weight_lb`` column is pounds whatever the config says).
    units: Mapping[str, str] = field(default_factory=dict)

    def mapped_fields(self) -> tuple[str, ...]:
        """Worklist fields the field mapping fills (templates and variables aside)."""
        fields = [f for _, f in self.direct]
        fields += [x.field for _, xs in self.extractions for x in xs
                   if x.field not in self.variables]
        return tuple(fields)


@dataclass(frozen=True)
class DataSource:
    """A validated data source, as the sync and the Dagster layer use it."""

    name: str
    type: str
    settings: SourceSettings  # the source type's config model instance
    mapping: FieldMap
    enabled: bool = True
    sync_interval: int = DEFAULT_SYNC_INTERVAL
    operation_interval: OperationInterval | None = None  # None: always
    notes: tuple[str, ...] = field(default=(), compare=False)  # config warnings

    @cached_property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.settings.timezone)
