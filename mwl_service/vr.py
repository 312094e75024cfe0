"""DICOM value representation checks (pure; no pydicom needed).

Shared by the Dagster asset checks (rows about to be published) and the DICOM
server (values it is about to send). `vr_problem` returns a short human reason when
a value is not valid for its VR, or None when it is. An empty value is always valid
here: whether a field is *required* is a separate question.

Lengths are counted in characters (PS3.5 6.2 counts PN/LO/SH in characters, so a
non-ASCII name is not penalised for its UTF-8 bytes).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping

MAX_LENGTH = {"AE": 16, "CS": 16, "SH": 16, "LO": 64, "UI": 64, "DA": 8, "TM": 14}
PN_GROUP_MAX = 64  # characters per component group
PN_MAX_COMPONENTS = 5
PN_MAX_GROUPS = 3  # alphabetic = ideographic = phonetic

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CS = re.compile(r"[A-Z0-9 _]*")
_DA = re.compile(r"\d{8}")
_TM = re.compile(r"(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,6}))?)?)?")
_UI_COMPONENT = re.compile(r"0|[1-9][0-9]*")

# Worklist row field -> VR (the DICOM attribute each column is served as).
ROW_FIELD_VRS: dict[str, str] = {
    "patient_id": "LO",
    "patient_name": "PN",
    "patient_birth_date": "DA",
    "patient_sex": "CS",
    "other_patient_ids": "LO",
    "admission_id": "LO",
    "accession_number": "SH",
    "study_instance_uid": "UI",
    "requested_procedure_id": "SH",
    "requested_procedure_description": "LO",
    "study_description": "LO",
    "referring_physician_name": "PN",
    "scheduled_procedure_step_id": "SH",
    "scheduled_procedure_step_description": "LO",
    "scheduled_station_ae_title": "AE",
    "scheduled_station_name": "SH",
    "scheduled_procedure_step_location": "SH",
    "modality": "CS",
    "performing_physician_name": "PN",
    "scheduled_start_date": "DA",
    "scheduled_start_time": "TM",
    "step_status": "CS",
}


def _text_problem(value: str, limit: int) -> str | None:
    if len(value) > limit:
        return f"is {len(value)} characters long (max {limit})"
    if "\\" in value:
        return "contains a backslash (the DICOM value separator)"
    if _CONTROL.search(value):
        return "contains a control character"
    return None


def _da_problem(value: str) -> str | None:
    if not _DA.fullmatch(value):
        return f"{value!r} is not YYYYMMDD"
    try:
        dt.date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return f"{value!r} is not a real date"
    return None


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
    return None


def _pn_problem(value: str) -> str | None:
    if "\\" in value:
        return "contains a backslash (the DICOM value separator)"
    if _CONTROL.search(value):
        return "contains a control character"
    groups = value.split("=")
    if len(groups) > PN_MAX_GROUPS:
        return f"has {len(groups)} component groups (max {PN_MAX_GROUPS})"
    for group in groups:
        if len(group) > PN_GROUP_MAX:
            return f"has a component group of {len(group)} characters (max {PN_GROUP_MAX})"
        if group.count("^") + 1 > PN_MAX_COMPONENTS:
            return f"has {group.count('^') + 1} components (max {PN_MAX_COMPONENTS})"
    return None


def _ae_problem(value: str) -> str | None:
    problem = _text_problem(value, MAX_LENGTH["AE"])
    if problem:
        return problem
    if not value.strip(" "):
        return "is only spaces"
    return None


def _cs_problem(value: str) -> str | None:
    if len(value) > MAX_LENGTH["CS"]:
        return f"is {len(value)} characters long (max {MAX_LENGTH['CS']})"
    if not _CS.fullmatch(value):
        return f"{value!r} has characters other than A-Z, 0-9, space and underscore"
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
    return None


_CHECKS = {
    "DA": _da_problem,
    "TM": _tm_problem,
    "PN": _pn_problem,
    "AE": _ae_problem,
    "CS": _cs_problem,
    "UI": _ui_problem,
    "SH": lambda v: _text_problem(v, MAX_LENGTH["SH"]),
    "LO": lambda v: _text_problem(v, MAX_LENGTH["LO"]),
}

SUPPORTED_VRS = tuple(_CHECKS)


def vr_problem(vr: str, value: str) -> str | None:
    """Why `value` is not valid for `vr`, or None. Empty values are valid (type 2)."""
    try:
        check = _CHECKS[vr]
    except KeyError:
        raise ValueError(f"unsupported VR {vr!r} (supported: {', '.join(SUPPORTED_VRS)})") from None
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        return f"is a {type(value).__name__}, not text"
    return check(value)


def row_problems(row: Mapping[str, object]) -> list[tuple[str, str]]:
    """(field, problem) for every field of a worklist row that is invalid for its VR."""
    problems = []
    for field, vr in ROW_FIELD_VRS.items():
        value = row.get(field)
        if value is None:
            continue
        problem = vr_problem(vr, value if isinstance(value, str) else str(value))
        if problem:
            problems.append((field, problem))
    return problems
