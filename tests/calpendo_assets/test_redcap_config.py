"""The ``redcap`` source's config: its keys, their checks, and Pylantir's REDCap entries.

`config/pylantir-redcap-example.json` is Pylantir's own multi-source example (its
``data_sources``, 0.3.5, verbatim); it loads unchanged, and each Pylantir key is given
its meaning once per process.
"""

from __future__ import annotations

import json
import logging
import re

import pytest

from calpendo_assets.config import load_config, parse_config
from calpendo_assets.config.load import forget_logged_notes
from calpendo_assets.core.errors import ConfigError
from calpendo_assets.sources.redcap.plugin import fetched_fields
from calpendo_assets.sources.redcap.pylantir import identifier_mapping
from tests.fixtures.sim import ROOT

URL = "https://redcap.example.org/api/"
ENV = {"REDCAP_API_URL": URL}
PYLANTIR = ROOT / "config" / "pylantir-redcap-example.json"
README = (ROOT / "README.md").read_text(encoding="utf-8")
TOKEN = "5E2B7C91A04D3F68E1B2C3D4A5F60789"


def redcap(config=None, field_mapping=None, **source) -> dict:
    entry = {"name": "scans", "type": "redcap", "config": {"url": URL, **(config or {})},
             "field_mapping": field_mapping or {"study_id": "patient_id"}, **source}
    return {k: v for k, v in entry.items() if v is not None}


def parse(*entries, env=ENV):
    return parse_config({"data_sources": list(entries)}, env=env)


def error_of(*entries, env=ENV) -> str:
    with pytest.raises(ConfigError) as info:
        parse(*entries, env=env)
    return str(info.value)


def test_defaults_are_the_issue_s_and_pylantir_s_field_names():
    (source,) = parse(redcap())
    s = source.settings
    assert (s.url, s.token_env, s.record_id_field, s.repeat_instrument, s.events) == (
        URL, "REDCAP_API_TOKEN", "record_id", "mri", ())
    assert (s.date_field, s.time_field, s.duration_minutes, s.duration_field) == (
        "mri_date", "mri_time", 60, None)
    assert (s.resource, s.resource_field, s.status_field, s.status_mapping) == (
        None, None, None, {})
    assert s.timezone == "America/Edmonton" and s.scheduled_statuses() == ("SCHEDULED",)
    assert source.notes == ()
    # The fields one export asks for: the mapped ones, then the visit's own; never the
    # record keys the plugin fills itself (status, durationInMinutes).
    assert fetched_fields(source, s) == ["study_id", "mri_time"]


def test_url_from_the_environment_and_the_config_wins():
    (source,) = parse(redcap(config={"url": None}), env={"REDCAP_API_URL": "http://h/redcap/api"})
    assert source.settings.url == "http://h/redcap/api/"  # the endpoint's trailing slash
    (source,) = parse(redcap(config={"url": "https://other.example.org/api/"}),
                      env={"REDCAP_API_URL": "http://h/api/"})
    assert source.settings.url == "https://other.example.org/api/"
    assert error_of(redcap(config={"url": None}), env={}) == (
        "data source 'scans': config.url: missing (set it in the config or in REDCAP_API_URL)")


@pytest.mark.parametrize("config, expected", [
    ({"url": "https://me:pw@redcap.example.org/api/"}, "config.url: must not contain credentials"),
    ({"url": "redcap.example.org/api/"}, "config.url: must be an http:// or https:// URL"),
    ({"token_env": "MY TOKEN"}, "config.token_env: must be an environment variable name"),
    ({"record_id_field": "Record_ID"}, "config.record_id_field: 'Record_ID' is not a REDCap field name"),
    ({"date_field": "[mri_date]"}, "config.date_field: '[mri_date]' is not a REDCap field name"),
    ({"events": ["t1 arm 1"]}, "config.events: 't1 arm 1' is not a REDCap unique event name"),
    ({"resource": "3T MRI", "resource_field": "mri_scanner"},
     "config: give resource or resource_field, not both"),
    ({"site_id": "792", "site": "792"}, "config: give site_id or site, not both"),
    ({"status_mapping": {"3": "CANCELLED"}}, "config: status_mapping needs status_field"),
    ({"status_field": "mri_status", "status_mapping": {"3": "GONE"}},
     "config.status_mapping.3: must be 'SCHEDULED', 'CANCELLED' or 'EXCLUDED', got 'GONE'"),
    ({"duration_minutes": 0}, "config.duration_minutes: must be >= 1, got 0"),
    ({"base_url": URL}, "config.base_url: unknown key (allowed: timezone,"),
])
def test_bad_keys_name_source_and_key(config, expected):
    assert error_of(redcap(config=config)).startswith(f"data source 'scans': {expected}")


def test_a_token_pasted_into_token_env_is_refused_without_echoing_it():
    message = error_of(redcap(config={"token_env": TOKEN}))
    assert message == ("data source 'scans': config.token_env: must name the environment "
                       "variable that holds the API token, not hold the token: take it out "
                       "of the config file")
    assert TOKEN not in message


def test_a_native_source_maps_its_identifiers_itself():
    entry = redcap()
    del entry["field_mapping"]
    assert error_of(entry) == "data source 'scans': field_mapping: nothing is mapped to patient_id"
    # Other targets are typos outside Pylantir's configs, as for every type.
    assert error_of(redcap(field_mapping={"study_id": "patient_id", "mri_instance": "session_id"})
                    ).startswith("data source 'scans': field_mapping.mri_instance: unknown "
                                 "worklist field 'session_id'")
    # Paths are REDCap field names: a Calpendo path cannot be fetched.
    assert error_of(redcap(field_mapping={"study_id": "patient_id", "booker.name":
                                          "study_description"})) == (
        "data source 'scans': field_mapping: 'booker.name' is not a REDCap field name "
        "(lower-case letters, digits and _, starting with a letter)")


def test_the_visit_s_own_fields_are_fetched_once_variables_never():
    (source,) = parse(redcap(
        config={"duration_field": "mri_minutes", "resource_field": "mri_scanner",
                "status_field": "mri_status", "time_field": None},
        field_mapping={"study_id": {"_extract": {"num": {"pattern": "(\\d+)$"}}},
                       "mri_status": "performed_procedure_step_status",
                       "_templates": {"patient_id": "P{num}-{mri_instance}"}}))
    assert source.mapping.variables == ("num",)
    assert fetched_fields(source, source.settings) == [
        "study_id", "mri_instance", "mri_minutes", "mri_scanner", "mri_status"]
    # REDCap's status comes from status_field through status_mapping, never a mapped path.
    assert source.mapping.status_path == "status"
    (note,) = source.notes
    assert "field_mapping.mri_status (the visit status: config.status_field 'mri_status' " \
           "through config.status_mapping; MPPS owns it after; this mapping is not used)" in note


def test_pylantir_s_example_loads_unchanged_with_each_meaning_said_once(caplog):
    forget_logged_notes()
    with caplog.at_level(logging.WARNING, logger="calpendo_assets.config"):
        main, site_b = load_config(str(PYLANTIR), env=ENV)
        load_config(str(PYLANTIR), env=ENV)  # Dagster loads the code location again
    assert (main.name, main.enabled, site_b.enabled) == ("main_redcap", True, False)
    assert (main.sync_interval, main.operation_interval.start_time) == (60, (8, 0))
    assert main.settings.site_id == "792" and main.settings.protocol_name() == "BRAIN_MRI_3T"
    code = main.settings.scheduled_protocol_codes[""]
    assert (code.code_value, code.coding_scheme_designator, code.code_meaning) == (
        "BRAIN_MRI_3T", "GEHC", "BRAIN_MRI_3T")
    assert site_b.settings.protocol_name() == "BRAIN_MRI_1.5T"
    assert site_b.settings.scheduled_protocol_codes == {}  # no designator: no code
    # Pylantir's identifiers, as extractions and templates; the protocol as description.
    assert main.mapping.templates == identifier_mapping("site_id")["_templates"]
    assert main.mapping.variables == ("study", "family")
    assert ("protocol_name", "scheduled_procedure_step_description") in main.mapping.direct
    assert set(main.mapping.mapped_fields()) == {
        "patient_birth_date", "patient_sex", "scheduled_procedure_step_description"}
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == len(main.notes) + len(site_b.notes) == 12  # once each
    said = "\n".join(m for m in messages if "'main_redcap'" in m)
    for meaning in ("field_mapping.mri_date (the visit's start from config.date_field",
                    "field_mapping.mri_instance -> session_id",
                    "maps nothing to patient_id, patient_name, "
                    "scheduled_procedure_step_description",
                    "config.site_id '792' is Pylantir's site: templates read it as {site_id}",
                    "Pylantir exported the records modified in the last sync_interval",
                    "every visit is SCHEDULED, as Pylantir sent them",
                    "Scheduled Protocol Code is 'BRAIN_MRI_3T' in scheme 'GEHC'"):
        assert meaning in said, meaning


def test_pylantir_0_3_6_site_key_appends_the_site_as_it_did():
    data = json.loads(PYLANTIR.read_text())
    entry = data["data_sources"][0]
    entry["config"] = {"site": "792", "protocol": "BRAIN_MRI_3T"}  # 0.3.6's spelling
    (source, _) = parse(*data["data_sources"])
    assert source.mapping.templates["patient_id"] == "sub_{study}_ses_{mri_instance}_fam_{family}_site_{site}"
    assert "site" in source.settings.own_paths() and source.settings.protocol_name() == "BRAIN_MRI_3T"


def test_a_mapping_that_names_the_identifiers_keeps_them():
    data = json.loads(PYLANTIR.read_text())
    mapping = data["data_sources"][0]["field_mapping"]
    mapping.update({"study_id": "patient_id", "mri_protocol": "protocol_name"})
    (source, _) = parse(*data["data_sources"])
    # patient_id is the site's; Pylantir's name template still fills patient_name.
    assert ("study_id", "patient_id") in source.mapping.direct
    assert set(source.mapping.templates) == {"patient_name"}
    # protocol_name is Pylantir's column for the step description: config.protocol yields.
    assert ("mri_protocol", "scheduled_procedure_step_description") in source.mapping.direct
    assert ("protocol_name", "scheduled_procedure_step_description") not in source.mapping.direct


def test_pylantir_columns_are_ours_by_another_name_for_every_type():
    entry = {"name": "mri", "type": "calpendo", "config": {"base_url": "http://127.0.0.1:8089"},
             "field_mapping": {"title": "patient_id", "Weight": "patient_weight_lb",
                               "Operator": "performing_physician", "resource.name": "station_name"}}
    (source,) = parse(entry)
    assert set(source.mapping.direct) == {
        ("title", "patient_id"), ("Weight", "patient_weight"),
        ("Operator", "performing_physician_name"), ("resource.name", "scheduled_station_name")}
    assert source.mapping.units == {"patient_weight": "lb"}
    (note,) = source.notes
    assert "field_mapping.Weight -> patient_weight_lb (patient_weight, read in lb" in note


def test_the_readme_worked_example_is_pylantir_s_identifiers():
    """The README's explicit mapping and the one a Pylantir config gets are the same."""
    section = README[README.index("#### Pylantir REDCap configurations"):]
    block = re.search(r"```json\n(.*?)\n```", section, re.DOTALL).group(1)
    worked = json.loads("{" + block + "}")  # a "field_mapping": {...} fragment
    (explicit,) = parse(redcap(config={"site_id": "792"}, **worked))
    data = json.loads(PYLANTIR.read_text())
    (implied, _) = parse(*data["data_sources"])
    for attribute in ("extractions", "templates", "variables"):
        assert getattr(explicit.mapping, attribute) == getattr(implied.mapping, attribute)


def test_pylantir_s_readme_entry_loads_with_its_columns_as_ours():
    """Pylantir 0.3.5's README example maps REDCap fields to its columns and to names it
    ignored; both load, and only what Pylantir stored is used (and fetched)."""
    mapping = {"study_id": "study_id", "instrument": "redcap_repeat_instrument",
               "session_id": "mri_instance", "family_id": "family_id",
               "youth_dob_y": "youth_dob_y", "t1_date": "t1_date", "demo_sex": "demo_sex",
               "scheduled_date": "mri_date", "scheduled_time": "mri_time",
               "mri_wt_lbs": "patient_weight_lb", "referring_physician": "referring_physician_name",
               "performing_physician": "performing_physician", "station_name": "station_name",
               "status": "performed_procedure_step_status"}
    (source,) = parse(redcap(config={"url": None, "site_id": "792", "protocol": "BRAIN_MRI_3T"},
                             field_mapping=mapping, sync_interval=60))
    assert set(source.mapping.direct) == {
        ("mri_wt_lbs", "patient_weight"), ("referring_physician", "referring_physician_name"),
        ("performing_physician", "performing_physician_name"),
        ("station_name", "scheduled_station_name"),
        ("protocol_name", "scheduled_procedure_step_description")}
    assert source.mapping.units == {"patient_weight": "lb"}
    assert fetched_fields(source, source.settings) == [
        "mri_wt_lbs", "referring_physician", "performing_physician", "station_name",
        "study_id", "family_id", "mri_instance", "mri_time"]
