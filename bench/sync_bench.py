"""Sync benchmark: fetch + transform + publish, per strategy, against the simulator.

The simulator runs as its own process (calpendo-sim) with an injected per-request
latency; this process does exactly what one Dagster sync does (calpendo_assets.sync
.run_sync) into a fresh SQLite file per measurement. Loopback only.

    python bench/sync_bench.py                      # N = 50, 1000, 5000; 50 ms latency
    python bench/sync_bench.py --sizes 50 1000 --latency 0.05
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from calpendo_assets.config import load_config
from calpendo_assets.sync import run_sync
from mwl_service.engine import make_engine

BIN = Path(sys.executable).parent
USER, PASSWORD = "bench", "bench-secret"
STATUSES = ["APPROVED", "REQUESTED", "TENTATIVE", "CANCELLED"]
STRATEGIES = [  # (label, fetch_strategy, max_workers)
    ("per-booking, 1 worker", "per_booking", 1),
    ("per-booking, 5 workers", "per_booking", 5),
    ("bulk", "bulk", 5),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_simulator(n: int, latency: float, port: int) -> subprocess.Popen:
    args = [str(BIN / "calpendo-sim"), "--host", "127.0.0.1", "--port", str(port),
            "--bookings", str(n), "--seed", "7", "--latency", str(latency),
            "--username", USER, "--password", PASSWORD]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
            return proc
        except urllib.error.HTTPError:
            return proc  # 401/404: it answers
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("calpendo-sim did not start")


def source_for(url: str, strategy: str, workers: int, workdir: Path):
    cfg = {"data_sources": [{
        "name": "bench", "type": "calpendo", "enabled": True, "sync_interval": 300,
        "operation_interval": {"start_time": [0, 0], "end_time": [0, 0]},
        "config": {"base_url": url, "status_filter": STATUSES, "past_days": 1,
                   "future_days": 7, "fetch_strategy": strategy, "max_workers": workers,
                   "retries": 0},
    }]}
    path = workdir / f"{strategy}-{workers}.json"
    path.write_text(json.dumps(cfg))
    return load_config(str(path))[0]


def measure(url: str, strategy: str, workers: int, workdir: Path, run: int) -> tuple[float, int, int]:
    source = source_for(url, strategy, workers, workdir)
    engine = make_engine(f"sqlite:///{workdir / f'wl-{strategy}-{workers}-{run}.db'}")
    env = {"CALPENDO_USERNAME": USER, "CALPENDO_PASSWORD": PASSWORD}
    t0 = time.perf_counter()
    details, _, published = run_sync(source, engine, env=env)
    elapsed = time.perf_counter() - t0
    engine.dispose()
    return elapsed, published.inserted, details.fetch.requests


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[50, 1000, 5000], help="booking counts")
    p.add_argument("--latency", type=float, default=0.05, help="per-request latency, s (0.05)")
    args = p.parse_args(argv)

    results: dict[tuple[int, str], float] = {}
    print(f"latency {args.latency * 1000:.0f} ms per request; simulator in its own process")
    print(f"{'N':>6}  {'strategy':<24} {'requests':>8} {'published':>9} {'seconds':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for n in args.sizes:
            port = free_port()
            sim = start_simulator(n, args.latency, port)
            try:
                for run, (label, strategy, workers) in enumerate(STRATEGIES):
                    secs, published, requests = measure(f"http://127.0.0.1:{port}", strategy,
                                                        workers, workdir, run)
                    results[(n, label)] = secs
                    print(f"{n:>6}  {label:<24} {requests:>8} {published:>9} {secs:>9.3f}", flush=True)
            finally:
                sim.terminate()
                sim.wait()
    print("\nratios (higher = faster)")
    for n in args.sizes:
        one, five, bulk = (results[(n, label)] for label, _, _ in STRATEGIES)
        print(f"  N={n:<5} per-booking 5 workers vs 1 worker: {one / five:6.1f}x   "
              f"bulk vs per-booking 5 workers: {five / bulk:6.1f}x   bulk: {bulk:.3f} s")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
