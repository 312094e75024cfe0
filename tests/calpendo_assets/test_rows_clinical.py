"""MR-console fields: units, rounding, coded values, text, and the per-booking entry point."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

import pytest
from pydicom import config as pydicom_config
from pydicom.valuerep import validate_value

from calpendo_assets.rows.clinical import (
    MR_FIELDS,
    SIZE,
    TEMPLATE_FIELDS,
    WEIGHT,
    template_record_paths,
    long_string,
    long_text,
    measure,
    mr_fields,
    pregnancy_status,
    requested_procedure_priority,
)
from calpendo_assets.rows.codes import CODE_COLUMNS
from calpendo_assets.rows.templates import validate_templates
from calpendo_assets.rows.names import dicom_pn


def measured(q, raw, unit):
    warnings: list[str] = []
    return measure(raw, q, unit, booking_id="B1", warnings=warnings), warnings


# ---------------------------------------------------------------- weight and size

CONVERTED = [
    (WEIGHT, 70, "kg", "70"),
    (WEIGHT, 72.5, "kg", "72.5"),
    (WEIGHT, Decimal("72.5"), "kg", "72.5"),
    (WEIGHT, "72.5", "kg", "72.5"),
    (WEIGHT, " 80 ", "kg", "80"),
    (WEIGHT, "+80", "kg", "80"),
    (WEIGHT, "72,5", "kg", "72.5"),  # decimal comma
    (WEIGHT, "72,5 kg", "kg", "72.5"),
    (WEIGHT, "80kg", "kg", "80"),
    (WEIGHT, "80 KG", "kg", "80"),
    (WEIGHT, "80 kgs", "kg", "80"),
    (WEIGHT, "80 kilograms", "kg", "80"),
    (WEIGHT, 72.45, "kg", "72.5"),  # half up to 0.1 kg, not half even
    (WEIGHT, 72.44, "kg", "72.4"),
    (WEIGHT, 165, "lb", "74.8"),  # 74.84274105 kg
    (WEIGHT, "165", "lb", "74.8"),
    (WEIGHT, "165 lb", "lb", "74.8"),
    (WEIGHT, "165 lbs", "kg", "74.8"),  # a unit in the value wins over the source's unit
    (WEIGHT, "165 Pounds", "kg", "74.8"),
    (WEIGHT, "80 kg", "lb", "80"),
    (WEIGHT, 1000, "lb", "453.6"),
    (WEIGHT, "0.2", "kg", "0.2"),  # smallest plausible (neonates)
    (WEIGHT, "650", "kg", "650"),
    (SIZE, 1.75, "m", "1.75"),
    (SIZE, "1,75", "m", "1.75"),
    (SIZE, "1.80", "m", "1.8"),
    (SIZE, 1.755, "m", "1.76"),  # half up to 0.01 m
    (SIZE, 1.754, "m", "1.75"),
    (SIZE, 175, "cm", "1.75"),
    (SIZE, "175 cm", "m", "1.75"),  # a unit in the value wins
    (SIZE, "175cm", "in", "1.75"),
    (SIZE, "1750 mm", "m", "1.75"),
    (SIZE, "1.75 metres", "cm", "1.75"),
    (SIZE, 69, "in", "1.75"),  # 1.7526 m
    (SIZE, "69 in", "m", "1.75"),
    (SIZE, '69"', "m", "1.75"),
    (SIZE, "69 inches", "cm", "1.75"),
    (SIZE, "5'9\"", "m", "1.75"),
    (SIZE, "5' 9\"", "m", "1.75"),
    (SIZE, "5 ft 9 in", "cm", "1.75"),
    (SIZE, "5 feet 9 inches", "m", "1.75"),
    (SIZE, "5'9", "m", "1.75"),
    (SIZE, "5’9”", "m", "1.75"),
    (SIZE, "5' 9.5\"", "m", "1.77"),
    (SIZE, "6 ft", "m", "1.83"),
    (SIZE, "6'", "m", "1.83"),
    (SIZE, "0.2", "m", "0.2"),
    (SIZE, "280 cm", "m", "2.8"),
]


@pytest.mark.parametrize(("q", "raw", "unit", "expected"), CONVERTED)
def test_weight_in_kg_to_a_tenth_and_size_in_m_to_a_centimetre(q, raw, unit, expected):
    value, warnings = measured(q, raw, unit)
    assert (value, warnings) == (expected, [])
    validate_value("DS", value, pydicom_config.RAISE)  # pydicom's own DS check


REFUSED = [
    (WEIGHT, "abc", "kg", "is not a number with an optional unit"),
    (WEIGHT, "1.2.3", "kg", "has an unknown unit (known: kg, lb)"),
    (WEIGHT, "1e3", "kg", "has an unknown unit (known: kg, lb)"),
    (WEIGHT, "80 stone", "kg", "has an unknown unit (known: kg, lb)"),
    (WEIGHT, "72 kg (approx.)", "kg", "has an unknown unit (known: kg, lb)"),
    (WEIGHT, "175 cm", "kg", "has a length unit"),
    (WEIGHT, True, "kg", "is not a number"),
    (WEIGHT, float("nan"), "kg", "is not a finite number"),
    (WEIGHT, float("inf"), "kg", "is not a finite number"),
    (WEIGHT, 0, "kg", "0 kg is outside 0.2-650 kg (no unit; units.patient_weight is 'kg')"),
    (WEIGHT, "-5", "kg", "-5 kg is outside 0.2-650 kg (no unit; units.patient_weight is 'kg')"),
    (WEIGHT, 700, "kg", "700 kg is outside 0.2-650 kg (no unit; units.patient_weight is 'kg')"),
    (WEIGHT, 0.1, "lb",
     "0.04536 kg is outside 0.2-650 kg (no unit; units.patient_weight is 'lb')"),
    (WEIGHT, "1500 lb", "kg", "680.4 kg is outside 0.2-650 kg (unit written: lb)"),
    (SIZE, "175", "m", "175 m is outside 0.2-2.8 m (no unit; units.patient_size is 'm')"),
    (SIZE, 1.75, "cm", "0.0175 m is outside 0.2-2.8 m (no unit; units.patient_size is 'cm')"),
    (SIZE, "70 kg", "m", "has a weight unit"),
    (SIZE, "1.75 yards", "m", "has an unknown unit (known: cm, in, m, mm)"),
    (SIZE, "tall", "m", "is not a number with an optional unit"),
    (SIZE, "12 ft", "m", "3.658 m is outside 0.2-2.8 m (unit written: in)"),
]


@pytest.mark.parametrize(("q", "raw", "unit", "why"), REFUSED)
def test_unusable_measures_are_left_empty_with_a_warning(q, raw, unit, why):
    assert measured(q, raw, unit) == ("", [f"booking B1: {q.field} {why}; left empty"])


@pytest.mark.parametrize("q", [WEIGHT, SIZE])
@pytest.mark.parametrize("raw", [None, "", "   "])
def test_absent_measures_are_empty_without_a_warning(q, raw):
    assert measured(q, raw, "m" if q is SIZE else "kg") == ("", [])


# ---------------------------------------------------------------- pregnancy status


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1, 1), (2, 2), (3, 3), (4, 4), (2.0, 2),
        ("1", 1), ("4", 4), ("0001", 1), ("0003", 3), (" 2 ", 2),
        ("no", 1), ("NO", 1), ("No", 1), ("not pregnant", 1), ("Not  Pregnant", 1),
        ("possibly", 2), ("POSSIBLY", 2), ("Possibly pregnant", 2),
        ("yes", 3), ("Yes", 3), ("YES", 3), ("definitely pregnant", 3),
        ("unknown", 4), ("Unknown", 4), ("UNKNOWN", 4),
    ],
)
def test_pregnancy_status_numbers_and_words(raw, expected):
    warnings: list[str] = []
    assert pregnancy_status(raw, booking_id="B1", warnings=warnings) == expected
    assert warnings == []


@pytest.mark.parametrize(
    "raw",
    [0, 5, -1, "0", "5", "0005", True, False, 2.5, "2.5", "maybe", "y", "n", "pregnant",
     "possible", "１", "yes no"],
)
def test_other_pregnancy_values_are_refused(raw):
    warnings: list[str] = []
    assert pregnancy_status(raw, booking_id="B1", warnings=warnings) is None
    assert warnings == [
        "booking B1: pregnancy_status is not 1-4 or no/possibly/yes/unknown; left empty"
    ]


@pytest.mark.parametrize("raw", [None, "", "  "])
def test_absent_pregnancy_status_is_none_without_a_warning(raw):
    warnings: list[str] = []
    assert pregnancy_status(raw, booking_id="B1", warnings=warnings) is None
    assert warnings == []


# ---------------------------------------------------------------- priority


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("STAT", "STAT"), ("stat", "STAT"), ("High", "HIGH"), (" routine ", "ROUTINE"),
     ("Medium", "MEDIUM"), ("low", "LOW"), ("", ""), (None, "")],
)
def test_priority_defined_terms_in_any_case(raw, expected):
    warnings: list[str] = []
    assert requested_procedure_priority(raw, booking_id="B1", warnings=warnings) == expected
    assert warnings == []


@pytest.mark.parametrize("raw", ["urgent", "ASAP", "1", "ROUTINE!", "rout ine", "normal"])
def test_other_priorities_are_refused(raw):
    warnings: list[str] = []
    assert requested_procedure_priority(raw, booking_id="B1", warnings=warnings) == ""
    assert warnings == [
        "booking B1: requested_procedure_priority is not one of "
        "STAT, HIGH, ROUTINE, MEDIUM, LOW; left empty"
    ]


# ---------------------------------------------------------------- text


def test_lo_text_is_one_clean_line_cut_at_64_with_a_warning():
    warnings: list[str] = []
    assert long_string(
        "medical_alerts", "Pacemaker\\MRI\nconditional\t ", booking_id="B1", warnings=warnings
    ) == "Pacemaker MRI conditional"
    assert long_string("allergies", ["Iodine", "", "Latex"], booking_id="B1",
                       warnings=warnings) == "Iodine, Latex"
    assert long_string("allergies", "x" * 64, booking_id="B1", warnings=warnings) == "x" * 64
    assert warnings == []
    assert long_string("allergies", "y" * 63 + " z", booking_id="B1",
                       warnings=warnings) == "y" * 63
    assert warnings == ["booking B1: allergies longer than 64 characters; cut"]


def test_lt_text_keeps_line_breaks_and_backslashes():
    warnings: list[str] = []
    text = "Line one  \r\nC:\\path\rLine\tthree\x00\n\x0cpage\n"
    assert long_text("patient_comments", text, booking_id="B1", warnings=warnings) == (
        "Line one\r\nC:\\path\r\nLine three\r\n\x0cpage"
    )
    assert warnings == []
    validate_value("LT", "Line one\r\nC:\\path", pydicom_config.RAISE)


def test_lt_text_is_cut_at_10240_with_a_warning():
    warnings: list[str] = []
    value = long_text("scheduled_procedure_step_comments", "a" * 10241, booking_id="B1",
                      warnings=warnings)
    assert value == "a" * 10240
    assert warnings == [
        "booking B1: scheduled_procedure_step_comments longer than 10240 characters; cut"
    ]
    assert long_text("patient_comments", "a" * 10240, booking_id="B1", warnings=[]) == "a" * 10240


# ---------------------------------------------------------------- mr_fields

UNITS = SimpleNamespace(patient_weight="lb", patient_size="cm")
CODE = SimpleNamespace(code_value="BR-T1", coding_scheme_designator="99SITE",
                       code_meaning="Brain T1")
BOOKING = {
    "id": 1234,
    "title": "SUB001 - Jane Doe",
    "project": {"name": "BRISK (Brain study)"},
    "properties": {"Weight": "165"},
    "Weight": 165,
    "WeightUnit": "lb",
}


def test_mr_fields_gives_every_column_from_mapped_values():
    mapped = {
        "patient_id": "SUB001",
        "patient_name": "Doe^Jane",
        "patient_weight": "165",
        "patient_size": 175,
        "pregnancy_status": "No",
        "medical_alerts": "Claustrophobic",
        "allergies": "Gadolinium",
        "requesting_physician": "Ann Smith",
        "requested_procedure_priority": "routine",
        "scheduled_procedure_step_comments": "Bring glasses",
    }
    values, warnings = mr_fields(
        BOOKING, mapped, booking_id="1234", project_name="BRISK (Brain study)", units=UNITS,
        scheduled_protocol_codes={"brisk": CODE}, requested_procedure_codes={},
        templates={"patient_comments": "Project:{project.name} Subject:{patient_id} Session:{id}"},
    )
    assert warnings == []
    assert set(values) == set(MR_FIELDS) | set(CODE_COLUMNS)
    assert values == {
        "patient_weight": "74.8",
        "patient_size": "1.75",
        "pregnancy_status": 1,
        "medical_alerts": "Claustrophobic",
        "allergies": "Gadolinium",
        "requesting_physician": "Smith^Ann",
        "requested_procedure_priority": "ROUTINE",
        "scheduled_procedure_step_comments": "Bring glasses",
        "patient_comments": "Project:BRISK (Brain study) Subject:SUB001 Session:1234",
        "scheduled_protocol_code_value": "BR-T1",
        "scheduled_protocol_coding_scheme_designator": "99SITE",
        "scheduled_protocol_coding_scheme_version": "",
        "scheduled_protocol_code_meaning": "Brain T1",
        "requested_procedure_code_value": "",
        "requested_procedure_coding_scheme_designator": "",
        "requested_procedure_coding_scheme_version": "",
        "requested_procedure_code_meaning": "",
    }


def test_a_booking_without_such_data_gets_empty_values_and_no_warning():
    values, warnings = mr_fields(
        {"id": 5}, {"patient_id": "SUB002"}, booking_id="5", project_name="OTHER"
    )
    assert warnings == []
    assert values == {
        **dict.fromkeys(MR_FIELDS, ""), "pregnancy_status": None,
        **dict.fromkeys(CODE_COLUMNS, ""),
    }


def test_units_default_to_kg_and_m_and_may_be_a_dict():
    mapped = {"patient_weight": 80, "patient_size": 1.8}
    for units in (None, SimpleNamespace(patient_weight=None, patient_size=None), {}):
        values, warnings = mr_fields({}, mapped, booking_id="1", project_name="", units=units)
        assert (values["patient_weight"], values["patient_size"], warnings) == ("80", "1.8", [])
    values, _ = mr_fields({}, {"patient_weight": 176, "patient_size": 71}, booking_id="1",
                          project_name="", units={"patient_weight": "lb", "patient_size": "in"})
    assert (values["patient_weight"], values["patient_size"]) == ("79.8", "1.8")


def test_a_unit_the_config_should_have_refused_is_an_error_not_a_warning():
    with pytest.raises(ValueError, match=r"units.patient_weight must be one of kg, lb"):
        mr_fields({}, {"patient_weight": 80}, booking_id="1", project_name="",
                  units=SimpleNamespace(patient_weight="stone", patient_size="m"))


def test_the_config_check_takes_templates_for_mappable_fields_only():
    ok = {"patient_comments": "Project:{project.name}", "patient_weight": "{Weight} {Unit}",
          "study_description": "{project.name}"}
    assert validate_templates(ok, TEMPLATE_FIELDS) is ok
    # Identifiers are the schema's own: no template may build them.
    with pytest.raises(ValueError, match=r"^accession_number: not a field that"):
        validate_templates({"accession_number": "{id}"}, TEMPLATE_FIELDS)


def test_a_template_for_a_field_that_is_not_an_mr_field_is_an_error():
    # The mapping step renders it (and normalises it for its VR); mr_fields never does.
    with pytest.raises(ValueError, match=r"'study_description' is not one of the MR fields"):
        mr_fields({"id": 1}, {}, booking_id="1", project_name="",
                  templates={"study_description": "{id}"})


def test_templates_build_fields_that_are_then_normalised():
    templates = {
        "patient_weight": "{Weight} {WeightUnit}",  # two Calpendo custom properties
        "scheduled_procedure_step_comments": "{patient_weight} kg",
        "medical_alerts": "{title} " + "x" * 60,
    }
    values, warnings = mr_fields(
        BOOKING, {"patient_weight": "999", "patient_size": "1.7"}, booking_id="1234",
        project_name="BRISK", units=None, scheduled_protocol_codes={"BRISK": CODE},
        templates=templates,
    )
    assert values["patient_weight"] == "74.8"  # the template wins over the mapped value
    # A template reading another template's field is refused by the config; even so,
    # it never sees the mapped value that the template replaced ("999").
    assert values["scheduled_procedure_step_comments"] == ""
    assert values["medical_alerts"] == ("SUB001 - Jane Doe " + "x" * 60)[:64]
    assert warnings == [
        "booking 1234: scheduled_procedure_step_comments template: "
        "no value for {patient_weight}; left empty",
        "booking 1234: medical_alerts longer than 64 characters; cut",
    ]
    values, warnings = mr_fields(
        BOOKING, {"patient_size": "170 cm"}, booking_id="1234", project_name="BRISK",
        scheduled_protocol_codes={"BRISK": CODE},
        templates={"patient_comments": "{patient_size} m, {scheduled_protocol_code_meaning}"},
    )
    assert (values["patient_comments"], warnings) == ("1.7 m, Brain T1", [])


def test_requesting_physician_uses_the_projects_name_rules():
    for name in ("Ann Smith", "Smith, Ann", "Smith^Ann", "Ann Mary Smith", "  "):
        values, _ = mr_fields({}, {"requesting_physician": name}, booking_id="1",
                              project_name="")
        assert values["requesting_physician"] == dicom_pn(name)
    assert dicom_pn("Ann Mary Smith") == "Smith^Ann^Mary"


def test_warnings_name_the_booking_never_participant_text():
    name = "Jane Doe"
    mapped = {
        "patient_weight": f"{name}",
        "patient_size": f"175 {name}",
        "pregnancy_status": name,
        "requested_procedure_priority": name,
        "medical_alerts": name * 10,
        "patient_comments": name * 2000,
    }
    _, warnings = mr_fields(
        {"id": 77, "title": f"SUB001 - {name}"}, mapped, booking_id="77", project_name="",
        templates={"allergies": "{title} {missing}"},
    )
    assert len(warnings) == 7
    for warning in warnings:
        assert warning.startswith("booking 77: ")
        assert "Jane" not in warning and "Doe" not in warning and "SUB001" not in warning


def test_template_record_paths_are_the_placeholders_that_are_not_worklist_fields():
    templates = {
        "patient_comments": "Project:{project.name} Subject:{patient_id} Session:{id}",
        "allergies": "{Allergies} {patient_weight} {booking_id} {requested_procedure_code_value}",
    }
    assert template_record_paths(templates) == ["project.name", "id", "Allergies"]
    assert template_record_paths(None) == []


@pytest.mark.parametrize("field", [f for f in MR_FIELDS if f not in (WEIGHT.field, SIZE.field)])
@pytest.mark.parametrize("raw", [None, ""])
def test_a_blank_field_is_given_what_its_reader_gives_it(field, raw):
    readers = {
        "pregnancy_status": lambda: pregnancy_status(raw, booking_id="b1", warnings=warnings),
        "requested_procedure_priority": lambda: requested_procedure_priority(
            raw, booking_id="b1", warnings=warnings
        ),
        "requesting_physician": lambda: dicom_pn(raw),
        "medical_alerts": lambda: long_string(field, raw, booking_id="b1", warnings=warnings),
        "allergies": lambda: long_string(field, raw, booking_id="b1", warnings=warnings),
        "patient_comments": lambda: long_text(field, raw, booking_id="b1", warnings=warnings),
        "scheduled_procedure_step_comments": lambda: long_text(
            field, raw, booking_id="b1", warnings=warnings
        ),
    }
    warnings: list[str] = []
    expected = readers[field]()
    values, got_warnings = mr_fields({}, {field: raw}, booking_id="b1", project_name="")
    assert values[field] == expected
    assert values[field] in ("", None)
    assert got_warnings == warnings == []
