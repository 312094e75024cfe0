"""A REDCap source through the Dagster assets, sensor and code location: the real
simulator on loopback (its today is today), a real SQLite worklist, the token from the
environment variable the config names, read when the run starts."""

from __future__ import annotations

import json
import logging

import dagster as dg
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from calpendo_assets.config import load_config
from calpendo_assets.definitions import build_definitions
from calpendo_assets.defs.assets import build_source_assets
from calpendo_assets.defs.automation import build_job, build_sensor
from calpendo_assets.defs.resources import SOURCE_ACCESS_KEY, WorklistDatabase, source_access
from mwl_service.engine import make_engine
from mwl_service.schema import WorklistItem
from tests.fixtures.dagster_instance import shared_instance
from tests.fixtures.redcap_sim import REDCAP_TOKEN
from tests.fixtures.sim import ROOT

WRONG = "ABCDEF0123456789ABCDEF0123456789"


@pytest.fixture
def sim(redcap_sim_factory):
    return redcap_sim_factory(today=None)  # the Dagster run's window is around today


@pytest.fixture
def source(sim, tmp_path, monkeypatch):
    for name in ("CALPENDO_USERNAME", "CALPENDO_PASSWORD", "CALPENDO_API_URL"):
        monkeypatch.delenv(name, raising=False)  # a REDCap-only site sets none of them
    monkeypatch.setenv("REDCAP_API_TOKEN", REDCAP_TOKEN)
    data = json.loads((ROOT / "config" / "redcap-example.json").read_text())
    data["data_sources"][0]["config"]["url"] = sim.url
    path = tmp_path / "redcap.json"
    path.write_text(json.dumps(data))
    (loaded,) = load_config(str(path))
    return loaded


def materialize(source, db_url, instance=None):
    return dg.materialize(
        [build_source_assets(source, retry_policy=None)],
        resources={"worklist_db": WorklistDatabase(url=db_url),
                   SOURCE_ACCESS_KEY: source_access([source])},
        instance=instance or shared_instance(), raise_on_error=False)


def rows(db_url) -> dict[str, tuple]:
    engine = make_engine(db_url)
    try:
        with Session(engine) as s:
            return {r.booking_id: (r.content_hash, r.updated_at, r.step_status)
                    for r in s.scalars(select(WorklistItem))}
    finally:
        engine.dispose()


def metadata(result, name: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events()
               if e.asset_key == dg.AssetKey(["mri_redcap", name])]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_the_sync_publishes_with_one_request_and_no_calpendo_variables(sim, source, sqlite_url):
    sim.reset_counts()
    result = materialize(source, sqlite_url)
    assert result.success
    assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()} == {
        "required_fields_present": True, "dicom_values_valid": True,
        "identifiers_unique": True, "mass_cancellation_guard": True}
    raw = metadata(result, "raw_bookings")
    assert (raw["http_requests"], raw["strategy"], raw["fetch_complete"]) == (1, "redcap", True)
    assert len(sim.record_requests()) == sim.request_count == 1
    today = {sim.booking_id(k) for k, v in sim.visits()
             if v["mri_date"] == sim.today.isoformat() and v["mri_status"] == "1"}
    assert len(today) >= 3 and today <= set(rows(sqlite_url))


def test_the_ui_shows_the_token_s_variable_never_its_value(source):
    access = source_access([source])
    assert (access.username, access.password) == ("", "")
    config = access.get_resource_definition().config_schema.as_field().default_value
    assert config["tokens"] == {"REDCAP_API_TOKEN": {"env": "REDCAP_API_TOKEN"}}
    assert REDCAP_TOKEN not in repr(access) + json.dumps(config)


@pytest.mark.parametrize("failure", ["refused token", "error body"])
def test_a_failed_fetch_fails_the_run_and_leaves_the_worklist(
        failure, sim, source, sqlite_url, tmp_path, monkeypatch, caplog):
    assert materialize(source, sqlite_url).success
    before = rows(sqlite_url)
    sim.add_visit(time="16:45")  # a change the failed run must not publish
    if failure == "refused token":
        monkeypatch.setenv("REDCAP_API_TOKEN", WRONG)  # read at run time: no reload
        expected = f"REDCap at {sim.url} refused the API token (HTTP 403)"
    else:
        sim.fail_requests(400, count=None, content_type="application/json",
                          body='{"error":"The value of the parameter \\"filterLogic\\" is not valid"}')
        expected = f'REDCap answered HTTP 400 for {sim.url}: The value of the parameter'
    home = tmp_path / "dagster_home"
    home.mkdir()
    caplog.set_level(logging.DEBUG)
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        result = materialize(source, sqlite_url, instance)
    assert not result.success
    [failure_event] = [e for e in result.all_events if e.is_step_failure]
    message = failure_event.step_failure_data.error.message
    assert expected in message and "Nothing was published" in message
    assert rows(sqlite_url) == before
    logged = caplog.text + "".join(str(e.message) for e in result.all_events)
    files = [p for p in home.rglob("*") if p.is_file()]
    assert files  # the instance's storage is there to search
    for secret in (REDCAP_TOKEN, WRONG):
        assert secret not in logged
        assert [p for p in files if secret.encode() in p.read_bytes()] == []


def test_the_sensor_hashes_the_same_one_export(sim, source):
    sensor = build_sensor(source, build_job(source))

    def tick(cursor=None):
        context = dg.build_sensor_context(
            cursor=cursor, resources={SOURCE_ACCESS_KEY: source_access([source])})
        return sensor.evaluate_tick(context)

    sim.reset_counts()
    first = tick()
    assert len(first.run_requests) == 1
    [asked] = sim.record_requests()
    assert sim.request_count == 1 and "filterLogic" in asked.params.names()
    assert "unchanged" in tick(first.cursor).skip_message
    key, _ = sim.visits()[0]
    sim.update_visit(key, mri_time="06:15")
    assert len(tick(first.cursor).run_requests) == 1
    sim.fail_requests(503, count=None)
    assert "window query failed" in tick(first.cursor).skip_message


def test_the_code_location_of_a_redcap_only_site(sim, source, sqlite_url, monkeypatch):
    monkeypatch.setenv("WORKLIST_DB_URL", sqlite_url)
    defs = build_definitions([source], retry_policy=None)
    assert {s.name for s in defs.sensors} == {"mri_redcap_sensor"}
    job = defs.resolve_job_def("mri_redcap_sync")
    assert job.execute_in_process(instance=shared_instance()).success
    assert rows(sqlite_url)
