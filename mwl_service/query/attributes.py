"""The worklist attributes an MWL identifier may name, and the return keys built from them.

For each key (PS3.4 Table K.6-1 plus a few harmless extras): its VR, the
``WorklistItem`` column its value comes from, whether a value given for it matches
(return-only keys such as weight or allergies do not), a fallback column for type 1
keys, for code sequences the prefix of their columns, for a sequence of UID pairs
(Referenced Study Sequence) its column, and for values computed from the row (the
scheduled end, the time zone offset) what computes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from mwl_service.query.model import ReturnKey


@dataclass(frozen=True)
class Attribute:
    """A worklist attribute: where its value comes from and how it matches."""

    keyword: str
    vr: str
    column: str | None  # WorklistItem column; None: derived or always empty
    matchable: bool = True
    fallback: str | None = None  # column used when `column` is empty (type 1 keys)
    multi_valued: bool = False  # the column may hold several values (A\B)
    code_prefix: str | None = None  # a code sequence: its columns' common prefix
    uid_pairs: bool = False  # a sequence whose items are the column's UID pairs
    derived: str | None = None  # computed from the row: a key of DERIVED_COLUMNS


def _catalogue(*attrs: Attribute) -> dict[int, Attribute]:
    out: dict[int, Attribute] = {}
    for a in attrs:
        tag = tag_for_keyword(a.keyword)
        assert tag is not None, a.keyword
        out[tag] = a
    return out


# Top level of the MWL identifier (PS3.4 Table K.6-1 plus a few harmless extras).
TOP_LEVEL = _catalogue(
    Attribute("AccessionNumber", "SH", "accession_number"),
    # The site zone's offset at the item's own scheduled start (DST-correct).
    Attribute("TimezoneOffsetFromUTC", "SH", None, matchable=False, derived="tz_offset"),
    Attribute("ReferencedStudySequence", "SQ", "referenced_studies", uid_pairs=True),
    Attribute("ReferringPhysicianName", "PN", "referring_physician_name"),
    Attribute("StudyDescription", "LO", "study_description"),
    Attribute("PatientName", "PN", "patient_name"),
    Attribute("PatientID", "LO", "patient_id", fallback="accession_number"),
    Attribute("IssuerOfPatientID", "LO", None, matchable=False),
    Attribute("PatientBirthDate", "DA", "patient_birth_date"),
    Attribute("PatientSex", "CS", "patient_sex"),
    Attribute("OtherPatientIDs", "LO", "other_patient_ids"),
    Attribute("PatientSize", "DS", "patient_size", matchable=False),
    Attribute("PatientWeight", "DS", "patient_weight", matchable=False),
    Attribute("MedicalAlerts", "LO", "medical_alerts", matchable=False),
    Attribute("Allergies", "LO", "allergies", matchable=False),
    Attribute("PregnancyStatus", "US", "pregnancy_status", matchable=False),
    Attribute("PatientComments", "LT", "patient_comments", matchable=False),
    Attribute("StudyInstanceUID", "UI", "study_instance_uid"),
    Attribute("RequestingPhysician", "PN", "requesting_physician", matchable=False),
    Attribute(
        "RequestedProcedureCodeSequence", "SQ", None, matchable=False,
        code_prefix="requested_procedure",
    ),
    Attribute("AdmissionID", "LO", "admission_id"),
    Attribute("RequestedProcedureDescription", "LO", "requested_procedure_description"),
    Attribute(
        "RequestedProcedureID",
        "SH",
        "requested_procedure_id",
        fallback="scheduled_procedure_step_id",
    ),
    Attribute("RequestedProcedurePriority", "SH", "requested_procedure_priority", matchable=False),
)

# Inside the ScheduledProcedureStepSequence item.
SPS_ITEM = _catalogue(
    Attribute("Modality", "CS", "modality"),
    Attribute("RequestedContrastAgent", "LO", "requested_contrast_agent", matchable=False),
    Attribute("ScheduledStationAETitle", "AE", "scheduled_station_ae_title", multi_valued=True),
    Attribute("ScheduledProcedureStepStartDate", "DA", "scheduled_start_date"),
    Attribute("ScheduledProcedureStepStartTime", "TM", "scheduled_start_time"),
    Attribute("ScheduledProcedureStepEndDate", "DA", None, matchable=False, derived="end_date"),
    Attribute("ScheduledProcedureStepEndTime", "TM", None, matchable=False, derived="end_time"),
    Attribute("ScheduledPerformingPhysicianName", "PN", "performing_physician_name"),
    Attribute("ScheduledProcedureStepDescription", "LO", "scheduled_procedure_step_description"),
    Attribute(
        "ScheduledProtocolCodeSequence", "SQ", None, matchable=False,
        code_prefix="scheduled_protocol",
    ),
    Attribute("ScheduledStationName", "SH", "scheduled_station_name"),
    Attribute("PreMedication", "LO", "pre_medication", matchable=False),
    Attribute("ScheduledProcedureStepLocation", "SH", "scheduled_procedure_step_location"),
    Attribute("ScheduledProcedureStepID", "SH", "scheduled_procedure_step_id"),
    Attribute("ScheduledProcedureStepStatus", "CS", "step_status"),
    Attribute(
        "CommentsOnTheScheduledProcedureStep", "LT", "scheduled_procedure_step_comments",
        matchable=False,
    ),
)

# The item of a code sequence; column names are "<code_prefix>_<suffix>".
CODE_ITEM = (
    (0x00080100, "CodeValue", "SH", "code_value"),
    (0x00080102, "CodingSchemeDesignator", "SH", "coding_scheme_designator"),
    (0x00080103, "CodingSchemeVersion", "SH", "coding_scheme_version"),
    (0x00080104, "CodeMeaning", "LO", "code_meaning"),
)

# The item of a UID-pair sequence: "column" names the place in each pair (UID_PAIR_INDEX).
REFERENCED_SOP_CLASS = 0x00081150
REFERENCED_SOP_INSTANCE = 0x00081155
UID_PAIR_ITEM = (
    (REFERENCED_SOP_CLASS, "ReferencedSOPClassUID", "UI", "sop_class_uid"),
    (REFERENCED_SOP_INSTANCE, "ReferencedSOPInstanceUID", "UI", "sop_instance_uid"),
)
UID_PAIR_INDEX = {"sop_class_uid": 0, "sop_instance_uid": 1}

START_DATE = 0x00400002
START_TIME = 0x00400003

# The columns each derived value is computed from.
DERIVED_COLUMNS = {
    "end_date": ("scheduled_start_utc", "site_timezone", "duration_minutes"),
    "end_time": ("scheduled_start_utc", "site_timezone", "duration_minutes"),
    "tz_offset": ("scheduled_start_utc", "site_timezone"),
}


def _item_keys(
    item: tuple[tuple[int, str, str, str], ...], prefix: str, wanted: set[int] | None
) -> tuple[ReturnKey, ...]:
    """The keys of a sequence item described by ``item``: those in ``wanted`` (None:
    all), keys the item does not know returned empty, in tag order."""
    keys = [
        ReturnKey(tag, kw, vr, prefix + suffix)
        for tag, kw, vr, suffix in item
        if wanted is None or tag in wanted
    ]
    known = {tag for tag, *_ in item}
    keys += [unknown_key(tag, None) for tag in sorted((wanted or set()) - known)]
    return tuple(sorted(keys, key=lambda k: k.tag))


def code_item_keys(prefix: str, wanted: set[int] | None = None) -> tuple[ReturnKey, ...]:
    """The item keys of a code sequence whose columns start with ``prefix``: those in
    ``wanted`` (None: all four), in tag order."""
    return _item_keys(CODE_ITEM, f"{prefix}_", wanted)


def uid_pair_item_keys(wanted: set[int] | None = None) -> tuple[ReturnKey, ...]:
    """The item keys of a UID-pair sequence: those in ``wanted`` (None: both)."""
    return _item_keys(UID_PAIR_ITEM, "", wanted)


def return_key(tag: int, elem_vr: str | None, catalogue: dict[int, Attribute]) -> ReturnKey:
    """The return key of ``tag`` at the level ``catalogue`` describes."""
    attr = catalogue.get(tag)
    if attr is None:
        return unknown_key(tag, elem_vr)
    if attr.code_prefix:
        return ReturnKey(
            tag, attr.keyword, "SQ", f"{attr.code_prefix}_code_value",
            item_keys=code_item_keys(attr.code_prefix),
        )
    if attr.uid_pairs:
        return ReturnKey(
            tag, attr.keyword, "SQ", attr.column, item_keys=uid_pair_item_keys(),
            derived="uid_pairs", item_values=((), ()),
        )
    return ReturnKey(tag, attr.keyword, attr.vr, attr.column, attr.fallback, attr.derived)


def unknown_key(tag: int, elem_vr: str | None) -> ReturnKey:
    """A key the worklist has no data for: returned zero length, in its VR."""
    vr = elem_vr or ""
    if not vr or vr == "UN" or len(vr) != 2:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = "UN"
    vr = vr.split(" or ")[0]
    return ReturnKey(tag, keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})", vr)


def needed_columns(keys: Sequence[ReturnKey]) -> tuple[str, ...]:
    """The columns the answers to ``keys`` read, each once, in first-use order."""
    cols: dict[str, None] = {}

    def visit(k: ReturnKey) -> None:
        if k.column:
            cols[k.column] = None
        if k.fallback:
            cols[k.fallback] = None
        for c in DERIVED_COLUMNS.get(k.derived or "", ()):
            cols[c] = None
        if k.derived != "uid_pairs":  # its item keys name places in a pair, not columns
            for sub in k.item_keys or ():
                visit(sub)

    for k in keys:
        visit(k)
    return tuple(cols)
