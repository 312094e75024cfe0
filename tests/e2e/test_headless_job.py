"""`dagster job execute -m calpendo_assets.definitions -j NAME_sync`, as an operator runs it.

Uses the shipped config/calpendo.json (only its base_url is pointed at this test's
simulator) and a real SQLite file, in a separate process.
"""

from __future__ import annotations

import pytest

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from mwl_service.engine import make_engine
from mwl_service.schema import SCHEDULED, WorklistItem
from tests.fixtures.sim import ROOT

pytestmark = pytest.mark.external

DAGSTER = str(Path(sys.executable).parent / "dagster")


def test_headless_sync_fills_the_worklist(calpendo_sim, pipeline_env, tmp_path, sqlite_url):
    names = pipeline_env["source_names"]
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    (tmp_path / "dagster_home").mkdir()
    proc = subprocess.run(
        [DAGSTER, "job", "execute", "-m", "calpendo_assets.definitions", "-j", f"{names[0]}_sync"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "RUN_SUCCESS" in proc.stdout + proc.stderr

    engine = make_engine(sqlite_url)
    with Session(engine) as s:
        published = {r.booking_id: r for r in s.scalars(select(WorklistItem))}
    engine.dispose()
    status = {str(b["id"]): b["properties"]["status"] for b in calpendo_sim.bookings()}
    scheduled = {b for b, r in published.items() if r.step_status == SCHEDULED}
    assert scheduled, "the sync published no work"
    assert all(status[b] == "APPROVED" for b in scheduled)
    assert all(status[b] in ("CANCELLED", "DENIED") for b in published.keys() - scheduled)
    assert all(r.source == names[0] for r in published.values())
    # The seed's first bookings today are well-formed titles: they must be there.
    ids = {r.patient_id for r in published.values()}
    assert {"SUB0001", "SUB0002", "SUB0003"} <= ids
    names_by_id = {r.patient_id: r.patient_name for r in published.values()}
    assert names_by_id["SUB0003"] == "Müller^Jürgen"
    assert names_by_id["SUB0002"] == "Doe^Jane"

    # Intermediate values stay in memory: no participant name is left on disk
    # under DAGSTER_HOME (run storage, logs or pickled asset values).
    leaked = [
        path for path in (tmp_path / "dagster_home").rglob("*")
        if path.is_file() and "Müller".encode() in path.read_bytes()
    ]
    assert leaked == []
