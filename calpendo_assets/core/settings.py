"""The per-source keys every source type shares: the base of each type's ``config`` model.

A source type's plugin (`calpendo_assets.sources.base.SourcePlugin`) declares its
``config`` model as a subclass of `SourceSettings`; the keys below then come for
free: the site zone, the resources in scope and their modality and AE titles, the
window in days, the mass-cancellation guard, units and codes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StringConstraints

from calpendo_assets.core.types import (
    AETitles,
    Count,
    Hour,
    Minute,
    Modality,
    Model,
    Names,
    Text,
    TimeZone,
    unique_resources,
)


@dataclass(frozen=True)
class MappingRules:
    """What a source type's settings say about its ``field_mapping``; the config
    loader applies them when it compiles the mapping (a type without rules of its
    own gets these defaults).
    """

    # Worklist fields the sync derives itself -> their meaning for this type. A
    # mapping to one of these is never read as the path the value comes from: the
    # type's own config says where it comes from.
    derived: Mapping[str, str] = field(default_factory=dict)
    # Targets that are no worklist field are accepted, unused, with a note (Pylantir
    # ignored them). False: such a target is an error, as a typo should be.
    other_targets: bool = False
    # ``field_mapping`` entries (JSON form) for worklist fields the source's own
    # mapping leaves untargeted, and why (the note that says so).
    implied: Mapping[str, Any] = field(default_factory=dict)
    implied_why: str = ""
    # The mapping used when the source has none; None: the shared default mapping.
    default: Mapping[str, Any] | None = None
    # What every record path the source must fetch looks like: (regex, description);
    # ``own_paths`` are filled by the type itself, never fetched.
    record_path: tuple[str, str] | None = None
    own_paths: frozenset[str] = frozenset()


class OperationInterval(Model):
    """Local hours in which the schedule and sensor run; equal bounds mean always."""

    start_time: tuple[Hour, Minute] = Field(description="[hour, minute], site-local")
    end_time: tuple[Hour, Minute] = Field(description="[hour, minute]; before start spans midnight")


class Units(Model):
    """Units of the weight and size values the field mapping reads."""

    patient_weight: Literal["kg", "lb"] = "kg"
    patient_size: Literal["m", "cm", "in"] = "m"


# A code rule's key: a project name or its prefix; "" is the catch-all rule.
ProjectRule = Annotated[str, StringConstraints(strip_whitespace=True)]


class Code(Model):
    """A DICOM code (code sequence item)."""

    code_value: Text
    coding_scheme_designator: Text
    code_meaning: Text
    coding_scheme_version: Text | None = Field(
        None, description="Coding Scheme Version, when the designator alone is ambiguous"
    )


class SourceSettings(Model):
    """The ``config`` keys every source type shares (not about fetching)."""

    timezone: TimeZone = Field("America/Edmonton", description="site zone of booking times")
    resources: Names = Field(
        (), description="resource names in scope (case-insensitive prefixes); empty = all"
    )
    past_days: Count = Field(1, description="window starts this many days before today")
    future_days: Count = Field(7, description="window ends this many days after today")
    resource_modality_mapping: Annotated[
        dict[Text, Modality], AfterValidator(unique_resources)
    ] = Field(default_factory=dict, description="resource name -> modality (CS)")
    resource_ae_title_mapping: Annotated[
        dict[Text, AETitles], AfterValidator(unique_resources)
    ] = Field(default_factory=dict, description="resource name -> station AE title(s)")
    default_modality: Modality = Field("MR", description="modality of unmapped resources")
    max_cancel_fraction: Annotated[float, Field(ge=0, le=1)] = Field(
        0.5, description="largest share of the window one sync may cancel"
    )
    min_cancel_guard_rows: Count = Field(
        5, description="windows with fewer active rows skip the fraction guard"
    )
    units: Units = Field(default_factory=Units)
    scheduled_protocol_codes: dict[ProjectRule, Code] = Field(
        default_factory=dict,
        description='project name (prefix; "" matches every project) -> Scheduled Protocol Code',
    )
    requested_procedure_codes: dict[ProjectRule, Code] = Field(
        default_factory=dict,
        description='project name (prefix; "" matches every project) -> Requested Procedure Code',
    )

    def scheduled_statuses(self) -> tuple[str, ...]:
        """Upper-case booking statuses published as SCHEDULED; empty: every status that
        is not cancelled or denied (a type without a status filter)."""
        return ()

    def notes(self) -> tuple[str, ...]:
        """Warnings about accepted-but-unused keys, logged once per load."""
        return ()

    def mapping_rules(self) -> MappingRules:
        """How this type's ``field_mapping`` is compiled (see `MappingRules`)."""
        return MappingRules()
