"""The simulated REDCap project: instruments, fields, events, and what the API says about it.

A youth imaging study in Pylantir's naming: a non-repeating ``participant`` instrument
(record id, study and family ids, names, date and year of birth, sex, weight in lb) and
an ``mri`` instrument whose instances are scan visits (date, time, scanner, protocol,
status). Classic projects have one (unnamed) event; longitudinal ones keep the
participant instrument on ``baseline_arm_1`` and the mri instrument on ``t1_arm_1`` ..
``t3_arm_1``. ``repeating`` makes the mri instrument repeat (within each event); without
it a record (classic) or a record-event (longitudinal) is one visit.
"""

from __future__ import annotations

from dataclasses import dataclass

PARTICIPANT_FORM = "participant"
MRI_FORM = "mri"
CLASSIC_EVENT = "event_1_arm_1"  # REDCap's one event of a classic project (never exported)
BASELINE_EVENT = "baseline_arm_1"
VISIT_EVENTS = ("t1_arm_1", "t2_arm_1", "t3_arm_1")

SEX_CHOICES = "1, Male | 2, Female | 3, Other"
SCANNER_CHOICES = "1, 3T MRI | 2, Mock Scanner"
STATUS_CHOICES = "1, Scheduled | 2, Completed | 3, Cancelled | 4, No-show"
SCHEDULED, COMPLETED, CANCELLED, NO_SHOW = "1", "2", "3", "4"

# The data dictionary's columns, in REDCap's order (content=metadata, format=json).
METADATA_KEYS = (
    "field_name", "form_name", "section_header", "field_type", "field_label",
    "select_choices_or_calculations", "field_note", "text_validation_type_or_show_slider_number",
    "text_validation_min", "text_validation_max", "identifier", "branching_logic",
    "required_field", "custom_alignment", "question_number", "matrix_group_name",
    "matrix_ranking", "field_annotation",
)


@dataclass(frozen=True)
class Field:
    """One row of the data dictionary."""

    name: str
    form: str
    label: str
    field_type: str = "text"
    choices: str = ""
    validation: str = ""
    identifier: bool = False
    note: str = ""

    def metadata(self) -> dict[str, str]:
        values = dict.fromkeys(METADATA_KEYS, "")
        values.update(
            field_name=self.name, form_name=self.form, field_type=self.field_type,
            field_label=self.label, select_choices_or_calculations=self.choices,
            field_note=self.note, text_validation_type_or_show_slider_number=self.validation,
            identifier="y" if self.identifier else "")
        return values


FIELDS: tuple[Field, ...] = (
    Field("record_id", PARTICIPANT_FORM, "Record ID"),
    Field("study_id", PARTICIPANT_FORM, "Study ID", note="e.g. CPIP-1003"),
    Field("family_id", PARTICIPANT_FORM, "Family ID", note="e.g. FAM-0412"),
    Field("first_name", PARTICIPANT_FORM, "First name", identifier=True),
    Field("last_name", PARTICIPANT_FORM, "Last name", identifier=True),
    Field("dob", PARTICIPANT_FORM, "Date of birth", validation="date_ymd", identifier=True),
    Field("youth_dob_y", PARTICIPANT_FORM, "Year of birth", validation="integer"),
    Field("demo_sex", PARTICIPANT_FORM, "Sex assigned at birth", "radio", SEX_CHOICES),
    Field("mri_wt_lbs", PARTICIPANT_FORM, "Weight (lb)", validation="number"),
    Field("mri_instance", MRI_FORM, "MRI session number", validation="integer"),
    Field("mri_date", MRI_FORM, "Scan date", validation="date_ymd"),
    Field("mri_time", MRI_FORM, "Scan start time", validation="time"),
    Field("mri_scanner", MRI_FORM, "Scanner", "dropdown", SCANNER_CHOICES),
    Field("mri_protocol", MRI_FORM, "Protocol"),
    Field("mri_status", MRI_FORM, "Visit status", "dropdown", STATUS_CHOICES),
    Field("mri_notes", MRI_FORM, "Notes for the technologist", "notes"),
)

FORMS = (PARTICIPANT_FORM, MRI_FORM)


def parse_choices(text: str) -> dict[str, str]:
    """``"1, Male | 2, Female"`` -> ``{"1": "Male", "2": "Female"}``."""
    pairs = (item.split(",", 1) for item in text.split("|") if "," in item)
    return {code.strip(): label.strip() for code, label in pairs}


@dataclass(frozen=True)
class Event:
    unique_name: str
    forms: tuple[str, ...]


@dataclass(frozen=True)
class Project:
    """Shape of the simulated project (not its data)."""

    longitudinal: bool = False
    repeating: bool = True
    title: str = "Youth Brain Imaging Study (simulated)"
    project_id: int = 1402
    version: str = "15.7.6"

    @property
    def events(self) -> tuple[Event, ...]:
        if not self.longitudinal:
            return (Event(CLASSIC_EVENT, FORMS),)
        return (Event(BASELINE_EVENT, (PARTICIPANT_FORM,)),
                *(Event(name, (MRI_FORM,)) for name in VISIT_EVENTS))

    @property
    def event_names(self) -> tuple[str, ...]:
        return tuple(event.unique_name for event in self.events)

    @property
    def visit_events(self) -> tuple[str, ...]:
        """Events where the mri instrument is designated."""
        return tuple(e.unique_name for e in self.events if MRI_FORM in e.forms)

    @property
    def participant_event(self) -> str:
        return BASELINE_EVENT if self.longitudinal else CLASSIC_EVENT

    @property
    def record_id_field(self) -> str:
        return FIELDS[0].name

    def field(self, name: str) -> Field | None:
        return _FIELD_BY_NAME.get(name)

    def form_of(self, name: str) -> str | None:
        """The instrument of a data field or of a form-status field (``mri_complete``)."""
        field = _FIELD_BY_NAME.get(name)
        if field is not None:
            return field.form
        form = name.removesuffix("_complete")
        return form if name.endswith("_complete") and form in FORMS else None

    def export_fields(self) -> list[str]:
        """Every exportable field in data-dictionary order, each form followed by its
        status field (what an export without ``fields`` returns)."""
        names: list[str] = []
        for form in FORMS:
            names += [f.name for f in FIELDS if f.form == form] + [f"{form}_complete"]
        return names

    def is_repeating(self, form: str) -> bool:
        return self.repeating and form == MRI_FORM

    def designated(self, event: str, form: str) -> bool:
        return any(e.unique_name == event and form in e.forms for e in self.events)

    def metadata(self, fields: list[str] | None = None) -> list[dict[str, str]]:
        """``content=metadata``: the data dictionary, all of it or the named fields."""
        wanted = set(fields or ())
        return [f.metadata() for f in FIELDS if not wanted or f.name in wanted]

    def info(self) -> dict[str, object]:
        """``content=project``: REDCap's project attributes (integers where REDCap has them)."""
        return {
            "project_id": self.project_id, "project_title": self.title,
            "creation_time": "2024-01-15 10:22:01", "production_time": "2024-02-01 09:00:00",
            "in_production": 1, "project_language": "English", "purpose": 2,
            "purpose_other": "", "project_notes": "Simulated for calpendo-mwl tests and demos",
            "custom_record_label": "", "secondary_unique_field": "study_id",
            "is_longitudinal": int(self.longitudinal),
            "has_repeating_instruments_or_events": int(self.repeating),
            "surveys_enabled": 0, "scheduling_enabled": 0, "record_autonumbering_enabled": 1,
            "randomization_enabled": 0, "ddp_enabled": 0, "project_irb_number": "",
            "project_grant_number": "", "project_pi_firstname": "Ada",
            "project_pi_lastname": "Lovelace", "display_today_now_button": 1,
            "missing_data_codes": "", "external_modules": "",
            "bypass_branching_erase_field_prompt": 0,
        }


_FIELD_BY_NAME = {f.name: f for f in FIELDS}
