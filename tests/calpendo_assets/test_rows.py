"""Bookings -> worklist rows: parsing, DST, mapping, extraction, names, hashing."""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from calpendo_assets.config import parse_config
from calpendo_assets.core.source import FieldExtraction
from calpendo_assets.rows.fields import extract_fields
from calpendo_assets.rows.mapping import bookings_to_rows
from calpendo_assets.rows.scope import (
    default_ae_title,
    map_by_resource,
    map_step_status,
    match_resource,
)
from calpendo_assets.rows.model import (
    HASH_COLUMNS,
    ROW_COLUMNS,
    SYNC_COLUMNS,
    VANISHED_REASON,
    content_hash,
    frame_records,
)
from calpendo_assets.rows.names import dicom_pn
from calpendo_assets.rows.times import booking_start, parse_calpendo_datetime
from mwl_service.schema import (
    DISCONTINUED,
    SCHEDULED,
    WorklistItem,
    accession_number,
    step_id,
    study_instance_uid,
)
from mwl_service.vr import row_problems

EDMONTON = ZoneInfo("America/Edmonton")
UTC = dt.UTC
ROOT = Path(__file__).resolve().parents[2]


def make_source(**config):
    cfg = {"base_url": "http://127.0.0.1:8089", "resources": ["3T MRI", "EEG"]}
    cfg.update(config.pop("config", {}))
    raw = {"name": "mri3t", "type": "calpendo", "config": cfg, **config}
    return parse_config({"data_sources": [raw]}, env={})[0]


def booking(bid=7, **overrides) -> dict:
    b = {
        "id": bid,
        "biskitType": "MRIScan",
        "title": "SUB0013 - Jane Doe",
        "status": "APPROVED",
        "formattedName": "[2025-02-12 10:00:00.0, 2025-02-12 11:00:00.0]",
        "dateRange": {"start": "2025-02-12 10:00:00.0", "finish": "2025-02-12 11:00:00.0"},
        "resource": {"name": "3T MRI"},
        "project": {"name": "BRISKP", "formattedName": "BRISKP (Brain network models)"},
        "durationInMinutes": 60,
        "Operator": "Tech, Anna",
        "cancelled": False,
        "cancellationReason": None,
    }
    b.update(overrides)
    return b


def one_row(b, source=None) -> dict:
    result = bookings_to_rows([b], source or make_source())
    assert len(result.frame) == 1, result.excluded
    return frame_records(result.frame)[0]


# ---------------------------------------------------------------- date-times


@pytest.mark.parametrize(
    "value, utc",
    [
        ("2025-02-12 10:00:00.0", dt.datetime(2025, 2, 12, 17, 0, tzinfo=UTC)),
        ("2025-02-12T10:00:00", dt.datetime(2025, 2, 12, 17, 0, tzinfo=UTC)),
        ("2025-07-12T10:00:00", dt.datetime(2025, 7, 12, 16, 0, tzinfo=UTC)),  # MDT
        ("2025-02-12T10:00:00-05:00", dt.datetime(2025, 2, 12, 15, 0, tzinfo=UTC)),
        ("2025-02-12T10:00:00Z", dt.datetime(2025, 2, 12, 10, 0, tzinfo=UTC)),
        ("20140526T1200", dt.datetime(2014, 5, 26, 18, 0, tzinfo=UTC)),
        (1739379600000, dt.datetime(2025, 2, 12, 17, 0, tzinfo=UTC)),  # epoch millis
        ("1739379600000", dt.datetime(2025, 2, 12, 17, 0, tzinfo=UTC)),
        (dt.datetime(2025, 2, 12, 10, 0), dt.datetime(2025, 2, 12, 17, 0, tzinfo=UTC)),
    ],
)
def test_parse_calpendo_datetime(value, utc):
    parsed = parse_calpendo_datetime(value, EDMONTON)
    assert parsed.tzinfo is not None
    assert parsed == utc
    assert (
        parsed.tzinfo == EDMONTON or parsed.utcoffset() == parsed.astimezone(EDMONTON).utcoffset()
    )


@pytest.mark.parametrize(
    "value", ["", "tomorrow", "2025-13-01 10:00", None, True, [], float("nan")]
)
def test_parse_calpendo_datetime_rejects_garbage(value):
    with pytest.raises(ValueError):
        parse_calpendo_datetime(value, EDMONTON)


def test_dst_gap_in_march_shifts_forward_with_a_warning(caplog):
    # 2026-03-08 02:30 does not exist in Edmonton (clocks jump 02:00 -> 03:00).
    with caplog.at_level(logging.WARNING, logger="calpendo_assets.rows.times"):
        parsed = parse_calpendo_datetime("2026-03-08 02:30:00.0", EDMONTON)
    assert parsed.astimezone(UTC) == dt.datetime(2026, 3, 8, 9, 30, tzinfo=UTC)
    local = parsed.astimezone(EDMONTON)
    assert (local.hour, local.minute) == (3, 30)
    assert local.utcoffset() == dt.timedelta(hours=-6)
    assert "does not exist" in caplog.text


def test_dst_overlap_in_november_takes_first_occurrence_with_a_warning(caplog):
    # 2026-11-01 01:30 happens twice (MDT then MST): the first one (MDT, UTC-6).
    with caplog.at_level(logging.WARNING, logger="calpendo_assets.rows.times"):
        parsed = parse_calpendo_datetime("2026-11-01 01:30:00.0", EDMONTON)
    assert parsed.astimezone(UTC) == dt.datetime(2026, 11, 1, 7, 30, tzinfo=UTC)
    assert "ambiguous" in caplog.text


def test_ordinary_times_do_not_warn(caplog):
    with caplog.at_level(logging.WARNING, logger="calpendo_assets.rows.times"):
        parse_calpendo_datetime("2026-03-08 03:30:00.0", EDMONTON)
        parse_calpendo_datetime("2026-11-01 02:30:00.0", EDMONTON)
    assert caplog.text == ""


@pytest.mark.parametrize(
    "local, utc, da, tm",
    [
        ("2026-03-07 10:00:00.0", dt.datetime(2026, 3, 7, 17, 0), "20260307", "100000"),
        ("2026-03-08 01:59:00.0", dt.datetime(2026, 3, 8, 8, 59), "20260308", "015900"),
        ("2026-03-08 02:30:00.0", dt.datetime(2026, 3, 8, 9, 30), "20260308", "033000"),  # gap
        ("2026-03-08 03:00:00.0", dt.datetime(2026, 3, 8, 9, 0), "20260308", "030000"),
        ("2026-03-09 10:00:00.0", dt.datetime(2026, 3, 9, 16, 0), "20260309", "100000"),
        ("2026-11-01 00:30:00.0", dt.datetime(2026, 11, 1, 6, 30), "20261101", "003000"),
        ("2026-11-01 01:30:00.0", dt.datetime(2026, 11, 1, 7, 30), "20261101", "013000"),  # overlap
        ("2026-11-01 02:30:00.0", dt.datetime(2026, 11, 1, 9, 30), "20261101", "023000"),
        ("2026-11-02 10:00:00.0", dt.datetime(2026, 11, 2, 17, 0), "20261102", "100000"),
    ],
)
def test_rows_across_dst_have_correct_utc_and_local_da_tm(local, utc, da, tm):
    row = one_row(booking(dateRange={"start": local}, formattedName=None))
    assert row["scheduled_start_utc"] == utc.replace(tzinfo=UTC)
    assert (row["scheduled_start_date"], row["scheduled_start_time"]) == (da, tm)
    assert row["site_timezone"] == "America/Edmonton"


def test_booking_start_falls_back_to_formatted_name():
    b = booking(dateRange=None, formattedName="[2025-02-12 10:15:00.0, 2025-02-12 11:00:00.0]")
    assert booking_start(b, EDMONTON) == dt.datetime(2025, 2, 12, 17, 15, tzinfo=UTC)
    b = booking(dateRange={"start": "garbage"}, formattedName="[2025-02-12 10:15:00.0, x]")
    assert booking_start(b, EDMONTON) == dt.datetime(2025, 2, 12, 17, 15, tzinfo=UTC)
    assert booking_start(booking(dateRange=None, formattedName="Scan"), EDMONTON) is None
    assert booking_start(booking(dateRange=None, formattedName=None), EDMONTON) is None


def test_flat_dotted_keys_are_read_too():
    b = {
        "id": 9,
        "title": "SUB0009",
        "status": "APPROVED",
        "dateRange.start": "2025-02-12 10:00:00.0",
        "resource.name": "3T MRI",
        "project.name": "ADNI4",
    }
    row = one_row(b)
    assert row["scheduled_start_time"] == "100000"
    assert row["resource_name"] == "3T MRI"
    assert row["study_description"] == "ADNI4"


# ---------------------------------------------------------------- resource and status mapping


def test_match_resource_is_case_insensitive_prefix():
    assert match_resource("3T MRI", ["3t"])
    assert match_resource("EEG Lab", ["3T MRI", "eeg"])
    assert not match_resource("Mock Scanner", ["3T MRI", "EEG"])
    assert not match_resource("MRI 3T", ["3T"])  # prefix, not substring
    assert match_resource("anything", [])  # none configured: all
    assert not match_resource(None, ["3T"])


def test_map_by_resource_exact_beats_prefix_and_longest_prefix_wins():
    mapping = {"3T": "MR", "3T MRI Research": "OT", "eeg": "EEG", "3T MRI": "XX"}
    assert map_by_resource("3T MRI", mapping, "DEF") == "XX"  # exact
    assert map_by_resource("3t mri", mapping, "DEF") == "XX"  # exact, any case
    assert map_by_resource("3T MRI Research 2", mapping, "DEF") == "OT"  # longest prefix
    assert map_by_resource("3T MRI (Prisma)", mapping, "DEF") == "XX"  # "3T MRI" beats "3T"
    assert map_by_resource("3T other", mapping, "DEF") == "MR"
    assert map_by_resource("EEG", mapping, "DEF") == "EEG"
    assert map_by_resource("Mock Scanner", mapping, "DEF") == "DEF"
    assert map_by_resource("Mock Scanner", {}, "DEF") == "DEF"


def test_default_ae_title():
    assert default_ae_title("3T MRI") == "3T_MRI"
    assert default_ae_title("Mock Scanner (old) #2") == "MOCK_SCANNER_OLD"
    assert default_ae_title("a" * 40) == "A" * 16
    assert default_ae_title("") == ""


@pytest.mark.parametrize(
    "status, cancelled, step, reason",
    [
        ("APPROVED", False, SCHEDULED, ""),
        ("approved", False, SCHEDULED, ""),
        ("Tentative", False, SCHEDULED, ""),  # in the filter below
        ("CANCELLED", False, DISCONTINUED, "cancelled in Calpendo"),
        ("cancelled", False, DISCONTINUED, "cancelled in Calpendo"),
        ("APPROVED", True, DISCONTINUED, "cancelled in Calpendo"),  # the flag wins
        ("DENIED", False, DISCONTINUED, "denied in Calpendo"),
        ("REQUESTED", False, None, "status REQUESTED not in filter"),
        ("", False, None, "status (empty) not in filter"),
    ],
)
def test_map_step_status(status, cancelled, step, reason):
    assert map_step_status(status, cancelled, ["APPROVED", "tentative"]) == (step, reason)


# ---------------------------------------------------------------- extraction and names


def test_extract_fields_named_and_numbered_groups():
    pattern = re.compile(r"^(?P<pid>[A-Z]+\d+)\s*-\s*(.+)$")
    extractions = [
        FieldExtraction("patient_id", pattern, "pid"),
        FieldExtraction("patient_name", pattern, 2),
    ]
    values, warnings = extract_fields("SUB0013 - Jane Doe", extractions, 7)
    assert values == {"patient_id": "SUB0013", "patient_name": "Jane Doe"}
    assert warnings == []


def test_extract_fields_non_match_leaves_fields_empty_with_a_warning():
    pattern = re.compile(r"^(?P<pid>SUB\d+)")
    extractions = [
        FieldExtraction("patient_id", pattern, "pid"),
        FieldExtraction("other_patient_ids", re.compile(r"alt=(\w+)"), 1),
    ]
    values, warnings = extract_fields("Jane Doe phantom QA", extractions, 42)
    assert values == {"patient_id": "", "other_patient_ids": ""}  # never the whole title
    assert warnings == [
        "booking 42: pattern did not match, left empty: patient_id, other_patient_ids"
    ]
    assert "Jane" not in warnings[0]  # titles hold names: not echoed into logs


def test_extract_fields_optional_group_that_did_not_participate():
    pattern = re.compile(r"^(?P<pid>SUB\d+)(?: - (?P<name>.+))?$")
    extractions = [
        FieldExtraction("patient_id", pattern, "pid"),
        FieldExtraction("patient_name", pattern, "name"),
    ]
    values, warnings = extract_fields("SUB0001", extractions, 1)
    assert values == {"patient_id": "SUB0001", "patient_name": ""}
    assert warnings == []
    values, warnings = extract_fields(None, extractions, 2)
    assert values == {"patient_id": "", "patient_name": ""}
    assert warnings and "booking 2" in warnings[0]


@pytest.mark.parametrize(
    "title, pid, name",
    [
        ("SUB0001", "SUB0001", "SUB0001"),  # no name: the participant ID serves as the name
        ("SUB0002 - Jane Doe", "SUB0002", "Doe^Jane"),
        ("SUB0003 - Müller^Jürgen", "SUB0003", "Müller^Jürgen"),
        ("SUB0004 - 山田^太郎", "SUB0004", "山田^太郎"),
        ("BRISK-005_Smith", "BRISK-005", "Smith"),
        ("sub-01: Doe, Jane", "sub-01", "Doe^Jane"),
        ("SUB0013_Jane Doe", "SUB0013", "Doe^Jane"),
    ],
)
def test_default_title_mapping(title, pid, name):
    row = one_row(booking(title=title))
    assert (row["patient_id"], row["patient_name"]) == (pid, name)
    assert row["skip_reason"] == ""


def test_participant_id_as_name_is_kept_verbatim():
    """An ID standing in for the name is not re-read as "Given Family"."""
    source = make_source(
        field_mapping={"title": {"_extract": {"patient_id": {"pattern": r"^(\S+)", "group": 1}}}}
    )
    row = bookings_to_rows([booking(title="EDM_SUB001")], source).frame.iloc[0]
    assert (row["patient_id"], row["patient_name"]) == ("EDM_SUB001", "EDM_SUB001")


@pytest.mark.parametrize(
    "title", ["", "TBD", "phantom QA", "call Bob re: consent", "Jane Doe", None]
)
def test_malformed_titles_are_not_published_and_never_become_ids(title):
    result = bookings_to_rows([booking(bid=77, title=title)], make_source())
    (row,) = frame_records(result.frame)
    assert row["patient_id"] == ""
    assert row["skip_reason"] == "no patient ID"
    assert "77" in result.present_ids  # the booking exists: it must not be cancelled
    assert result.excluded == {"no patient ID": 1}
    assert any(w.startswith("booking 77:") for w in result.warnings)


@pytest.mark.parametrize(
    "name, pn",
    [
        ("Jane Doe", "Doe^Jane"),
        ("  Jane   Doe ", "Doe^Jane"),
        ("Doe^John", "Doe^John"),
        ("Müller^Jürgen", "Müller^Jürgen"),
        ("Jürgen Müller", "Müller^Jürgen"),
        ("Doe, Jane", "Doe^Jane"),
        ("Tech, Anna", "Tech^Anna"),
        ("Jane Mary Doe", "Doe^Jane^Mary"),
        ("Jane_Doe", "Doe^Jane"),
        ("Madonna", "Madonna"),
        ("Doe\\Jane", "Jane^Doe"),  # backslash is the DICOM separator: removed
        ("Doe^Jane^^^", "Doe^Jane"),
        ("a^b^c^d^e^f^g", "a^b^c^d^e"),
        ("", ""),
        (None, ""),
        ({"name": "Tech, Anna"}, "Tech^Anna"),
    ],
)
def test_dicom_pn(name, pn):
    assert dicom_pn(name) == pn


def test_dicom_pn_caps_component_group_length():
    pn = dicom_pn("A" * 50 + " " + "B" * 50)
    assert len(pn) <= 64
    assert pn.startswith("B" * 50 + "^")


# ---------------------------------------------------------------- full rows


def test_row_for_a_typical_booking():
    source = make_source(
        config={
            "resource_modality_mapping": {"3T": "MR"},
            "resource_ae_title_mapping": {"3T MRI": "MRI3T"},
        }
    )
    result = bookings_to_rows([booking()], source)
    assert list(result.frame.columns) == list(ROW_COLUMNS)
    (row,) = frame_records(result.frame)
    assert row == {
        **row,
        "source": "mri3t",
        "booking_id": "7",
        "patient_id": "SUB0013",
        "patient_name": "Doe^Jane",
        "accession_number": accession_number("mri3t", "7"),
        "study_instance_uid": study_instance_uid("mri3t", "7"),
        "requested_procedure_id": step_id("mri3t", "7"),
        "scheduled_procedure_step_id": step_id("mri3t", "7"),
        "study_description": "BRISKP",
        "requested_procedure_description": "BRISKP",
        "scheduled_station_ae_title": "MRI3T",
        "scheduled_station_name": "3T MRI",
        "modality": "MR",
        "performing_physician_name": "Tech^Anna",
        "scheduled_start_utc": dt.datetime(2025, 2, 12, 17, 0, tzinfo=UTC),
        "site_timezone": "America/Edmonton",
        "scheduled_start_date": "20250212",
        "scheduled_start_time": "100000",
        "duration_minutes": 60,
        "step_status": SCHEDULED,
        "discontinued_reason": "",
        "booking_status": "APPROVED",
        "resource_name": "3T MRI",
        "project_name": "BRISKP",
        "skip_reason": "",
    }
    assert row["content_hash"] == content_hash(row)
    assert row_problems(row) == []
    assert result.present_ids == {"7"}
    assert result.excluded == {} and result.warnings == []


def test_row_columns_come_from_the_schema():
    table_columns = [c.name for c in WorklistItem.__table__.columns]
    assert set(SYNC_COLUMNS) <= set(table_columns)
    assert set(table_columns) - set(SYNC_COLUMNS) == {
        "id",
        "step_status_owner",
        "discontinued_at",
        "created_at",
        "updated_at",
    }
    assert ROW_COLUMNS == SYNC_COLUMNS + ("skip_reason",)


def test_frame_dtypes_and_empty_frame():
    result = bookings_to_rows([], make_source())
    assert list(result.frame.columns) == list(ROW_COLUMNS)
    assert len(result.frame) == 0
    full = bookings_to_rows(
        [booking(), booking(8, dateRange=None, formattedName=None)], make_source()
    )
    assert str(full.frame["scheduled_start_utc"].dtype) == "datetime64[us, UTC]"
    assert str(full.frame["duration_minutes"].dtype) == "Int64"
    assert full.frame["scheduled_start_utc"].isna().tolist() == [False, True]


def test_scope_and_status_filter():
    bookings = [
        booking(1),
        booking(2, resource={"name": "Mock Scanner"}),  # resource not configured
        booking(3, status="REQUESTED"),
        booking(4, status="TENTATIVE"),
        booking(5, status="approved"),
        booking(6, status="CANCELLED", cancellationReason="participant ill"),
        booking(7, status="APPROVED", cancelled=True),
        booking(8, status="DENIED"),
        booking(9, resource={"name": "eeg lab"}),
    ]
    result = bookings_to_rows(bookings, make_source())
    rows = {r["booking_id"]: r for r in frame_records(result.frame)}
    assert set(rows) == {"1", "5", "6", "7", "8", "9"}
    assert result.excluded == {"resource not configured": 1, "status not in filter": 2}
    assert result.present_ids == set(rows)
    assert rows["5"]["step_status"] == SCHEDULED
    assert rows["6"]["step_status"] == DISCONTINUED
    assert rows["6"]["discontinued_reason"] == "cancelled in Calpendo: participant ill"
    assert rows["6"]["booking_status"] == "CANCELLED"
    assert rows["7"]["discontinued_reason"] == "cancelled in Calpendo"
    assert rows["8"]["discontinued_reason"] == "denied in Calpendo"


def test_modality_and_ae_from_resource_mappings():
    source = make_source(
        config={
            "resources": [],
            "resource_modality_mapping": {"EEG": "EEG", "3T MRI": "MR"},
            "resource_ae_title_mapping": {"EEG": "EEGLAB"},
            "default_modality": "OT",
        }
    )
    bookings = [
        booking(1, resource={"name": "3T MRI"}),
        booking(2, resource={"name": "EEG Lab"}),
        booking(3, resource={"name": "Mock Scanner"}),
    ]
    rows = {r["booking_id"]: r for r in frame_records(bookings_to_rows(bookings, source).frame)}
    assert [rows[b]["modality"] for b in "123"] == ["MR", "EEG", "OT"]
    assert [rows[b]["scheduled_station_ae_title"] for b in "123"] == [
        "3T_MRI",
        "EEGLAB",
        "MOCK_SCANNER",
    ]
    assert rows["3"]["scheduled_station_name"] == "Mock Scanner"


def test_mapped_modality_wins_over_resource_mapping():
    source = make_source(
        config={"resource_modality_mapping": {"3T": "MR"}},
        field_mapping={"title": "patient_id", "project.name": "modality"},
    )
    row = one_row(booking(title="SUB1", project={"name": "ct"}), source)
    assert row["modality"] == "CT"



def test_mapped_resource_names_go_through_the_modality_mapping_with_one_warning():
    # Pylantir configs map "resource.formattedName" to modality: a resource name is no
    # DICOM CS, so it is looked up in resource_modality_mapping, else default_modality.
    source = make_source(
        config={"resources": [], "resource_modality_mapping": {"3T Diagnostic": "MR"},
                "default_modality": "OT"},
        field_mapping={"title": "patient_id", "resource.formattedName": "modality"},
    )
    bookings = [
        booking(5, title="SUB1", resource={"name": "3T Diagnostic", "formattedName": "3T Diagnostic"}),
        booking(6, title="SUB2", resource={"name": "3T Diagnostic", "formattedName": "3T Diagnostic"}),
        booking(7, title="SUB3", resource={"name": "3T Diagnostic", "formattedName": "Mock Room"}),
    ]
    result = bookings_to_rows(bookings, source)
    assert list(result.frame["modality"]) == ["MR", "MR", "OT"]
    about = [w for w in result.warnings if "modality" in w]
    assert about == [
        "field_mapping.resource.formattedName -> modality: 3 values are resource names or not "
        "DICOM modalities; they were mapped through config.resource_modality_mapping, else "
        "config.default_modality 'OT'"
    ]


def test_station_name_truncated_to_sh_and_descriptions_to_lo():
    long_resource = "3T MRI Siemens Prisma Fit Research"
    row = one_row(booking(resource={"name": long_resource}, project={"name": "P" * 80}))
    assert row["scheduled_station_name"] == long_resource[:16].rstrip()
    assert len(row["study_description"]) == 64
    assert row["resource_name"] == long_resource
    assert row_problems(row) == []


def test_unpublishable_rows_stay_in_the_frame_with_a_reason():
    bookings = [
        booking(1, dateRange=None, formattedName=None),
        booking(2, title="TBD", dateRange=None, formattedName=None),
        booking(3, title="X" * 70 + "1"),  # an ID longer than LO allows: never truncated
    ]
    result = bookings_to_rows(bookings, make_source())
    rows = {r["booking_id"]: r for r in frame_records(result.frame)}
    assert rows["1"]["skip_reason"] == "no start time"
    assert rows["1"]["scheduled_start_utc"] is None
    assert rows["2"]["skip_reason"] == "no start time; no patient ID"
    assert rows["3"]["skip_reason"] == "patient ID not valid for DICOM"
    assert result.present_ids == {"1", "2", "3"}
    assert result.excluded == {
        "no start time": 2,
        "no patient ID": 1,
        "patient ID not valid for DICOM": 1,
    }
    assert "booking 1: not published: no start time" in result.warnings


def test_skipped_bookings_count_as_present():
    result = bookings_to_rows([booking(1)], make_source(), skipped={"2": "404 Not Found"})
    assert result.present_ids == {"1", "2"}
    assert result.excluded == {"details not fetched": 1}
    assert "booking 2: details not fetched: 404 Not Found" in result.warnings
    assert list(result.frame["booking_id"]) == ["1"]


def test_duplicate_booking_ids_keep_the_first():
    result = bookings_to_rows([booking(1), booking(1, title="SUB9")], make_source())
    assert list(result.frame["patient_id"]) == ["SUB0013"]
    assert any("returned twice" in w for w in result.warnings)


def test_duration_from_finish_when_missing():
    row = one_row(
        booking(
            durationInMinutes=None,
            dateRange={"start": "2025-02-12 10:00:00.0", "finish": "2025-02-12 10:45:00.0"},
        )
    )
    assert row["duration_minutes"] == 45


# ---------------------------------------------------------------- hashing


def test_content_hash_is_stable_and_content_sensitive():
    row = one_row(booking())
    assert content_hash(row) == row["content_hash"]
    assert content_hash(dict(row)) == content_hash(row)
    # bookkeeping does not count
    assert (
        content_hash({**row, "skip_reason": "x", "content_hash": "y", "updated_at": 1})
        == row["content_hash"]
    )
    # content does
    assert content_hash({**row, "patient_name": "Doe^John"}) != row["content_hash"]
    assert content_hash({**row, "step_status": DISCONTINUED}) != row["content_hash"]
    later = row["scheduled_start_utc"] + dt.timedelta(minutes=30)
    assert content_hash({**row, "scheduled_start_utc": later}) != row["content_hash"]
    # the same instant in another zone, as a pandas Timestamp, or numpy ints: same hash
    assert (
        content_hash(
            {**row, "scheduled_start_utc": row["scheduled_start_utc"].astimezone(EDMONTON)}
        )
        == row["content_hash"]
    )
    assert (
        content_hash({**row, "scheduled_start_utc": pd.Timestamp(row["scheduled_start_utc"])})
        == row["content_hash"]
    )
    import numpy as np

    assert content_hash({**row, "duration_minutes": np.int64(60)}) == row["content_hash"]
    assert content_hash({**row, "duration_minutes": 60.0}) == row["content_hash"]
    # a transform of the same booking in a new run gives the same hash
    assert one_row(booking())["content_hash"] == row["content_hash"]
    assert set(HASH_COLUMNS) == set(SYNC_COLUMNS) - {"content_hash"}


@pytest.mark.external
def test_content_hash_is_the_same_in_another_process():
    row = one_row(booking())
    code = (
        "import datetime;"
        "from calpendo_assets.rows.model import content_hash;"
        f"row = {row!r};"
        "print(content_hash(row))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    assert out.stdout.strip() == row["content_hash"]


def test_vanished_reason_text():
    assert (
        VANISHED_REASON
        == "no longer in the source: deleted, moved out of the window, or status changed"
    )


# ---------------------------------------------------------------- speed


def test_5000_bookings_transform_well_under_a_second():
    source = make_source()
    bookings = [
        booking(
            i,
            title=f"SUB{i:04d} - Jane Doe",
            dateRange={"start": f"2026-03-{1 + i % 28:02d} {8 + i % 10:02d}:00:00.0"},
            resource={"name": ("3T MRI", "EEG Lab", "Mock Scanner")[i % 3]},
        )
        for i in range(5000)
    ]
    # Speed is measured by bench/sync_bench.py, not here.
    result = bookings_to_rows(bookings, source)
    assert len(result.frame) == 5000 - 5000 // 3 - (1 if 5000 % 3 > 2 else 0)


def test_dst_warnings_reach_the_sync_warnings_naming_the_booking(caplog):
    gap = booking(41, dateRange={"start": "2026-03-08 02:30:00.0", "finish": "2026-03-08 03:30:00.0"})
    overlap = booking(42, dateRange={"start": "2026-11-01 01:30:00.0", "finish": "2026-11-01 01:45:00.0"})
    result = bookings_to_rows([gap, overlap], make_source())
    notes = [w for w in result.warnings if "DST" in w]
    assert any(w.startswith("booking 41: start ") and "DST gap" in w for w in notes)
    assert any(w.startswith("booking 42: start ") and "DST overlap" in w for w in notes)
    rows = result.frame.set_index("booking_id")
    assert rows.loc["41", "scheduled_start_time"] == "033000"
    assert rows.loc["42", "scheduled_start_time"] == "013000"


# ---------------------------------------------------------------- multi-day bookings


def test_a_booking_that_ends_on_a_later_day_is_noted_and_scheduled_on_its_start_date():
    overnight = booking(
        51, title="SUB0051 - Night Owl",
        dateRange={"start": "2025-02-12 22:00:00.0", "finish": "2025-02-13 06:00:00.0"},
        durationInMinutes=480,
    )
    result = bookings_to_rows([overnight, booking(52)], make_source())
    rows = result.frame.set_index("booking_id")
    assert (rows.loc["51", "scheduled_start_date"], rows.loc["51", "scheduled_start_time"]) == (
        "20250212", "220000",
    )
    assert rows.loc["51", "skip_reason"] == ""  # still published
    assert list(result.multi_day) == ["51"]
    note = result.multi_day["51"]
    assert note == (
        "booking 51: a multi-day booking (from 2025-02-12 22:00 to 2025-02-13 06:00, "
        "site-local); its worklist step is scheduled on its start date"
    )
    assert note in result.warnings
    assert "Night" not in note and "Owl" not in note and "SUB0051" not in note


@pytest.mark.parametrize(
    "start, finish, minutes, multi_day",
    [
        ("2025-02-12 23:00:00.0", "2025-02-13 00:00:00.0", 60, False),  # ends at midnight
        ("2025-02-12 10:00:00.0", "2025-02-12 11:00:00.0", 60, False),
        ("2025-02-12 23:30:00.0", None, 45, True),  # no finish: start + duration
        ("2025-02-12 23:30:00.0", None, 30, False),
        ("2025-02-12 10:00:00.0", "2025-02-14 10:00:00.0", None, True),
    ],
)
def test_multi_day_is_a_later_local_day_of_the_finish(start, finish, minutes, multi_day):
    b = booking(53, dateRange={"start": start, "finish": finish}, durationInMinutes=minutes,
                formattedName=None)
    assert bool(bookings_to_rows([b], make_source()).multi_day) is multi_day


def test_a_value_that_cannot_be_used_warns_for_every_booking_that_has_it():
    # Normalisation is memoised per value: the warning must still name each booking.
    mapping = {"title": "patient_id", "dob": "patient_birth_date"}
    source = make_source(field_mapping=mapping)
    result = bookings_to_rows([booking(61, dob="soon"), booking(62, dob="soon")], source)
    assert [w for w in result.warnings if "patient_birth_date" in w] == [
        "booking 61: patient_birth_date is not a valid date",
        "booking 62: patient_birth_date is not a valid date",
    ]
