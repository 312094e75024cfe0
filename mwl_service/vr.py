"""DICOM value representation checks (pure), built on pydicom's own VR validators.

Shared by the Dagster asset checks (rows about to be published), the config checks
and the DICOM server (its own and the allowed AE titles). `vr_problem` returns a
short human reason when a value is not valid for its VR, or None when it is. An
empty value is always valid here: whether a field is *required* is a separate
question.

pydicom's validators (``pydicom.valuerep.VALIDATORS``) check lengths, character
repertoires and formats; the stricter rules a worklist needs on top of them are
here: one value per field (no backslash) unless the field is multi-valued, no
control characters in the short string VRs, real calendar dates and clock times,
at most five PN components, UI components without leading zeros. Lengths are
counted in characters (PS3.5 6.2 counts PN/LO/SH in characters, so a non-ASCII name
is not penalised for its UTF-8 bytes).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping

from pydicom.valuerep import VALIDATORS

from mwl_service.schema import MAX_STATION_AE_TITLES

MAX_LENGTH = {"AE": 16, "CS": 16, "SH": 16, "LO": 64, "UI": 64, "DA": 8, "TM": 14, "DS": 16,
              "LT": 10240}
PN_GROUP_MAX = 64  # characters per component group
PN_MAX_COMPONENTS = 5
PN_MAX_GROUPS = 3  # alphabetic = ideographic = phonetic

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# LT may hold line breaks, tabs and form feeds (PS3.5 6.2), not other controls.
_LT_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_DA = re.compile(r"\d{8}")
_TM = re.compile(r"(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,6}))?)?)?")
_UI_COMPONENT = re.compile(r"0|[1-9][0-9]*")
_PYDICOM_SEE_ALSO = re.compile(r"\s*Please see <[^>]*>.*$", re.S)

# Worklist row field -> VR (the DICOM attribute each column is served as).
ROW_FIELD_VRS: dict[str, str] = {
    "patient_id": "LO",
    "patient_name": "PN",
    "patient_birth_date": "DA",
    "patient_sex": "CS",
    "other_patient_ids": "LO",
    "admission_id": "LO",
    "patient_weight": "DS",
    "patient_size": "DS",
    "medical_alerts": "LO",
    "allergies": "LO",
    "pregnancy_status": "US",
    "patient_comments": "LT",
    "accession_number": "SH",
    "study_instance_uid": "UI",
    "requested_procedure_id": "SH",
    "requested_procedure_description": "LO",
    "study_description": "LO",
    "referring_physician_name": "PN",
    "requesting_physician": "PN",
    "requested_procedure_priority": "SH",
    "requested_procedure_code_value": "SH",
    "requested_procedure_coding_scheme_designator": "SH",
    "requested_procedure_code_meaning": "LO",
    "requested_procedure_coding_scheme_version": "SH",
    "referenced_studies": "UI",
    "scheduled_procedure_step_id": "SH",
    "scheduled_procedure_step_description": "LO",
    "scheduled_procedure_step_comments": "LT",
    "requested_contrast_agent": "LO",
    "pre_medication": "LO",
    "scheduled_protocol_code_value": "SH",
    "scheduled_protocol_coding_scheme_designator": "SH",
    "scheduled_protocol_code_meaning": "LO",
    "scheduled_protocol_coding_scheme_version": "SH",
    "scheduled_station_ae_title": "AE",
    "scheduled_station_name": "SH",
    "scheduled_procedure_step_location": "SH",
    "modality": "CS",
    "performing_physician_name": "PN",
    "scheduled_start_date": "DA",
    "scheduled_start_time": "TM",
    "step_status": "CS",
}

# Fields that may hold several values joined by a backslash (each checked alone):
# a room with two consoles has two station AE titles.
MULTI_VALUED_FIELDS = frozenset({"scheduled_station_ae_title"})

# Fields holding the items of a sequence of UID pairs (Referenced Study Sequence: each
# item's Referenced SOP Class UID and Referenced SOP Instance UID), item after item,
# joined by backslashes: "1.2.840.10008.3.1.2.3.1\1.2.3.4" is one item.
UID_PAIR_FIELDS = frozenset({"referenced_studies"})
# What may separate the UIDs of a UID-pair value as a source or a person writes it
# (UIDs are digits and dots, so any other character is unambiguous).
_UID_SEPARATORS = re.compile(r"[\\\s,;]+")

# Fields with enumerated values (PS3.3 C.7.1.3: Pregnancy Status 1-4).
FIELD_VALUES: dict[str, frozenset[str]] = {"pregnancy_status": frozenset({"1", "2", "3", "4"})}


def _pydicom_problem(vr: str, value: object) -> str | None:
    ok, message = VALIDATORS[vr](vr, value)
    return None if ok else _PYDICOM_SEE_ALSO.sub("", message)


def _single_text_problem(value: str) -> str | None:
    if "\\" in value:
        return "contains a backslash (the DICOM value separator)"
    if _CONTROL.search(value):
        return "contains a control character"
    return None


def _length_problem(value: str, vr: str) -> str | None:
    limit = MAX_LENGTH[vr]
    if len(value) > limit:
        return f"is {len(value)} characters long (max {limit})"
    return None


def _text_problem(vr: str):
    def check(value: str) -> str | None:
        return (
            _length_problem(value, vr)
            or _single_text_problem(value)
            or _pydicom_problem(vr, value)
        )
    return check


def _da_problem(value: str) -> str | None:
    if not _DA.fullmatch(value):
        return f"{value!r} is not YYYYMMDD"
    try:
        dt.date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return f"{value!r} is not a real date"
    return _pydicom_problem("DA", value)


def _tm_problem(value: str) -> str | None:
    if len(value) > MAX_LENGTH["TM"]:
        return f"is {len(value)} characters long (max {MAX_LENGTH['TM']})"
    m = _TM.fullmatch(value)
    if not m:
        return f"{value!r} is not HHMMSS[.ffffff]"
    hh, mm, ss = m.group(1), m.group(2), m.group(3)
    if int(hh) > 23:
        return f"{value!r} has hour {hh} (00-23)"
    if mm is not None and int(mm) > 59:
        return f"{value!r} has minute {mm} (00-59)"
    if ss is not None and int(ss) > 60:  # 60: leap second, allowed by PS3.5
        return f"{value!r} has second {ss} (00-60)"
    return _pydicom_problem("TM", value)


def _pn_problem(value: str) -> str | None:
    problem = _single_text_problem(value)
    if problem:
        return problem
    groups = value.split("=")
    if len(groups) > PN_MAX_GROUPS:
        return f"has {len(groups)} component groups (max {PN_MAX_GROUPS})"
    for group in groups:
        if len(group) > PN_GROUP_MAX:
            return f"has a component group of {len(group)} characters (max {PN_GROUP_MAX})"
        if group.count("^") + 1 > PN_MAX_COMPONENTS:
            return f"has {group.count('^') + 1} components (max {PN_MAX_COMPONENTS})"
    return _pydicom_problem("PN", value)


def _ae_problem(value: str) -> str | None:
    problem = _length_problem(value, "AE") or _single_text_problem(value)
    if problem:
        return problem
    if not value.strip(" "):
        return "is only spaces"
    return _pydicom_problem("AE", value)


def _cs_problem(value: str) -> str | None:
    problem = _length_problem(value, "CS") or _pydicom_problem("CS", value)
    if problem:
        return f"{value!r} has characters other than A-Z, 0-9, space and underscore" if (
            "Invalid value" in problem
        ) else problem
    return None


def _ui_problem(value: str) -> str | None:
    if len(value) > MAX_LENGTH["UI"]:
        return f"is {len(value)} characters long (max {MAX_LENGTH['UI']})"
    for component in value.split("."):
        if component == "":
            return f"{value!r} has an empty component"
        if not component.isascii() or not component.isdigit():
            return f"{value!r} has characters other than digits and dots"
        if not _UI_COMPONENT.fullmatch(component):
            return f"{value!r} has a component with a leading zero"
    return _pydicom_problem("UI", value)


def _ds_problem(value: str) -> str | None:
    problem = _length_problem(value, "DS") or _single_text_problem(value)
    if problem:
        return problem
    if _pydicom_problem("DS", value):
        return f"{value!r} is not a decimal number"
    return None


def _lt_problem(value: str) -> str | None:
    if "\\" not in value and _LT_CONTROL.search(value):
        return "contains a control character"
    return _length_problem(value, "LT") or _pydicom_problem("LT", value)


def _us_problem(value: str) -> str | None:
    if not value.isascii() or not value.isdigit():
        return f"{value!r} is not an unsigned integer"
    return _pydicom_problem("US", int(value))


_CHECKS = {
    "DA": _da_problem,
    "TM": _tm_problem,
    "PN": _pn_problem,
    "AE": _ae_problem,
    "CS": _cs_problem,
    "UI": _ui_problem,
    "SH": _text_problem("SH"),
    "LO": _text_problem("LO"),
    "DS": _ds_problem,
    "LT": _lt_problem,
    "US": _us_problem,
}

SUPPORTED_VRS = tuple(_CHECKS)


def vr_problem(vr: str, value: str) -> str | None:
    """Why `value` is not valid for `vr`, or None. Empty values are valid (type 2).

    One value: a backslash (the value separator) is a problem, except in LT.
    """
    try:
        check = _CHECKS[vr]
    except KeyError:
        raise ValueError(f"unsupported VR {vr!r} (supported: {', '.join(SUPPORTED_VRS)})") from None
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        return f"is a {type(value).__name__}, not text"
    return check(value)


def uid_pairs(value: str) -> list[tuple[str, str]]:
    """The items of a UID-pair field's stored value: (SOP Class UID, SOP Instance UID)."""
    uids = value.split("\\") if value else []
    return list(zip(uids[0::2], uids[1::2]))


def uid_pairs_problem(value: str) -> str | None:
    """Why a UID-pair field's stored value is not whole pairs of valid UIDs, or None.
    The message names positions, never a UID."""
    uids = value.split("\\")
    if len(uids) % 2:
        return f"has {len(uids)} UIDs, not SOP Class UID\\SOP Instance UID pairs"
    for position, uid in enumerate(uids, 1):
        if not uid or vr_problem("UI", uid):
            return (f"UID {position} of {len(uids)} is not a valid UID (digits and dots, "
                    "no leading zeros, at most 64 characters)")
    return None


def canonical_uid_pairs(text: str) -> tuple[str, str | None]:
    """A UID-pair value as a source or a person writes it (UIDs separated by
    backslashes, commas, semicolons or white space) in its stored form, and why it
    is unusable ("" then)."""
    uids = [u for u in _UID_SEPARATORS.split(text.strip()) if u]
    value = "\\".join(uids)
    problem = uid_pairs_problem(value) if value else None
    return ("", problem) if problem else (value, None)


def field_problem(field: str, value: object) -> str | None:
    """Why `value` is not valid for the worklist row field `field`, or None: its VR,
    each value of a multi-valued field, whole UID pairs, enumerated values."""
    vr = ROW_FIELD_VRS[field]
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    if text == "":
        return None
    if field in UID_PAIR_FIELDS:
        return uid_pairs_problem(text)
    if field in MULTI_VALUED_FIELDS:
        count = text.count("\\") + 1
        if count > MAX_STATION_AE_TITLES:  # the column holds no more
            return f"has {count} values (max {MAX_STATION_AE_TITLES})"
        for part in text.split("\\"):
            problem = vr_problem(vr, part) if part else "has an empty value"
            if problem:
                return problem if "\\" not in text else f"value {part!r} {problem}"
        return None
    allowed = FIELD_VALUES.get(field)
    if allowed is not None and text not in allowed:
        return f"{text!r} is not one of {', '.join(sorted(allowed))}"
    return vr_problem(vr, text)


def row_problems(row: Mapping[str, object]) -> list[tuple[str, str]]:
    """(field, problem) for every field of a worklist row that is invalid for its VR."""
    problems = []
    for field in ROW_FIELD_VRS:
        problem = field_problem(field, row.get(field))
        if problem:
            problems.append((field, problem))
    return problems


def validate_ae_title(value: str, what: str = "AE title") -> str:
    """The AE title, stripped, or ValueError naming `what`: 1-16 characters of the
    AE repertoire (no backslash, no control characters)."""
    title = value.strip()
    problem = "is empty" if not title else vr_problem("AE", title)
    if problem is None and not title.isascii():
        problem = "has characters outside printable ASCII"
    if problem:
        raise ValueError(
            f"{what} must be 1 to 16 characters of printable ASCII without a backslash: "
            f"{value!r} {problem}"
        )
    return title
