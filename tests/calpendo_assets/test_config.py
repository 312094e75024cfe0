"""Data-source configuration: loading, validation messages, window and schedule helpers."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import re
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from calpendo_assets.config import enabled_sources, load_config, parse_config
from calpendo_assets.config.mapping import DEFAULT_FIELD_MAPPING, DEFAULT_TITLE_PATTERN
from calpendo_assets.core.credentials import Credentials, env_credentials
from calpendo_assets.core.errors import ConfigError
from calpendo_assets.core.source import DataSource, FieldExtraction
from calpendo_assets.core.window import Window, booking_window, in_operation_interval
from calpendo_assets.rows.mapping import bookings_to_rows
from calpendo_assets.rows.model import frame_records
from calpendo_assets.sources.registry import plugin_for

ROOT = Path(__file__).resolve().parents[2]
EDMONTON = ZoneInfo("America/Edmonton")
ENV = {}  # no CALPENDO_* variables unless a test sets them


def base_source(**overrides) -> dict:
    source = {
        "name": "mri3t",
        "type": "calpendo",
        "enabled": True,
        "sync_interval": 300,
        "operation_interval": {"start_time": [6, 0], "end_time": [22, 0]},
        "config": {"base_url": "http://127.0.0.1:8089", "resources": ["3T MRI"]},
    }
    source.update(overrides)
    return source


def parse(*sources, env=ENV) -> list[DataSource]:
    return parse_config({"data_sources": list(sources)}, env=env)


def error_of(*sources, env=ENV) -> str:
    with pytest.raises(ConfigError) as info:
        parse(*sources, env=env)
    return str(info.value)


def with_config(**config) -> dict:
    source = base_source()
    source["config"] = {**source["config"], **config}
    return source


# ---------------------------------------------------------------- happy path


def test_defaults_apply():
    (src,) = parse(base_source())
    assert src.name == "mri3t"
    assert src.enabled is True
    assert src.sync_interval == 300
    assert (src.operation_interval.start_time, src.operation_interval.end_time) == ((6, 0), (22, 0))
    assert src.settings.base_url == "http://127.0.0.1:8089"
    assert src.settings.resources == ("3T MRI",)
    assert src.settings.scheduled_statuses() == ("APPROVED",)
    assert (src.settings.past_days, src.settings.future_days) == (1, 7)
    assert src.settings.timezone == "America/Edmonton"
    assert src.tz == EDMONTON
    assert src.settings.default_modality == "MR"
    assert src.settings.fetch_strategy == "bulk"
    assert (src.settings.timeout, src.settings.retries, src.settings.backoff_factor, src.settings.max_workers) == (30, 3, 0.5, 5)
    assert (src.settings.max_cancel_fraction, src.settings.min_cancel_guard_rows) == (0.5, 5)
    # default field mapping
    assert ("project.name", "study_description") in src.mapping.direct
    assert ("project.name", "requested_procedure_description") in src.mapping.direct
    assert ("resource.name", "scheduled_station_name") in src.mapping.direct
    assert ("Operator", "performing_physician_name") in src.mapping.direct
    (path, extractions) = src.mapping.extractions[0]
    assert path == "title"
    assert [(x.field, x.group) for x in extractions] == [
        ("patient_id", "patient_id"),
        ("patient_name", "patient_name"),
    ]
    assert src.mapping.record_paths == (
        "project.name", "resource.name", "Operator", "title", "status", "durationInMinutes"
    )


def test_status_filter_accepts_one_string_any_case():
    (src,) = parse(with_config(status_filter="approved"))
    assert src.settings.scheduled_statuses() == ("APPROVED",)
    (src,) = parse(with_config(status_filter=["approved", "Tentative", "APPROVED"]))
    assert src.settings.scheduled_statuses() == ("APPROVED", "TENTATIVE")


def test_base_url_falls_back_to_env_and_config_wins():
    source = base_source()
    del source["config"]["base_url"]
    (src,) = parse(source, env={"CALPENDO_API_URL": "https://calpendo.example.org/"})
    assert src.settings.base_url == "https://calpendo.example.org"
    (src,) = parse(base_source(), env={"CALPENDO_API_URL": "https://elsewhere.example.org"})
    assert src.settings.base_url == "http://127.0.0.1:8089"
    msg = error_of(source)
    assert msg == (
        "data source 'mri3t': config.base_url: missing (set it in the config or in CALPENDO_API_URL)"
    )


def test_custom_field_mapping_and_extractions():
    mapping = {
        "title": {
            "_extract": {
                "patient_id": {"pattern": r"^(?P<pid>\w+)", "group": "pid"},
                "patient_name": {"pattern": r"^\w+_(.*)$", "group": 1},
            }
        },
        "project.formattedName": "study_description",
        "booker.name": ["referring_physician_name"],
    }
    (src,) = parse(base_source(field_mapping=mapping))
    assert src.mapping.direct == (
        ("project.formattedName", "study_description"),
        ("booker.name", "referring_physician_name"),
    )
    (path, (pid, name)) = src.mapping.extractions[0]
    assert path == "title"
    assert isinstance(pid, FieldExtraction)
    assert pid.pattern.pattern == r"^(?P<pid>\w+)" and pid.group == "pid"
    assert name.group == 1
    assert src.mapping.record_paths == (
        "project.formattedName", "booker.name", "title", "status", "durationInMinutes"
    )


def test_extracted_variables_feed_templates_only():
    mapping = {
        "title": {"_extract": {"site": {"pattern": r"^([A-Z]+)-"},
                               "num": {"pattern": r"-(\d+)"}}},
        "_templates": {"patient_id": "{site}_{num}", "patient_comments": "visit of {num}",
                       "patient_weight": "{num} lb"},
    }
    (src,) = parse(base_source(field_mapping=mapping))
    assert src.mapping.variables == ("site", "num")
    assert src.mapping.mapped_fields() == ()  # variables are no worklist fields
    # ... and no record paths: nothing asks Calpendo for "site" or "num".
    assert src.mapping.record_paths == ("title", "status", "durationInMinutes")
    booking = {"id": 5, "title": "EDM-0150 - Jane Doe", "status": "APPROVED",
               "resource": {"name": "3T MRI"}, "dateRange": {"start": "2026-03-10 10:00:00"}}
    [row] = bookings_to_rows([booking], src).frame.to_dict("records")
    assert (row["patient_id"], row["patient_comments"], row["patient_weight"]) == (
        "EDM_0150", "visit of 0150", "68")  # 150 lb, in kg
    assert "site" not in row and "num" not in row
    # A variable no template reads is the typo it looks like.
    unread = {"title": {"_extract": {"patient_id": {"pattern": "(x)"}, "num": {"pattern": "(x)"}}}}
    assert error_of(base_source(field_mapping=unread)).startswith(
        "data source 'mri3t': field_mapping.title._extract.num: unknown worklist field 'num'")


def test_resource_mappings_validated_as_dicom_values():
    (src,) = parse(
        with_config(
            resource_modality_mapping={"3T MRI": "MR", "EEG": "EEG"},
            resource_ae_title_mapping={"3T MRI": "MRI3T"},
        )
    )
    assert src.settings.resource_modality_mapping == {"3T MRI": "MR", "EEG": "EEG"}
    assert src.settings.resource_ae_title_mapping == {"3T MRI": "MRI3T"}


def test_disabled_sources_are_loaded_and_validated_but_not_enabled():
    sources = parse(base_source(), base_source(name="eeg", enabled=False))
    assert [s.name for s in sources] == ["mri3t", "eeg"]
    assert [s.name for s in enabled_sources(sources)] == ["mri3t"]
    msg = error_of(base_source(), base_source(name="eeg", enabled=False, type="ical"))
    assert "data source 'eeg': type: unknown type 'ical'" in msg


# ---------------------------------------------------------------- error messages


@pytest.mark.parametrize(
    "source, expected",
    [
        # missing keys
        (
            {k: v for k, v in base_source().items() if k != "type"},
            "data source 'mri3t': type: missing",
        ),
        (
            {k: v for k, v in base_source().items() if k != "config"},
            "data source 'mri3t': config: missing",
        ),
        ({k: v for k, v in base_source().items() if k != "name"}, "data source #1: name: missing"),
        (
            base_source(operation_interval={"start_time": [6, 0]}),
            "data source 'mri3t': operation_interval.end_time: missing",
        ),
        # wrong types (bool is not an int)
        (
            base_source(sync_interval="300"),
            "data source 'mri3t': sync_interval: must be an integer, got string '300'",
        ),
        (
            base_source(sync_interval=True),
            "data source 'mri3t': sync_interval: must be an integer, got boolean True",
        ),
        (
            base_source(enabled="yes"),
            "data source 'mri3t': enabled: must be true or false, got string 'yes'",
        ),
        (
            with_config(past_days=True),
            "data source 'mri3t': config.past_days: must be an integer, got boolean True",
        ),
        (
            with_config(future_days=1.5),
            "data source 'mri3t': config.future_days: must be an integer",
        ),
        (with_config(timeout="30"), "data source 'mri3t': config.timeout: must be a number"),
        (
            with_config(timeout=False),
            "data source 'mri3t': config.timeout: must be a number, got boolean",
        ),
        (
            with_config(resources={"a": 1}),
            "data source 'mri3t': config.resources: must be a string or a list",
        ),
        (
            with_config(resources=["3T", 7]),
            "data source 'mri3t': config.resources[1]: must be a string, got integer 7",
        ),
        (base_source(config=[]), "data source 'mri3t': config: must be an object, got list"),
        (
            with_config(max_workers=0),
            "data source 'mri3t': config.max_workers: must be >= 1, got 0",
        ),
        (
            with_config(max_cancel_fraction=1.5),
            "data source 'mri3t': config.max_cancel_fraction: must be <= 1",
        ),
        (with_config(retries=-1), "data source 'mri3t': config.retries: must be >= 0"),
        # values
        (
            with_config(timezone="Mars/Base"),
            "data source 'mri3t': config.timezone: unknown time zone 'Mars/Base'",
        ),
        (
            with_config(timezone="../etc/passwd"),
            "data source 'mri3t': config.timezone: unknown time zone",
        ),
        (
            base_source(type="ical"),
            "data source 'mri3t': type: unknown type 'ical' (known: calpendo, file, redcap)",
        ),
        (
            with_config(fetch_strategy="parallel"),
            "data source 'mri3t': config.fetch_strategy: must be 'bulk' or 'per_booking', got 'parallel'",
        ),
        (
            with_config(base_url="ftp://x"),
            "data source 'mri3t': config.base_url: must be an http:// or https:// URL",
        ),
        (
            with_config(base_url="http://user:pw@host"),
            "data source 'mri3t': config.base_url: must not contain credentials",
        ),
        (
            with_config(status_filter=[]),
            "data source 'mri3t': config.status_filter: must name at least one status",
        ),
        (
            with_config(resource_modality_mapping={"3T MRI": "mr"}),
            "data source 'mri3t': config.resource_modality_mapping.3T MRI: 'mr' is not a valid CS value",
        ),
        (
            with_config(resource_ae_title_mapping={"3T MRI": "A_VERY_LONG_AE_TITLE"}),
            "data source 'mri3t': config.resource_ae_title_mapping.3T MRI: 'A_VERY_LONG_AE_TITLE' is not a valid AE value",
        ),
        (
            with_config(resource_modality_mapping={"3T": "MR", "3t": "OT"}),
            "data source 'mri3t': config.resource_modality_mapping: '3t' duplicates '3T' (resource names are case-insensitive)",
        ),
        (
            with_config(default_modality="M R!"),
            "data source 'mri3t': config.default_modality: 'M R!' is not a valid CS value (a modality)",
        ),
        # schedule
        (
            base_source(sync_interval=59),
            "data source 'mri3t': sync_interval: must be >= 60, got 59",
        ),
        (
            base_source(operation_interval={"start_time": [25, 0], "end_time": [6, 0]}),
            "data source 'mri3t': operation_interval.start_time[0]: must be <= 23, got 25",
        ),
        (
            base_source(operation_interval={"start_time": [6, 60], "end_time": [6, 0]}),
            "data source 'mri3t': operation_interval.start_time[1]: must be <= 59, got 60",
        ),
        (
            base_source(operation_interval={"start_time": "06:00", "end_time": [6, 0]}),
            "data source 'mri3t': operation_interval.start_time: must be a list, got string '06:00'",
        ),
        # names usable as Dagster asset key prefixes
        (
            base_source(name="3T-mri"),
            "data source #1: name: '3T-mri' cannot prefix Dagster asset keys",
        ),
        (
            base_source(name="my source"),
            "data source #1: name: 'my source' cannot prefix Dagster asset keys",
        ),
        (base_source(name=""), "data source #1: name: must not be empty"),
        # unknown keys are errors, never ignored
        (base_source(sync_intervall=300), "data source 'mri3t': sync_intervall: unknown key"),
        (with_config(timzone="UTC"), "data source 'mri3t': config.timzone: unknown key"),
        (
            base_source(operation_interval={"start_time": [6, 0], "end_time": [7, 0], "days": [1]}),
            "data source 'mri3t': operation_interval.days: unknown key",
        ),
    ],
)
def test_validation_names_source_and_key(source, expected):
    assert error_of(source).startswith(expected)


@pytest.mark.parametrize(
    "mapping, expected",
    [
        ({"title": "patient_idd"}, "field_mapping.title: unknown worklist field 'patient_idd'"),
        (
            {"title": ["patient_id", "nope"]},
            "field_mapping.title[1]: unknown worklist field 'nope'",
        ),
        (
            {"title": {"_extract": {"patient_nam": {"pattern": "(x)", "group": 1}}}},
            "field_mapping.title._extract.patient_nam: unknown worklist field 'patient_nam'",
        ),
        (
            {"title": {"_extract": {"patient_id": {"pattern": "([A-Z", "group": 1}}}},
            "field_mapping.title._extract.patient_id.pattern: invalid regular expression",
        ),
        (
            {"title": {"_extract": {"patient_id": {"pattern": "([A-Z]+)", "group": 2}}}},
            "field_mapping.title._extract.patient_id.group: group 2 not in pattern (it has 1 groups)",
        ),
        (
            {"title": {"_extract": {"patient_id": {"pattern": "(?P<pid>[A-Z]+)", "group": "id"}}}},
            "field_mapping.title._extract.patient_id.group: no group named 'id' in pattern (named groups: pid)",
        ),
        (
            {"title": {"_extract": {"patient_id": {"pattern": "([A-Z]+)", "group": True}}}},
            "field_mapping.title._extract.patient_id.group: must be a group number or name, got boolean",
        ),
        (
            {"title": {"_extract": {"patient_id": {"group": 1}}}},
            "field_mapping.title._extract.patient_id.pattern: missing",
        ),
        (
            {"title": {"_extract": {"patient_id": {"pattern": "(x)", "grop": 1}}}},
            "field_mapping.title._extract.patient_id.grop: unknown key",
        ),
        ({"title": {"extract": {}}}, "field_mapping.title.extract: unknown key"),
        (
            {"title": "patient_id", "booker.name": "patient_id"},
            "field_mapping.booker.name: worklist field 'patient_id' is already mapped by field_mapping.title",
        ),
        ({"title!": "patient_id"}, "field_mapping.title!: not a dotted record path"),
        ({"project.name": "study_description"}, "field_mapping: nothing is mapped to patient_id"),
        ([], "field_mapping: must be an object, got list"),
    ],
)
def test_field_mapping_errors(mapping, expected):
    msg = error_of(base_source(field_mapping=mapping))
    assert msg.startswith(f"data source 'mri3t': {expected}")


def test_duplicate_source_names():
    msg = error_of(base_source(), base_source())
    assert msg == "data source 'mri3t': name: duplicate data source name"


def test_document_level_errors():
    with pytest.raises(ConfigError, match="config: data_sources: missing"):
        parse_config({}, env=ENV)
    with pytest.raises(ConfigError, match="config: data_sources: must be a list"):
        parse_config({"data_sources": {}}, env=ENV)
    with pytest.raises(ConfigError, match="config: datasources: unknown key"):
        parse_config({"data_sources": [], "datasources": []}, env=ENV)
    with pytest.raises(ConfigError, match=r"data source #2: must be an object"):
        parse_config({"data_sources": [base_source(), "eeg"]}, env=ENV)


# ---------------------------------------------------------------- files and environment


def test_load_config_from_env_path(tmp_path):
    path = tmp_path / "sources.json"
    path.write_text(json.dumps({"data_sources": [base_source()]}))
    sources = load_config(env={"CALPENDO_MWL_CONFIG": str(path)})
    assert [s.name for s in sources] == ["mri3t"]
    # an explicit path wins over the environment
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"data_sources": [base_source(name="eeg")]}))
    assert [s.name for s in load_config(str(other), env={"CALPENDO_MWL_CONFIG": str(path)})] == [
        "eeg"
    ]


def test_load_config_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(
        ConfigError, match=r"config file '.*nope.json' not found \(set CALPENDO_MWL_CONFIG"
    ):
        load_config(str(missing), env=ENV)
    broken = tmp_path / "broken.json"
    broken.write_text('{"data_sources": [')
    with pytest.raises(ConfigError, match=r"broken.json': invalid JSON at line 1"):
        load_config(str(broken), env=ENV)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"data_sources": [with_config(timezone="Mars/Base")]}))
    with pytest.raises(ConfigError) as info:
        load_config(str(bad), env=ENV)
    assert "data source 'mri3t': config.timezone: unknown time zone 'Mars/Base'" in str(info.value)


def test_default_path_is_config_calpendo_json(monkeypatch):
    monkeypatch.chdir(ROOT)
    sources = load_config(env=ENV)
    assert sources[0].name == "mri"


def test_shipped_config_targets_the_simulator():
    sources = load_config(str(ROOT / "config" / "calpendo.json"), env=ENV)
    enabled = enabled_sources(sources)
    assert [s.name for s in enabled] == ["mri"]
    mri = enabled[0]
    assert mri.settings.base_url == "http://127.0.0.1:8089"
    assert mri.settings.resources == ("3T MRI", "EEG Lab", "Mock Scanner")
    assert mri.settings.resource_modality_mapping["EEG Lab"] == "EEG"
    # the shipped file spells out the documented default field mapping, plus the
    # simulator's MR scan properties
    raw = json.loads((ROOT / "config" / "calpendo.json").read_text())
    shipped = dict(raw["data_sources"][0]["field_mapping"])
    assert {"Weight": shipped.pop("Weight"), "Height": shipped.pop("Height")} == {
        "Weight": "patient_weight", "Height": "patient_size"}
    assert shipped == json.loads(json.dumps(DEFAULT_FIELD_MAPPING))
    assert mri.settings.subtype_properties == {"MRIScan": ("Weight", "Height")}
    assert (mri.settings.units.patient_weight, mri.settings.units.patient_size) == ("kg", "cm")
    assert re.compile(DEFAULT_TITLE_PATTERN)


def test_credentials_from_env_only_and_never_echo_the_password():
    (src,) = parse(base_source())
    env = {"CALPENDO_USERNAME": "alice", "CALPENDO_PASSWORD": "s3cret-pw"}
    assert env_credentials(src, env) == Credentials("alice", "s3cret-pw")
    with pytest.raises(ConfigError) as info:
        env_credentials(src, {"CALPENDO_PASSWORD": "s3cret-pw"})
    assert str(info.value) == (
        "data source 'mri3t': credentials: environment variable CALPENDO_USERNAME is not set"
    )
    assert "s3cret" not in str(info.value)
    with pytest.raises(ConfigError, match="CALPENDO_PASSWORD is not set"):
        env_credentials(src, {"CALPENDO_USERNAME": "alice", "CALPENDO_PASSWORD": ""})


def test_source_is_frozen_and_the_default_mapping_not_mutated():
    pristine = copy.deepcopy(DEFAULT_FIELD_MAPPING)
    (src,) = parse(base_source())
    with pytest.raises(dataclasses.FrozenInstanceError):
        src.name = "x"  # type: ignore[misc]
    assert DEFAULT_FIELD_MAPPING == pristine


# ---------------------------------------------------------------- window and schedule


def test_booking_window_is_local_midnights():
    (src,) = parse(base_source())
    now = dt.datetime(2026, 2, 12, 23, 30, tzinfo=EDMONTON)  # 06:30 UTC on the 13th
    w = booking_window(src, now)
    assert isinstance(w, Window)
    assert w.start == dt.datetime(2026, 2, 11, tzinfo=EDMONTON)
    assert w.end == dt.datetime(2026, 2, 20, tzinfo=EDMONTON)
    assert w.start.utcoffset() == dt.timedelta(hours=-7)
    assert w.timezone == "America/Edmonton"
    # the same instant given in UTC gives the same window (site-local "today")
    assert booking_window(src, now.astimezone(dt.UTC)) == w


def test_booking_window_across_spring_forward():
    (src,) = parse(base_source())
    w = booking_window(src, dt.datetime(2026, 3, 7, 12, 0, tzinfo=EDMONTON))
    assert (w.start.hour, w.end.hour) == (0, 0)
    assert w.start.astimezone(dt.UTC) == dt.datetime(2026, 3, 6, 7, tzinfo=dt.UTC)
    assert w.end.astimezone(dt.UTC) == dt.datetime(2026, 3, 15, 6, tzinfo=dt.UTC)
    utc = dt.UTC
    assert w.end.astimezone(utc) - w.start.astimezone(utc) == dt.timedelta(days=9, hours=-1)


def test_booking_window_across_fall_back():
    (src,) = parse(with_config(past_days=0, future_days=1))
    w = booking_window(src, dt.datetime(2026, 10, 31, 20, 0, tzinfo=EDMONTON))
    assert w.start.astimezone(dt.UTC) == dt.datetime(2026, 10, 31, 6, tzinfo=dt.UTC)
    assert w.end.astimezone(dt.UTC) == dt.datetime(2026, 11, 2, 7, tzinfo=dt.UTC)
    utc = dt.UTC
    assert w.end.astimezone(utc) - w.start.astimezone(utc) == dt.timedelta(hours=49)
    assert w.contains(dt.datetime(2026, 11, 1, 8, 30, tzinfo=dt.UTC))
    assert not w.contains(w.end)


def test_booking_window_naive_now_is_site_local():
    (src,) = parse(with_config(past_days=0, future_days=0))
    w = booking_window(src, dt.datetime(2026, 2, 12, 23, 30))
    assert w.start == dt.datetime(2026, 2, 12, tzinfo=EDMONTON)
    assert w.end == dt.datetime(2026, 2, 13, tzinfo=EDMONTON)


@pytest.mark.parametrize(
    "interval, time, inside",
    [
        ({"start_time": [6, 0], "end_time": [22, 0]}, dt.time(6, 0), True),
        ({"start_time": [6, 0], "end_time": [22, 0]}, dt.time(21, 59, 59), True),
        ({"start_time": [6, 0], "end_time": [22, 0]}, dt.time(22, 0), False),
        ({"start_time": [6, 0], "end_time": [22, 0]}, dt.time(5, 59), False),
        ({"start_time": [22, 0], "end_time": [6, 0]}, dt.time(23, 0), True),  # overnight
        ({"start_time": [22, 0], "end_time": [6, 0]}, dt.time(2, 0), True),
        ({"start_time": [22, 0], "end_time": [6, 0]}, dt.time(6, 0), False),
        ({"start_time": [22, 0], "end_time": [6, 0]}, dt.time(12, 0), False),
        ({"start_time": [0, 0], "end_time": [0, 0]}, dt.time(3, 0), True),  # always
        (None, dt.time(3, 0), True),  # absent: always
    ],
)
def test_operation_interval(interval, time, inside):
    source = base_source(operation_interval=interval)
    if interval is None:
        del source["operation_interval"]
    (src,) = parse(source)
    assert in_operation_interval(src, time) is inside


# ---------------------------------------------------------------- keys for other engineers' features


def test_units_codes_and_templates_are_modelled():
    source = base_source(
        field_mapping={
            "title": "patient_id",
            "_templates": {"scheduled_procedure_step_description": "{project.name} on {resource.name}"},
        }
    )
    source["config"].update(
        units={"patient_weight": "lb", "patient_size": "cm"},
        scheduled_protocol_codes={
            "BRISKP": {"code_value": "BRAIN_STD", "coding_scheme_designator": "99LOCAL",
                       "code_meaning": "Standard brain"}
        },
    )
    (src,) = parse(source)
    assert (src.settings.units.patient_weight, src.settings.units.patient_size) == ("lb", "cm")
    code = src.settings.scheduled_protocol_codes["BRISKP"]
    assert (code.code_value, code.coding_scheme_designator, code.code_meaning) == (
        "BRAIN_STD", "99LOCAL", "Standard brain")
    assert src.settings.requested_procedure_codes == {}
    assert src.mapping.templates == {"scheduled_procedure_step_description": "{project.name} on {resource.name}"}
    # Template paths are fetched like mapped paths.
    assert {"project.name", "resource.name"} <= set(src.mapping.record_paths)
    (defaults,) = parse(base_source())
    assert (defaults.settings.units.patient_weight, defaults.settings.units.patient_size) == ("kg", "m")


def test_the_documented_catch_all_code_rule_loads():
    # README: "An empty key matches every project (a catch-all)".
    code = {"code_value": "MRBRAIN", "coding_scheme_designator": "99CALGARY",
            "code_meaning": "MR brain research"}
    (src,) = parse(with_config(requested_procedure_codes={"": code, " BRISK ": code}))
    assert set(src.settings.requested_procedure_codes) == {"", "BRISK"}
    assert src.settings.requested_procedure_codes[""].code_value == "MRBRAIN"


def test_the_documented_code_rules_load_with_a_catch_all_and_a_version():
    # README, "Protocol and procedure codes": "" is the rule of every project.
    source = with_config(
        scheduled_protocol_codes={
            "BRISK": {"code_value": "BRISK-T1", "coding_scheme_designator": "99CALGARY",
                      "code_meaning": "BRISK brain protocol"},
        },
        requested_procedure_codes={
            "": {"code_value": "MRBRAIN", "coding_scheme_designator": "99CALGARY",
                 "coding_scheme_version": "2024", "code_meaning": "MR brain research"},
        },
    )
    (src,) = parse(source)
    catch_all = src.settings.requested_procedure_codes[""]
    assert catch_all.coding_scheme_version == "2024"
    assert src.settings.scheduled_protocol_codes["BRISK"].coding_scheme_version is None
    (row,) = frame_records(bookings_to_rows([{
        "id": 5, "title": "SUB0005", "status": "APPROVED", "resource": {"name": "3T MRI"},
        "project": {"name": "NEURO"}, "dateRange": {"start": "2026-03-10 09:00:00.0"},
    }], src).frame)
    assert (row["requested_procedure_code_value"],
            row["requested_procedure_coding_scheme_version"]) == ("MRBRAIN", "2024")
    assert row["scheduled_protocol_code_value"] == ""  # NEURO has no protocol rule


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"units": {"patient_weight": "stone"}}, "config.units.patient_weight: must be 'kg' or 'lb', got 'stone'"),
        ({"units": {"height": "m"}}, "config.units.height: unknown key (allowed: patient_weight, patient_size)"),
        ({"requested_procedure_codes": {"P": {"code_value": "X"}}}, "config.requested_procedure_codes.P.coding_scheme_designator: missing"),
        ({"requested_procedure_codes": {"P": {"code_value": "X", "coding_scheme_designator": "L", "code_meaning": "M", "coding_scheme_version": ""}}}, "config.requested_procedure_codes.P.coding_scheme_version: must not be empty"),
        ({"resource_ae_title_mapping": {"3T MRI": ["MRI3T", "MRI3T\\2"]}}, "config.resource_ae_title_mapping.3T MRI[1]: 'MRI3T\\\\2' is not a valid AE value: backslash or control character"),
        ({"resource_ae_title_mapping": {"3T MRI": ["MRI3T", "A_VERY_LONG_AE_TITLE"]}}, "config.resource_ae_title_mapping.3T MRI[1]: 'A_VERY_LONG_AE_TITLE' is not a valid AE value"),
        # The column holds 10 (PostgreSQL refused the publish of an 11th).
        ({"resource_ae_title_mapping": {"3T MRI": [f"MRI{i}" for i in range(11)]}}, "config.resource_ae_title_mapping.3T MRI: 11 AE titles (max 10 per resource)"),
        ({"resource_ae_title_mapping": {"3T MRI": 7}}, "config.resource_ae_title_mapping.3T MRI: must be an AE title or a list of them, got integer 7"),
        ({"status_case": "title"}, "config.status_case: must be 'upper', 'lower' or 'as_given', got 'title'"),
        ({"max_retry_after": -1}, "config.max_retry_after: must be >= 0, got -1"),
    ],
)
def test_new_keys_are_validated(config, expected):
    assert error_of(with_config(**config)) .startswith(f"data source 'mri3t': {expected}")


def test_several_ae_titles_become_one_multi_value():
    (src,) = parse(with_config(resource_ae_title_mapping={"3T MRI": ["MRI3T", "MRI3T2"], "EEG": "EEGLAB"}))
    assert src.settings.resource_ae_title_mapping == {"3T MRI": ["MRI3T", "MRI3T2"], "EEG": "EEGLAB"}
    booking = {"id": 1, "title": "SUB1", "status": "APPROVED", "resource": {"name": "3T MRI"},
               "dateRange": {"start": "2026-02-12 10:00:00.0"}}
    (row,) = bookings_to_rows([booking], src).frame.to_dict("records")
    assert row["scheduled_station_ae_title"] == "MRI3T\\MRI3T2"


def test_every_mappable_field_is_accepted():
    from mwl_service.schema import MAPPABLE_FIELDS

    mapping = {f"x.f{i}": name for i, name in enumerate(MAPPABLE_FIELDS)}
    (src,) = parse(base_source(field_mapping=mapping))
    assert set(src.mapping.mapped_fields()) == set(MAPPABLE_FIELDS)


def test_operator_subtype_and_property_are_config():
    (src,) = parse(with_config(operator_type="ScanBooking", operator_property="Radiographer"))
    assert (src.settings.operator_type, src.settings.operator_property) == ("ScanBooking", "Radiographer")
    (src,) = parse(with_config(operator_type=None))
    assert src.settings.operator_type is None


def test_shipped_manual_entries_example_is_readable():
    sources = {s.name: s for s in load_config(str(ROOT / "config" / "calpendo.json"), env=ENV)}
    manual = sources["manual_entries"]
    assert (manual.type, manual.enabled) == ("file", False)
    assert manual.settings.path == str(ROOT / "config" / "manual-entries.csv")
    assert plugin_for(manual.type).probe(manual) == f"{ROOT / 'config' / 'manual-entries.csv'}: 1 entry readable"


@pytest.mark.parametrize(
    "document, expected",
    [
        ({"data_sources": [{"name": "a", "type": 7, "config": {}}]}, "data source 'a': type: must be a string, got integer 7"),
        ({"data_sources": [{"name": "a", "config": {}}]}, "data source 'a': type: missing"),
        ({"data_sources": [], "x": 1}, "config: x: unknown key (allowed: data_sources)"),
        (
            {"data_sources": [{"name": "a", "type": "calpendo", "config": {"base_url": "http://x", "timeout": "30"}}]},
            "data source 'a': config.timeout: must be a number, got string '30'",
        ),
    ],
)
def test_type_and_document_errors(document, expected):
    with pytest.raises(ConfigError) as info:
        parse_config(document, env={})
    assert str(info.value) == expected


@pytest.mark.parametrize("name", ["manual", "Manual"])
def test_the_manual_items_source_name_is_reserved(name, tmp_path):
    raw = {"name": name, "type": "file", "config": {"path": "entries.csv"}}
    with pytest.raises(ConfigError, match=rf"data source '{name}': name: reserved for the "
                       r"worklist's manual items"):
        parse_config({"data_sources": [raw]}, env={}, base_dir=tmp_path)
