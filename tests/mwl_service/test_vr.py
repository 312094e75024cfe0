"""DICOM value representation checks (mwl_service.vr)."""

from __future__ import annotations

import pytest

from calpendo_assets.rows.model import SYNC_COLUMNS
from mwl_service.schema import accession_number, step_id, study_instance_uid
from mwl_service.vr import ROW_FIELD_VRS, row_problems, vr_problem


@pytest.mark.parametrize(
    "vr, value",
    [
        ("DA", "20260308"),
        ("DA", "20240229"),  # leap day
        ("TM", "093000"),
        ("TM", "0930"),
        ("TM", "09"),
        ("TM", "235959.123456"),
        ("TM", "235960"),  # leap second is legal DICOM
        ("PN", "Doe^Jane"),
        ("PN", "Müller^Jürgen"),
        ("PN", "山田^太郎"),
        ("PN", "Doe^Jane^Mary^Dr^PhD"),
        ("PN", "Yamada^Tarou=山田^太郎=やまだ^たろう"),
        ("PN", "A" * 64),
        ("AE", "MRI3T"),
        ("AE", "A" * 16),
        ("AE", " MRI "),
        ("SH", "1234567890123456"),
        ("LO", "x" * 64),
        ("CS", "MR"),
        ("CS", "IN PROGRESS"),
        ("CS", "ORIGINAL_1"),
        ("UI", "1.2.840.10008.5.1.4.31"),
        ("UI", "2.25.0"),
        ("UI", study_instance_uid("mri", "12345")),
        ("SH", accession_number("mri", "12345")),
        ("SH", step_id("mri", "12345")),
        ("LO", ""),  # empty is always valid: "required" is a separate check
        ("DA", ""),
    ],
)
def test_valid_values(vr, value):
    assert vr_problem(vr, value) is None


@pytest.mark.parametrize(
    "vr, value, words",
    [
        ("DA", "2026-03-08", "YYYYMMDD"),
        ("DA", "20260230", "real date"),
        ("DA", "20261301", "real date"),
        ("DA", "2026030", "YYYYMMDD"),
        ("TM", "240000", "hour"),
        ("TM", "126000", "minute"),
        ("TM", "123061", "second"),
        ("TM", "12:30", "HHMMSS"),
        ("TM", "123000.1234567", "HHMMSS"),
        ("PN", "A" * 65, "component group"),
        ("PN", "a^b^c^d^e^f", "components"),
        ("PN", "Doe\\Jane", "backslash"),
        ("PN", "Doe\nJane", "control"),
        ("PN", "a=b=c=d", "component groups"),
        ("AE", "A" * 17, "max 16"),
        ("AE", "    ", "only spaces"),
        ("AE", "MRI\\3T", "backslash"),
        ("AE", "MRI\t3T", "control"),
        ("SH", "A" * 17, "max 16"),
        ("SH", "a\\b", "backslash"),
        ("LO", "x" * 65, "max 64"),
        ("CS", "mr", "A-Z"),
        ("CS", "M-R", "A-Z"),
        ("CS", "A" * 17, "max 16"),
        ("UI", "1.2.03", "leading zero"),
        ("UI", "1..2", "empty component"),
        ("UI", "1.2.", "empty component"),
        ("UI", "1.2.a", "digits"),
        ("UI", "1." + "1" * 63, "max 64"),
    ],
)
def test_invalid_values_name_the_problem(vr, value, words):
    problem = vr_problem(vr, value)
    assert problem is not None
    assert words in problem


def test_unknown_vr_is_a_programming_error():
    with pytest.raises(ValueError, match="unsupported VR"):
        vr_problem("XX", "value")


def test_row_field_vrs_cover_dicom_columns_of_the_schema():
    assert set(ROW_FIELD_VRS) <= set(SYNC_COLUMNS)
    assert ROW_FIELD_VRS["patient_name"] == "PN"
    assert ROW_FIELD_VRS["scheduled_start_date"] == "DA"
    assert ROW_FIELD_VRS["scheduled_start_time"] == "TM"
    assert ROW_FIELD_VRS["scheduled_station_ae_title"] == "AE"
    assert ROW_FIELD_VRS["accession_number"] == "SH"
    assert ROW_FIELD_VRS["study_instance_uid"] == "UI"
    assert ROW_FIELD_VRS["modality"] == "CS"


def test_row_problems_lists_each_bad_field():
    row = {
        "patient_name": "Doe^Jane",
        "scheduled_start_date": "20260230",
        "scheduled_station_ae_title": "THIS_AE_IS_TOO_LONG",
        "modality": "MR",
        "duration_minutes": 60,  # not a DICOM field here: ignored
    }
    problems = dict(row_problems(row))
    assert set(problems) == {"scheduled_start_date", "scheduled_station_ae_title"}
    assert "real date" in problems["scheduled_start_date"]


def test_station_ae_titles_are_at_most_the_column_holds():
    ten = "\\".join(f"MRI{i}" for i in range(10))
    assert row_problems({"scheduled_station_ae_title": ten}) == []
    assert row_problems({"scheduled_station_ae_title": ten + "\\MRI10"}) == [
        ("scheduled_station_ae_title", "has 11 values (max 10)")]


@pytest.mark.parametrize(
    "vr, value, problem",
    [
        ("DS", "72.5", None),
        ("DS", "1e3", None),
        ("DS", "-0.5", None),
        ("DS", "seventy", "decimal number"),
        ("DS", "1" * 17, "max 16"),
        ("DS", "1\\2", "backslash"),
        ("LT", "Line one\r\nLine two\tTabbed", None),
        ("LT", "back\\slash is text in LT", None),
        ("LT", "bell\x07", "control"),
        ("LT", "x" * 10241, "max 10240"),
        ("US", "4", None),
        ("US", "65535", None),
        ("US", "65536", "between 0 and 65535"),
        ("US", "-1", "unsigned integer"),
        ("US", "1.5", "unsigned integer"),
    ],
)
def test_ds_lt_us_checks(vr, value, problem):
    got = vr_problem(vr, value)
    if problem is None:
        assert got is None
    else:
        assert got is not None and problem in got
        assert "http" not in got  # pydicom's "Please see <url>" is cut


def test_one_ae_title_validator():
    from mwl_service import server
    from mwl_service.vr import validate_ae_title

    assert server.validate_ae_title is validate_ae_title  # the CLI's import still works
    assert validate_ae_title("  MR3T ") == "MR3T"
    for bad, words in (("", "empty"), ("X" * 17, "max 16"), ("A\\B", "backslash"),
                       ("MRÄ", "printable ASCII"), ("A\tB", "control")):
        with pytest.raises(ValueError, match="1 to 16 characters") as exc:
            validate_ae_title(bad, "called AE title")
        assert words in str(exc.value) and "called AE title" in str(exc.value)
