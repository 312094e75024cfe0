"""Freshness benchmark: how long a booking change in Calpendo takes to reach C-FIND.

Starts the Calpendo simulator, `mwl-service` and `dagster dev` (the shipped
dagster.yaml, the sensor on with its shipped interval) on loopback, waits for the
first sync, then edits one booking at a time (a new participant ID in its title)
at a random moment and polls MWL C-FIND until the new ID is served. Prints p50 /
p95 / max of edit -> visible, and where the time went, from each run's own record:
edit -> run created (the sensor's poll), created -> started (run queue and launch),
started -> step done (process start, fetch, publish), step done -> visible.

    python bench/freshness_bench.py              # 20 edits
    python bench/freshness_bench.py --edits 40
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' helpers for dagster dev and DICOM

from calpendo_sim import CalpendoSimulator  # noqa: E402
from tests.fixtures.dagster_ui import DagsterUI, start_dagster_dev, stop_process_group  # noqa: E402
from tests.fixtures.dicom import free_port, mwl_query, pynetdicom_find  # noqa: E402

BIN = Path(sys.executable).parent
USER, PASSWORD = "bench", "bench-secret"
AET = "FRESHBENCH"
RUNS = """query Runs($job: String!) {
  runsOrError(filter: {pipelineName: $job}, limit: 200) {
    ... on Runs { results { runId creationTime startTime endTime status } }
  }
}"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def served_ids(port: int, patient_id: str) -> int:
    found, _ = pynetdicom_find("127.0.0.1", port, AET, mwl_query(PatientID=patient_id))
    return len(found)


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, RuntimeError, AssertionError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"freshness_bench: {what} did not happen within {timeout:.0f}s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--edits", type=int, default=20, help="number of edits (default 20)")
    p.add_argument("--bookings", type=int, default=60, help="simulated bookings (default 60)")
    p.add_argument("--seed", type=int, default=1, help="seed of the edit timing (default 1)")
    args = p.parse_args(argv)
    rng = random.Random(args.seed)

    tmp = Path(tempfile.mkdtemp(prefix="freshness-"))
    sim = CalpendoSimulator(host="127.0.0.1", port=0, bookings=args.bookings, seed=42,
                            username=USER, password=PASSWORD).start()
    cfg = json.loads((ROOT / "config" / "calpendo.json").read_text())
    source = next(s for s in cfg["data_sources"] if s.get("enabled", True))
    source["config"]["base_url"] = sim.url
    cfg["data_sources"] = [source]
    (tmp / "calpendo.json").write_text(json.dumps(cfg))
    db_url = f"sqlite:///{tmp / 'worklist.db'}"
    env = {**os.environ, "CALPENDO_MWL_CONFIG": str(tmp / "calpendo.json"),
           "WORKLIST_DB_URL": db_url, "CALPENDO_USERNAME": USER, "CALPENDO_PASSWORD": PASSWORD}
    mwl_port, ui_port = free_port(), free_port()
    mwl = subprocess.Popen([str(BIN / "mwl-service"), "--db-url", db_url, "--host", "127.0.0.1",
                            "--port", str(mwl_port), "--ae-title", AET],
                           stdout=open(tmp / "mwl.log", "wb"), stderr=subprocess.STDOUT)
    dagster = start_dagster_dev(tmp / "dagster_home", ui_port, env, tmp / "dagster.log")
    ui = DagsterUI(ui_port)
    job = f"{source['name']}_sync"
    try:
        ui.wait_until_up(dagster, tmp / "dagster.log")
        print(f"dagster dev up; waiting for the sensor's first sync ({tmp})", flush=True)
        wait_for(lambda: served_ids(mwl_port, "SUB0002") > 0, 180, "the first sync")
        today = sim.today
        booking = next(b for b in sim.bookings()
                       if b["properties"]["status"] == "APPROVED"
                       and b["properties"]["dateRange"]["start"].startswith(today.isoformat()))
        latencies, edits = [], []
        for i in range(args.edits):
            # A random phase against the sensor's interval, as real edits have.
            time.sleep(rng.uniform(2, 12))
            patient = f"FRESH{i:04d}"
            edited = time.time()
            sim.update_booking(booking["id"], title=f"{patient} - Bench Person")
            wait_for(lambda: served_ids(mwl_port, patient) > 0, 120, f"edit {i}")
            latency = time.time() - edited
            latencies.append(latency)
            edits.append((edited, edited + latency))
            print(f"  edit {i + 1:2d}: visible after {latency:5.1f} s", flush=True)

        runs = ui.graphql(RUNS, job=job)["runsOrError"]["results"]
        phases = {"sensor poll": [], "queue + launch": [], "run (step)": [], "to C-FIND": []}
        for edited, visible in edits:
            # The first run created after the edit is the one that published it.
            after = sorted((r for r in runs if r["creationTime"] >= edited and r["endTime"]),
                           key=lambda r: r["creationTime"])
            if not after:
                continue
            r = after[0]
            phases["sensor poll"].append(r["creationTime"] - edited)
            phases["queue + launch"].append(r["startTime"] - r["creationTime"])
            phases["run (step)"].append(r["endTime"] - r["startTime"])
            phases["to C-FIND"].append(max(0.0, visible - r["endTime"]))
    finally:
        stop_process_group(dagster)
        mwl.terminate()
        mwl.wait(timeout=20)
        sim.stop()

    print(f"\nedit -> visible in C-FIND, {len(latencies)} edits "
          f"({dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs):")
    print(f"  p50 {statistics.median(latencies):5.1f} s   p95 {percentile(latencies, 0.95):5.1f} s"
          f"   max {max(latencies):5.1f} s")
    print("where the time goes (mean, s):")
    for name, values in phases.items():
        if values:
            print(f"  {name:15s} {statistics.mean(values):5.1f}  (max {max(values):5.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
