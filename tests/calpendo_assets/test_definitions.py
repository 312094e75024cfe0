"""The code location's stable interface (docs/architecture.md): names users' scripts rely on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from calpendo_assets.config import load_config
from calpendo_assets.core.credentials import Credentials
from calpendo_assets.definitions import build_definitions
from calpendo_assets.defs.resources import SourceAccess
from tests.fixtures.sim import ROOT, shipped_config_for

ASSETS = ["raw_bookings", "booking_details", "worklist_rows", "cancellation_reconciliation", "worklist"]


def test_names_per_data_source(tmp_path):
    path, names = shipped_config_for("http://127.0.0.1:9", tmp_path)
    defs = build_definitions([s for s in load_config(str(path)) if s.enabled])
    graph = defs.resolve_asset_graph()
    for name in names:
        keys = {dg.AssetKey([name, a]) for a in ASSETS}
        assert keys <= set(graph.get_all_asset_keys())
        # Lineage: each asset depends on the one before it.
        for upstream, downstream in zip(ASSETS, ASSETS[1:]):
            parents = graph.get(dg.AssetKey([name, downstream])).parent_keys
            assert dg.AssetKey([name, upstream]) in parents
        job = defs.resolve_job_def(f"{name}_sync")
        assert set(job.asset_layer.selected_asset_keys) == keys
        assert defs.resolve_schedule_def(f"{name}_schedule").job_name == f"{name}_sync"
        assert defs.resolve_sensor_def(f"{name}_sensor").job_name == f"{name}_sync"
        # One step, one pool per source: the publish limit of dagster.yaml applies.
        assert job.graph.pools == {f"calpendo_mwl_{name}"}
        assert {graph.get(k).group_name for k in keys} == {name}
        checks = {k.name for k in graph.asset_check_keys if k.asset_key.path[0] == name}
        assert checks == {
            "required_fields_present",
            "dicom_values_valid",
            "identifiers_unique",
            "mass_cancellation_guard",
        }


def test_the_retention_job_and_its_schedule_are_in_the_code_location(tmp_path):
    path, _ = shipped_config_for("http://127.0.0.1:9", tmp_path)
    defs = build_definitions([s for s in load_config(str(path)) if s.enabled])
    assert defs.resolve_job_def("worklist_retention").name == "worklist_retention"
    schedule = defs.resolve_schedule_def("worklist_retention_schedule")
    assert schedule.job_name == "worklist_retention"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


@pytest.mark.external
def test_dg_check_defs_with_the_shipped_config():
    dg_cli = str(Path(sys.executable).parent / "dg")
    env = {k: v for k, v in os.environ.items() if k != "CALPENDO_MWL_CONFIG"}
    proc = subprocess.run(
        [dg_cli, "check", "defs"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All definitions loaded successfully" in proc.stdout + proc.stderr


def test_the_source_access_resource_keeps_its_key_and_asks_only_what_sources_need(tmp_path):
    path, _ = shipped_config_for("http://127.0.0.1:9", tmp_path)
    sources = load_config(str(path))
    calpendo = [s for s in sources if s.type == "calpendo"]
    files = [s for s in sources if s.type == "file"]
    assert calpendo and files
    # The key deployments name stays `calpendo`, whatever the source types.
    resources = build_definitions(calpendo).resources
    assert set(resources) == {"worklist_db", "calpendo"}
    access = resources["calpendo"]
    assert isinstance(access, SourceAccess)
    assert (access.username, access.password) == (
        dg.EnvVar("CALPENDO_USERNAME"), dg.EnvVar("CALPENDO_PASSWORD"),
    )
    # A site with only file sources sets no credentials, not fake ones.
    file_only = build_definitions(files).resources["calpendo"]
    assert file_only == SourceAccess() and file_only.credentials() is None
    assert SourceAccess(username="u", password="p").credentials() == Credentials("u", "p")
