"""The ``config`` object of a ``type: "redcap"`` source.

Where a project keeps its scan visits: the API endpoint and the *name* of the
environment variable holding the project's token (never the token itself), the record
id field, the repeating instrument whose instances are visits (or none: a record or
record-event is the visit), the events of a longitudinal project, and the fields that
hold a visit's date, time, duration, scanner and status. Pylantir's REDCap keys
(``site_id``/``site``, ``protocol``) are accepted with their meaning said once
(`calpendo_assets.sources.redcap.pylantir`).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from calpendo_assets.core.settings import Code, MappingRules, SourceSettings
from calpendo_assets.core.types import Names, Text, server_url
from calpendo_assets.sources.redcap import pylantir
from calpendo_assets.sources.redcap.request import event_name, field_name
from mwl_service.vr import vr_problem

URL_ENV = "REDCAP_API_URL"
TOKEN_ENV = "REDCAP_API_TOKEN"
FIELD_PATTERN = r"[a-z][a-z0-9_]*"
FIELD_WHAT = "a REDCap field name (lower-case letters, digits and _, starting with a letter)"
# The visit states a status value maps to; EXCLUDED: not published (an existing row is
# discontinued as no longer in the source), like a Calpendo status outside the filter.
SCHEDULED, CANCELLED, EXCLUDED = "SCHEDULED", "CANCELLED", "EXCLUDED"
# Record keys the plugin fills itself (the shared mapping step reads them): never
# fetched as REDCap fields, and a REDCap field of the same name is not mapped.
OWN_PATHS = frozenset({
    "id", "status", "cancelled", "cancellationReason", "resource.name", "dateRange.start",
    "dateRange.finish", "durationInMinutes", "project.name",
})


def _env_name(value: str) -> str:
    if re.fullmatch(r"(?:[0-9A-Fa-f]{32}|[0-9A-Fa-f]{64})", value):
        # Said without the value: it is most likely the token itself.
        raise ValueError("must name the environment variable that holds the API token, "
                         "not hold the token: take it out of the config file")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise ValueError("must be an environment variable name (letters, digits and _)")
    return value


FieldName = Annotated[str, AfterValidator(field_name)]
EventNames = Annotated[Names, AfterValidator(lambda names: tuple(map(event_name, names)))]
SiteValue = Text | int


class RedcapSettings(SourceSettings):
    """Settings of a REDCap source: the project's API, and where its visits are."""

    url: str | None = Field(None, validate_default=True, description=(
        f"the API endpoint, ending in /api/; absent: env {URL_ENV} (the config wins)"))
    token_env: Annotated[str, AfterValidator(_env_name)] = Field(
        TOKEN_ENV, description="name of the environment variable holding the project's token")
    record_id_field: FieldName = Field("record_id", description="the record id field")
    repeat_instrument: FieldName | None = Field("mri", description=(
        "repeating instrument whose instances are visits; null: a record (or record-event) "
        "is the visit"))
    events: EventNames = Field((), description=(
        "unique event names to export (longitudinal); empty: all. Include the event "
        "holding the participant's fields"))
    date_field: FieldName = Field("mri_date", description="the visit's date (site-local)")
    time_field: FieldName | None = Field("mri_time", description=(
        "the visit's start time (site-local); null when date_field holds a date and time"))
    duration_minutes: Annotated[int, Field(ge=1)] = Field(
        60, description="minutes of a visit without a duration_field value")
    duration_field: FieldName | None = Field(None, description="minutes of each visit")
    resource: Text | None = Field(None, description=(
        "the scanner this project books (e.g. '3T MRI'); absent (and no resource_field): "
        "the data source's name"))
    resource_field: FieldName | None = Field(None, description=(
        "the field naming each visit's scanner (its raw value)"))
    status_field: FieldName | None = Field(None, description=(
        "the field holding a visit's status; absent: every visit is scheduled"))
    status_mapping: dict[Text, Literal["SCHEDULED", "CANCELLED", "EXCLUDED"]] = Field(
        default_factory=dict, description=(
            "raw status value -> SCHEDULED, CANCELLED (discontinued) or EXCLUDED (not "
            "published); other values and a blank status: SCHEDULED"))
    site_id: SiteValue | None = Field(None, description=(
        "Pylantir's site (0.3.0-0.3.5); templates read it as {site_id}"))
    site: SiteValue | None = Field(None, description=(
        "Pylantir's site (0.3.6); templates read it as {site}"))
    protocol: Text | dict[Text, Text] | None = Field(None, description=(
        "Pylantir's protocol: a name, or site -> name (and 'mapping': the coding scheme "
        "designator); the Scheduled Procedure Step Description of every visit"))

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None, info: ValidationInfo) -> str:
        value = server_url(value, info.context, URL_ENV, "the token comes from the "
                           "environment variable config.token_env names")
        return value + "/" if value.endswith("/api") else value

    @model_validator(mode="before")
    @classmethod
    def _protocol_code(cls, data: object) -> object:
        """Pylantir's protocol code (``protocol.mapping`` is its coding scheme) as the
        catch-all Scheduled Protocol Code, unless the config gives codes itself."""
        if not isinstance(data, dict) or "scheduled_protocol_codes" in data:
            return data
        site = data.get("site_id", data.get("site"))
        protocol = data.get("protocol")
        name = pylantir.protocol_of(protocol, None if site is None else str(site))
        designator = pylantir.designator_of(protocol)
        if not (isinstance(name, str) and isinstance(designator, str)):
            return data
        if vr_problem("SH", name) or vr_problem("SH", designator) or not designator:
            return data  # not a valid code: the note says there is none
        code = {"code_value": name, "coding_scheme_designator": designator,
                "code_meaning": name}
        return {**data, "scheduled_protocol_codes": {"": code}}

    @model_validator(mode="after")
    def _one_of_each(self) -> RedcapSettings:
        for one, other in (("resource", "resource_field"), ("site_id", "site")):
            if getattr(self, one) is not None and getattr(self, other) is not None:
                raise ValueError(f"give {one} or {other}, not both")
        if self.status_mapping and self.status_field is None:
            raise ValueError("status_mapping needs status_field (the field it reads)")
        return self

    # ------------------------------------------------------------------ derived values

    def scheduled_statuses(self) -> tuple[str, ...]:
        return (SCHEDULED,)

    def site_setting(self) -> tuple[str, str] | None:
        """(key, value) of Pylantir's site as the config spells it, or None."""
        for key in pylantir.SITE_KEYS:
            value = getattr(self, key)
            if value is not None:
                return key, str(value)
        return None

    def protocol_name(self) -> str | None:
        site = self.site_setting()
        return pylantir.protocol_of(self.protocol, site[1] if site else None)

    def own_paths(self) -> frozenset[str]:
        extra = {self.site_setting()[0]} if self.site_setting() else set()
        if self.protocol_name() is not None:
            extra.add(pylantir.PROTOCOL_PATH)
        return OWN_PATHS | extra

    def status_of(self, raw: object) -> str:
        """The visit state of a raw status value (case and spaces aside)."""
        text = "" if raw is None else str(raw).strip()
        folded = {key.strip().casefold(): state for key, state in self.status_mapping.items()}
        return folded.get(text.casefold(), SCHEDULED) if text else SCHEDULED

    def derived_meanings(self) -> dict[str, str]:
        start = (f"config.date_field {self.date_field!r} and time_field {self.time_field!r}"
                 if self.time_field else f"config.date_field {self.date_field!r} (date and time)")
        duration = (f"config.duration_field {self.duration_field!r}, else " if
                    self.duration_field else "") + f"config.duration_minutes ({self.duration_minutes})"
        status = (f"config.status_field {self.status_field!r} through config.status_mapping"
                  if self.status_field else "every visit is SCHEDULED (no config.status_field)")
        return {
            "scheduled_start_date": f"the visit's start from {start}, site-local, DST-safe DA",
            "scheduled_start_time": f"the visit's start from {start}, site-local, DST-safe TM",
            "scheduled_procedure_step_duration": f"the visit's duration: {duration}",
            "performed_procedure_step_status": f"the visit status: {status}; MPPS owns it after",
        }

    def mapping_rules(self) -> MappingRules:
        site = self.site_setting()
        implied: dict = pylantir.identifier_mapping(site[0]) if site else {}
        if self.protocol_name() is not None:
            implied = {**implied, pylantir.PROTOCOL_PATH: "scheduled_procedure_step_description"}
        return MappingRules(
            derived=self.derived_meanings(),
            other_targets=site is not None,
            implied=implied,
            implied_why="Pylantir's REDCap plugin filled itself, and so does this source",
            default={},
            record_path=(FIELD_PATTERN, FIELD_WHAT),
            own_paths=self.own_paths(),
        )

    def notes(self) -> tuple[str, ...]:
        """Pylantir's keys, each with its meaning here (logged once per process)."""
        site = self.site_setting()
        notes = []
        if site is not None:
            notes.append(pylantir.site_note(*site))
            notes.append(pylantir.window_note(self.status_field))
        if self.protocol is not None:
            name, designator = self.protocol_name(), pylantir.designator_of(self.protocol)
            code = self.scheduled_protocol_codes.get("")
            coded = name is not None and designator is not None and code == Code(
                code_value=name, coding_scheme_designator=designator, code_meaning=name)
            notes.append(pylantir.protocol_note(
                self.protocol, site[1] if site else None, name, designator, coded))
        return tuple(notes)
