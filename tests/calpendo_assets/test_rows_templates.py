"""Templates for derived text (calpendo_assets.rows.templates)."""

from __future__ import annotations

import pytest

from calpendo_assets.rows.templates import (
    placeholders,
    render,
    render_templates,
    template_error,
    template_paths,
    validate_templates,
)

XNAT = "Project:{project.name} Subject:{patient_id} Session:{id}"
NESTED = {"id": 1234, "title": "SUB001 - Jane Doe", "project": {"name": "BRISK"}}
FLAT = {"id": "1234", "title": "SUB001 - Jane Doe", "project.name": "BRISK"}
FIELDS = {"patient_id": "SUB001", "patient_name": "Doe^Jane", "modality": "MR"}


@pytest.mark.parametrize("booking", [NESTED, FLAT], ids=["nested", "flat-dotted"])
def test_placeholders_read_record_paths_and_mapped_fields(booking):
    assert render(XNAT, booking, FIELDS) == ("Project:BRISK Subject:SUB001 Session:1234", [])


def test_a_worklist_field_wins_over_a_booking_key_of_the_same_name():
    booking = {**NESTED, "patient_id": "RAW-TITLE-TEXT"}
    assert render("{patient_id}", booking, FIELDS) == ("SUB001", [])
    # ... even when that field is empty: the name means the field, deterministically
    assert render("{patient_id}", booking, {"patient_id": ""}) == ("", ["patient_id"])


def test_braces_escape_like_str_format():
    text, missing = render("{{literal}} {modality} }}{{", NESTED, FIELDS)
    assert (text, missing) == ("{literal} MR }{", [])
    assert placeholders("{{not a placeholder}}") == ()


def test_values_are_text_of_the_booking_value():
    booking = {"id": 5, "resource": {"name": "3T Prisma", "id": 9}, "count": 0, "w": 72.0}
    assert render("{resource} {count} {w}", booking, {}) == ("3T Prisma 0 72", [])


def test_a_missing_placeholder_empties_the_field_with_one_warning():
    booking = {"id": 9, "title": "SUB001 - Jane Doe", "project": {"name": "  "}}
    values, warnings = render_templates(
        {
            "patient_comments": "Project:{project.name} Subject:{patient_id} {nowhere} {nowhere}",
            "scheduled_procedure_step_comments": "Title ok: {id}",
        },
        booking,
        {"patient_id": ""},
        booking_id="9",
    )
    assert values == {"patient_comments": "", "scheduled_procedure_step_comments": "Title ok: 9"}
    assert warnings == [
        "booking 9: patient_comments template: no value for "
        "{project.name}, {patient_id}, {nowhere}; left empty"
    ]


def test_warnings_name_placeholders_never_values():
    booking = {"id": 3, "title": "SUB001 - Jane Doe"}
    _, warnings = render_templates(
        {"patient_comments": "{title} {missing}"}, booking, {}, booking_id="3"
    )
    assert len(warnings) == 1
    assert "{missing}" in warnings[0] and "booking 3" in warnings[0]
    assert "Jane" not in warnings[0] and "SUB001" not in warnings[0]


def test_dotted_names_are_dictionary_lookups_never_attribute_access():
    # "{id.__class__}" is a valid dotted name, but it can only look up a key.
    assert render("{id.__class__}", NESTED, {}) == ("", ["id.__class__"])
    assert render("{title.upper}", NESTED, {}) == ("", ["title.upper"])


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{patient_id!r}", "{patient_id!r}: conversions (!r, !s, !a) are not allowed"),
        ("{patient_id!s}", "{patient_id!s}: conversions"),
        ("{patient_id:>20}", "{patient_id:>20}: format specs (after ':') are not allowed"),
        ("{a:{b}}", "{a:{b}}: format specs"),
        ("{}", "{}: a placeholder is a worklist field or a dotted record path"),
        ("{0}", "{0}: a placeholder is"),
        ("{a[0]}", "{a[0]}: a placeholder is"),
        ("{a.}", "{a.}: a placeholder is"),
        ("{two words}", "{two words}: a placeholder is"),
        ("Project:{project.name", "expected '}' before end of string (write {{ and }}"),
        ("a } b", "Single '}' encountered in format string (write {{ and }}"),
    ],
)
def test_template_error_refuses_anything_but_plain_placeholders(template, problem):
    error = template_error(template)
    assert error is not None and error.startswith(problem)


@pytest.mark.parametrize("template", [XNAT, "", "no placeholders", "{{}}", "{a_b.C9}"])
def test_template_error_accepts_plain_templates(template):
    assert template_error(template) is None


def test_template_error_wants_text():
    assert template_error(12) == "must be text, got int"


def test_validate_templates_names_the_field_at_fault():
    targets = ("patient_comments", "scheduled_procedure_step_comments")
    good = {"patient_comments": XNAT}
    assert validate_templates(good, targets) is good
    with pytest.raises(ValueError, match=r"^patient_comments: \{id!r\}: conversions"):
        validate_templates({"patient_comments": "{id!r}"}, targets)
    with pytest.raises(ValueError, match=r"^patient_name: not a field that takes"):
        validate_templates({"patient_name": "{title}"}, targets)
    with pytest.raises(ValueError, match=r"\{patient_comments\} is itself built by a template"):
        validate_templates(
            {"patient_comments": XNAT, "scheduled_procedure_step_comments": "{patient_comments}"},
            targets,
        )


def test_template_paths_lists_the_record_paths_to_fetch():
    templates = {
        "patient_comments": XNAT,
        "scheduled_procedure_step_comments": "{resource.name} {id} {modality} {{x}}",
    }
    fields = {"patient_id", "modality"}
    assert template_paths(templates, fields) == ["project.name", "id", "resource.name"]
    assert template_paths({}, fields) == []
