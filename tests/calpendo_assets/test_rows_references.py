"""`referenced_studies` through a source's field mapping: the items of Referenced Study
Sequence (0008,1110), each a Referenced SOP Class UID and a Referenced SOP Instance UID."""

from __future__ import annotations

import pytest

from calpendo_assets.rows.mapping import bookings_to_rows
from calpendo_assets.rows.model import frame_records
from calpendo_assets.rows.validation import invalid_values
from mwl_service.vr import canonical_uid_pairs, field_problem, uid_pairs
from tests.calpendo_assets.test_rows import booking, make_source, one_row

STUDY = "1.2.840.10008.3.1.2.3.1"
PRIOR = "1.2.826.0.1.3680043.8.498.77"
OTHER = "1.2.826.0.1.3680043.8.498.78"


@pytest.mark.parametrize(
    "value",
    [
        f"{STUDY}\\{PRIOR}",  # the stored form
        f" {STUDY} , {PRIOR} ",  # as a person types it
        [f"{STUDY}\\{PRIOR}"],  # a list property of pairs
        [STUDY, PRIOR],  # a list property of UIDs
        f"{STUDY};{PRIOR}\n",
    ],
)
def test_a_mapped_pair_becomes_one_item(value):
    source = make_source(field_mapping={"title": "patient_id", "PriorStudy": "referenced_studies"})
    row = one_row(booking(PriorStudy=value), source)
    assert row["referenced_studies"] == f"{STUDY}\\{PRIOR}"
    assert uid_pairs(row["referenced_studies"]) == [(STUDY, PRIOR)]


def test_several_pairs_and_a_template_for_a_site_that_keeps_only_the_study_uid():
    mapping = {
        "title": "patient_id",
        "_templates": {"referenced_studies": STUDY + "\\{PriorStudyUID}\\" + STUDY + "\\{Baseline}"},
    }
    row = one_row(booking(PriorStudyUID=PRIOR, Baseline=OTHER), make_source(field_mapping=mapping))
    assert uid_pairs(row["referenced_studies"]) == [(STUDY, PRIOR), (STUDY, OTHER)]


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (PRIOR, "has 1 UIDs, not SOP Class UID\\SOP Instance UID pairs"),
        (f"{STUDY}\\{PRIOR}\\{STUDY}", "has 3 UIDs"),
        (f"{STUDY}\\1.2.03", "UID 2 of 2 is not a valid UID"),
        (f"{STUDY}\\{'1.' * 40}1", "UID 2 of 2 is not a valid UID"),  # 81 characters
        (f"{STUDY}\\Jane^Doe", "UID 2 of 2 is not a valid UID"),
    ],
)
def test_an_unusable_value_is_left_empty_with_a_warning_naming_the_booking(value, why):
    source = make_source(field_mapping={"title": "patient_id", "Prior": "referenced_studies"})
    result = bookings_to_rows([booking(71, Prior=value)], source)
    (row,) = frame_records(result.frame)
    assert row["referenced_studies"] == ""
    assert row["skip_reason"] == ""  # the booking is still published, without a reference
    (warning,) = [w for w in result.warnings if "referenced_studies" in w]
    assert warning.startswith(f"booking 71: referenced_studies {why}")
    assert warning.endswith("left empty")
    assert "Jane" not in warning and "1.2.03" not in warning  # positions, never values


def test_no_value_no_reference_no_warning():
    source = make_source(field_mapping={"title": "patient_id", "Prior": "referenced_studies"})
    result = bookings_to_rows([booking(72, Prior=None), booking(73, Prior="")], source)
    assert [r["referenced_studies"] for r in frame_records(result.frame)] == ["", ""]
    assert not [w for w in result.warnings if "referenced_studies" in w]


def test_the_publish_check_refuses_a_stored_value_that_is_not_whole_pairs():
    rows = [one_row(booking(74))]
    frame = bookings_to_rows([booking(74)], make_source()).frame
    frame.loc[0, "referenced_studies"] = f"{STUDY}\\{PRIOR}\\{STUDY}"
    assert rows[0]["referenced_studies"] == ""
    assert invalid_values(frame) == [
        "booking 74: referenced_studies (UI) has 3 UIDs, not SOP Class UID\\SOP Instance UID "
        "pairs"
    ]
    assert field_problem("referenced_studies", f"{STUDY}\\{PRIOR}") is None
    assert field_problem("referenced_studies", f"{STUDY},{PRIOR}") is not None  # stored form only


def test_canonical_form_for_other_writers():
    # What mwl-api's manual items can call on a client's value.
    assert canonical_uid_pairs(f"{STUDY} {PRIOR}\t{STUDY},{OTHER}") == (
        f"{STUDY}\\{PRIOR}\\{STUDY}\\{OTHER}", None)
    assert canonical_uid_pairs("  ") == ("", None)
    assert canonical_uid_pairs(PRIOR)[0] == ""
