"""Protocol / procedure codes chosen by project name (calpendo_assets.rows.codes)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from calpendo_assets.rows.codes import CODE_COLUMNS, code_columns, code_problems, match_by_name
from calpendo_assets.rows.scope import map_by_resource


def code(value: str, scheme: str = "99LOCAL", meaning: str = "Meaning") -> SimpleNamespace:
    return SimpleNamespace(code_value=value, coding_scheme_designator=scheme, code_meaning=meaning)


RULES = {"BRISK": "short", "BRISK Study": "long", "brisk study pilot": "longest", "CARDIO": "c"}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("BRISK Study", "long"),  # exact
        ("brisk study", "long"),  # exact, other case
        ("  Brisk Study  ", "long"),  # surrounding spaces ignored
        ("BRISK Study 2", "long"),  # longest prefix, not the shorter "BRISK"
        ("brisk study pilot B", "longest"),
        ("BRISKP (Brain network models)", "short"),
        ("CARDIOVASC", "c"),
        ("NEURO", None),  # no rule
        ("", None),
        (None, None),
        ("BRIS", None),  # a name shorter than every rule matches none
    ],
)
def test_match_by_name_exact_then_longest_prefix(name, expected):
    assert match_by_name(name, RULES) == expected


def test_match_by_name_default_and_catch_all():
    assert match_by_name("NEURO", RULES, "fallback") == "fallback"
    assert match_by_name("NEURO", {**RULES, "": "any"}) == "any"
    # the empty rule never beats a real prefix
    assert match_by_name("BRISK x", {"": "any", **RULES}) == "short"
    assert match_by_name("x", {}, "d") == "d"


def test_match_by_name_ties_keep_mapping_order():
    assert match_by_name("mri 3t", {"MRI": 1, "mri": 2}) == 1
    assert match_by_name("mri", {"MRI ": 1, "mri": 2}) == 1


@pytest.mark.parametrize(
    "name", ["BRISK Study", "brisk", "BRISK Study 2", "x", "", None, "brisk study pilot", " cardio"]
)
@pytest.mark.parametrize(
    "mapping",
    [RULES, {}, {"": "any", "B": 1}, {"mri": 1, "MRI": 2}, {"brisk study": 9, "BRISK": 3}],
)
def test_match_by_name_behaves_exactly_like_map_by_resource(name, mapping):
    # The lead can replace map_by_resource's body with a call to match_by_name.
    assert match_by_name(name, mapping, "dflt") == map_by_resource(name, mapping, "dflt")


def test_code_columns_from_the_matching_rules():
    values, warnings = code_columns(
        "BRISK Study 2",
        scheduled_protocol_codes={"BRISK": code("BR-T1", "99SITE", "Brain T1 protocol")},
        requested_procedure_codes={
            "brisk": code("P1", meaning="Short"),
            "brisk study": {"code_value": " P2 ", "coding_scheme_designator": "DCM",
                            "code_meaning": "MR brain"},
        },
        booking_id="B42",
    )
    assert warnings == []
    assert values == {
        "scheduled_protocol_code_value": "BR-T1",
        "scheduled_protocol_coding_scheme_designator": "99SITE",
        "scheduled_protocol_coding_scheme_version": "",
        "scheduled_protocol_code_meaning": "Brain T1 protocol",
        "requested_procedure_code_value": "P2",
        "requested_procedure_coding_scheme_designator": "DCM",
        "requested_procedure_coding_scheme_version": "",
        "requested_procedure_code_meaning": "MR brain",
    }
    assert tuple(values) == CODE_COLUMNS


def test_no_rule_gives_eight_empty_values_without_warning():
    for rules in (None, {}, {"CARDIO": code("C1")}):
        values, warnings = code_columns(
            "BRISK", scheduled_protocol_codes=rules, requested_procedure_codes=rules,
            booking_id="B1",
        )
        assert values == dict.fromkeys(CODE_COLUMNS, "")
        assert warnings == []


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (code("X" * 17), "code_value (SH) is 17 characters long (max 16)"),
        (code("X" * 16, scheme="S" * 17), "coding_scheme_designator (SH) is 17 characters long"),
        (code("X", meaning="M" * 65), "code_meaning (LO) is 65 characters long (max 64)"),
        (code("A\\B"), "code_value (SH) contains a backslash"),
        (code("A", meaning="two\nlines"), "code_meaning (LO) contains a control character"),
        (code(""), "code_value is required"),
        (SimpleNamespace(code_value="A", code_meaning="M"), "coding_scheme_designator is required"),
        ({"code_value": 12, "coding_scheme_designator": "L", "code_meaning": "M"},
         "code_value is required"),
        ({"code_value": "A", "coding_scheme_designator": "L", "code_meaning": "M",
          "coding_scheme_version": "V" * 17}, "coding_scheme_version (SH) is 17 characters"),
        ({"code_value": "A", "coding_scheme_designator": "L", "code_meaning": "M",
          "coding_scheme_version": " "}, "coding_scheme_version is required (non-empty text)"),
    ],
)
def test_code_problems_name_the_attribute(bad, problem):
    problems = code_problems(bad)
    assert len(problems) == 1
    assert problems[0].startswith(problem)


def test_longest_valid_code_has_no_problems():
    assert code_problems(code("X" * 16, "S" * 16, "M" * 64)) == []


def test_the_coding_scheme_version_comes_with_its_code():
    versioned = {"code_value": "MRBRAIN", "coding_scheme_designator": "99CALGARY",
                 "coding_scheme_version": " 2024 ", "code_meaning": "MR brain"}
    values, warnings = code_columns(
        "BRISK", scheduled_protocol_codes={"": versioned},
        requested_procedure_codes={"BRISK": code("P1")}, booking_id="B8",
    )
    assert warnings == []
    assert values["scheduled_protocol_coding_scheme_version"] == "2024"
    assert values["scheduled_protocol_code_value"] == "MRBRAIN"
    assert values["requested_procedure_coding_scheme_version"] == ""  # none configured
    assert code_problems(versioned) == []


def test_an_unusable_rule_leaves_its_sequence_empty_and_warns_with_the_booking():
    values, warnings = code_columns(
        "BRISK",
        scheduled_protocol_codes={"BRISK": code("X" * 17)},
        requested_procedure_codes={"BRISK": code("P1")},
        booking_id="B7",
    )
    assert values["scheduled_protocol_code_value"] == ""
    assert values["scheduled_protocol_code_meaning"] == ""
    assert values["requested_procedure_code_value"] == "P1"
    assert warnings == [
        "booking B7: the scheduled protocol code rule for its project is not usable "
        "(code_value (SH) is 17 characters long (max 16)); left empty"
    ]


def test_the_documented_example_rules():
    rules = {"BRISK": "BRISK-T1", "BRISK Pilot": "BRISK-P"}
    assert match_by_name("BRISK Pilot 2", rules) == "BRISK-P"
    assert match_by_name("BRISKP (Brain network models)", rules) == "BRISK-T1"
    assert match_by_name("CARDIO", {"": "MRBRAIN"}) == "MRBRAIN"
