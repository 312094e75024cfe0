"""Worklist benchmark: mwl-service against the floor, DCMTK wlmscpfs and Orthanc,
timed with DCMTK findscu -W.

For each size N the same N worklist items go into a fresh SQLite worklist DB (for
mwl-service) and into one .wl file each (for wlmscpfs and Orthanc's Worklists
plugin, which read the same folder). Every server runs as its own process on
loopback; every timed run is a fresh findscu/echoscu process with a new
association, so the numbers are what a scanner sees (process start + association
+ query + answers). The layout is 10 stations x 10 days x N/100 items per
station-day, so at N=10000 "one station, one day" is 100 items.

The floor (bench/mwl_floor.py) is the fastest any server could be: plain sockets
replaying, byte for byte, what mwl-service answered to the same request (recorded
once through a proxy, and checked to give findscu the same response files), with
every segment acknowledged at once.

Rows:
  broad       all items of the 10-day SPS start date range (returns N)
  broad -q    the same with findscu -q (prints nothing per answer, as a console)
  typical     one Scheduled Station AE Title + one day    (N/100)
  narrow      one Patient ID                              (a few)
  echo        echoscu: the association alone
  conc p50/95 CLIENTS findscu processes at once, each the typical query (a station
              each), --concurrent-rounds times, while a publisher process rewrites a
              tenth of the worklist in a loop (one transaction for mwl-service, the
              same items' .wl files, written and renamed, for wlmscpfs and Orthanc)
Columns: median seconds per run; mwl/floor (1.00 = at the floor); vs wlmscpfs and
vs orthanc = peer / mwl-service (higher = mwl-service faster). The servers take
turns within each repeat, and each ratio is the median of the repeats' own ratios,
so a change of machine load between repeats does not tilt it.

Then mwl-service's CPU with 16 idle associations open, and, with --pg-url or
MWL_BENCH_PG_URL, two mwl-service replicas on one PostgreSQL worklist against one
(16 clients at once, p50/p95); without a PostgreSQL URL that case is skipped.

Before timing, each query runs once against every server with responses extracted
to files; all must return exactly the expected items (identifiers, decoded names,
step).

    python bench/mwl_bench.py                          # N = 1000, 10000; 9 repeats (broad: 5)
    python bench/mwl_bench.py --sizes 1000 --repeats 9
    python bench/mwl_bench.py --pg-url postgresql+psycopg://postgres@127.0.0.1:55400/DB
    python bench/mwl_bench.py --large                  # adds N = 100000 (minutes)

How the numbers were found and what they mean: bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mwl_bench_clients import (
    answered,
    concurrent_latencies,
    echo_request,
    findscu_args,
    idle_cpu,
    percentile,
    record,
    response_files,
    timed_runs,
)
from mwl_bench_data import FIRST_DAY, load_database, make_items, queries, write_wl_files
from mwl_bench_peers import (
    BIN,
    DCMTK_AET,
    ORTHANC_AET,
    OUR_AET,
    Peer,
    echo_args,
    floor_cmd,
    free_port,
    mwl_service_cmd,
    orthanc_cmd,
    orthanc_executable,
    orthanc_plugin,
    start,
    stop,
    wlmscpfs_cmd,
)
from mwl_bench_replicas import PG_ENV, replica_latencies

CLIENTS = 8  # concurrent findscu processes in the concurrency case
REPLICA_CLIENTS = 16
IDLE_ASSOCIATIONS = 16


@dataclass
class Row:
    """One row: per server (floor, mwl-service, wlmscpfs, orthanc) the runs' wall
    times, or None where that server was not timed. `paired`: run k of every server
    belongs to repeat k (the servers took turns), so ratios are taken per repeat."""

    query: str
    n: int
    items: int
    runs: list[list[float] | None]
    paired: bool = True

    def seconds(self, server: int) -> float | None:
        runs = self.runs[server]
        return None if runs is None else statistics.median(runs)

    def ratio(self, top: int, bottom: int) -> float | None:
        """Median over the repeats of server `top`'s time / server `bottom`'s."""
        a, b = self.runs[top], self.runs[bottom]
        if a is None or b is None:
            return None
        if not self.paired:
            return statistics.median(a) / statistics.median(b)
        return statistics.median(x / y for x, y in zip(a, b))


@dataclass
class Setup:
    workdir: Path
    db_url: str
    wl_dir: Path
    peers: list[Peer]  # mwl-service, wlmscpfs, [Orthanc]
    floor: Peer | None = None


def start_servers(n: int, workdir: Path, log, procs: list, with_orthanc: bool) -> Setup:
    items = make_items(n)
    t0 = time.perf_counter()
    db_url = f"sqlite:///{workdir / 'worklist.db'}"
    load_database(items, db_url)
    wl_dir = workdir / "wlistdb" / DCMTK_AET
    write_wl_files(items, wl_dir)
    print(f"N={n}: DB + .wl files written in {time.perf_counter() - t0:.1f} s", flush=True)
    past_days = (dt.date.today() - FIRST_DAY).days + 1
    commands = [("mwl-service", OUR_AET, lambda p: mwl_service_cmd(db_url, p, past_days, CLIENTS)),
                ("wlmscpfs", DCMTK_AET, lambda p: wlmscpfs_cmd(wl_dir.parent, p))]
    if with_orthanc:
        commands.append(("orthanc", ORTHANC_AET,
                         lambda p: orthanc_cmd(workdir, wl_dir, p, CLIENTS)))
    peers = []
    for name, aet, command in commands:
        port = free_port()
        cmd = command(port)
        print("  " + " ".join(cmd), flush=True)
        peers.append(start(name, aet, cmd, port, log, procs))
    return Setup(workdir, db_url, wl_dir, peers)


def verify(setup: Setup, items, log, procs: list) -> None:
    """Every server answers every query with exactly the expected items; then the
    floor is recorded from mwl-service and must give findscu the same responses."""
    ours = setup.peers[0]
    for name, match, expected in queries(items):
        got = [answered(p.aet, p.port, match, setup.workdir / f"{name}-{p.name}")
               for p in setup.peers]
        counts = "  ".join(f"{p.name} {len(g):6}" for p, g in zip(setup.peers, got))
        ok = all(g == expected for g in got)
        print(f"  verify {name:8} expected {len(expected):6}  {counts}  "
              f"{'OK' if ok else 'MISMATCH'}", flush=True)
        if not ok:
            wrong = next(set(g) ^ set(expected) for g in got if g != expected)
            raise SystemExit(f"{name}: answers differ from the expected items, e.g. "
                             f"{sorted(wrong)[:2]}")
    recordings = setup.workdir / "floor.pickle"
    record(ours, [findscu_args(OUR_AET, ours.port, m) for _, m, _ in queries(items)]
           + [echo_args(OUR_AET, ours.port)], recordings)
    port = free_port()
    setup.floor = start("floor", OUR_AET, floor_cmd(port, recordings), port, log, procs)
    for name, match, _ in queries(items):
        floor_dir = setup.workdir / f"{name}-floor"
        answered(OUR_AET, port, match, floor_dir)
        if response_files(floor_dir) != response_files(setup.workdir / f"{name}-mwl-service"):
            raise SystemExit(f"{name}: the floor's responses differ from mwl-service's")
    print("  verify floor: responses byte for byte those of mwl-service  OK", flush=True)


def timed_rows(setup: Setup, items, args) -> list[Row]:
    timed = [setup.floor] + setup.peers
    rows = []
    for name, match, expected in queries(items):
        for quiet in ((False, True) if name == "broad" else (False,)):
            reps = args.broad_repeats if name == "broad" else args.repeats
            runs = timed_runs([findscu_args(p.aet, p.port, match, quiet) for p in timed], reps)
            rows.append(row(name + (" -q" if quiet else ""), len(items), len(expected), runs))
    runs = timed_runs([echo_args(p.aet, p.port) for p in timed], args.repeats)
    rows.append(row("echo", len(items), 0, runs))
    if args.concurrent_rounds:
        times = concurrent_latencies(setup.peers, items, CLIENTS, args.concurrent_rounds,
                                     setup.db_url, setup.wl_dir)
        for q in (50, 95):
            rows.append(row(f"conc p{q}", len(items), len(items) // 100,
                            [None] + [[percentile(t, q)] for t in times], paired=False))
    return rows


def row(query: str, n: int, count: int, runs: list, paired: bool = True) -> Row:
    """runs: floor, mwl-service, wlmscpfs[, orthanc]."""
    return Row(query, n, count, (list(runs) + [None])[:4], paired)


def bench_size(n: int, args, procs: list) -> tuple[list[Row], list[str]]:
    """Load N items into every server, verify the answers, time every query."""
    workdir = Path(tempfile.mkdtemp(prefix=f"mwl-bench-{n}-"))
    log = open(workdir / "servers.log", "wb")  # noqa: SIM115 - every server writes to it
    notes = []
    try:
        setup = start_servers(n, workdir, log, procs, with_orthanc=args.orthanc)
        items = make_items(n)
        verify(setup, items, log, procs)
        rows = timed_rows(setup, items, args)
        rq = echo_request(workdir / "floor.pickle")
        cpu = idle_cpu(setup.peers[0], rq, IDLE_ASSOCIATIONS)
        notes.append(f"N={n}: mwl-service with {IDLE_ASSOCIATIONS} idle associations open: "
                     f"{cpu:.1f}% of one core")
        stop(procs)
        if args.pg_url:
            lat = replica_latencies(args.pg_url, items, REPLICA_CLIENTS,
                                    args.concurrent_rounds or 5, log)
            notes += replica_notes(n, lat)
        return rows, notes
    except SystemExit:
        log.flush()
        print((workdir / "servers.log").read_text(errors="replace")[-2000:], file=sys.stderr)
        raise
    finally:
        stop(procs)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def replica_notes(n: int, lat: dict[int, tuple[float, float]]) -> list[str]:
    (p50_1, p95_1), (p50_2, p95_2) = lat[1], lat[2]
    note = (f"N={n}: PostgreSQL, {REPLICA_CLIENTS} clients at once: 1 replica p50 {p50_1:.4f} s "
            f"p95 {p95_1:.4f} s; 2 replicas p50 {p50_2:.4f} s p95 {p95_2:.4f} s; "
            f"1 / 2 replicas: p50 {p50_1 / p50_2:.2f}, p95 {p95_1 / p95_2:.2f}")
    return [note]


def fmt(value: float | None, width: int, digits: int = 4) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:{width}.{digits}f}"


def print_table(rows: list[Row]) -> None:
    print(f"{'query':9} {'N':>6} {'items':>6} {'floor s':>8} {'mwl-service s':>13} "
          f"{'wlmscpfs s':>10} {'orthanc s':>9} {'mwl/floor':>9} {'vs wlmscpfs':>11} "
          f"{'vs orthanc':>10}")
    for r in rows:
        print(f"{r.query:9} {r.n:6} {r.items:6} {fmt(r.seconds(0), 8)} {fmt(r.seconds(1), 13)} "
              f"{fmt(r.seconds(2), 10)} {fmt(r.seconds(3), 9)} {fmt(r.ratio(1, 0), 9, 2)} "
              f"{fmt(r.ratio(2, 1), 11, 2)} {fmt(r.ratio(3, 1), 10, 2)}")
    print("seconds: median of the runs; mwl/floor: mwl-service / floor (1.00 = at the floor); "
          "vs PEER: PEER / mwl-service (higher = mwl-service faster); each ratio the median "
          "of the repeats' own ratios (the servers take turns within a repeat)")


def interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000],
                        help="worklist sizes N, multiples of 100 (default: 1000 10000)")
    parser.add_argument("--repeats", type=int, default=9,
                        help="timed runs per query and server; the median is reported (default: 9)")
    parser.add_argument("--broad-repeats", type=int, default=5,
                        help="timed runs of the broad queries, the slow ones (default: 5)")
    parser.add_argument("--concurrent-rounds", type=int, default=5,
                        help=f"rounds of {CLIENTS} clients at once while a publisher writes; "
                        "0 skips the case (default: 5)")
    parser.add_argument("--large", action="store_true",
                        help="also N = 100000 (writing 100000 .wl files and the broad query "
                        "take minutes)")
    parser.add_argument("--pg-url", default=os.environ.get(PG_ENV, ""),
                        help=f"a PostgreSQL database for the replicas case (default: ${PG_ENV}; "
                        "the bench replaces its own rows there); without one the case is skipped")
    parser.add_argument("--no-orthanc", dest="orthanc", action="store_false",
                        help="leave Orthanc out (also left out when it is not installed)")
    args = parser.parse_args(argv)
    if args.large and 100000 not in args.sizes:
        args.sizes.append(100000)
    if any(n < 100 or n % 100 for n in args.sizes):
        parser.error("--sizes: each N must be a multiple of 100 (10 stations x 10 days)")
    if args.repeats < 1 or args.broad_repeats < 1:
        parser.error("--repeats/--broad-repeats must be at least 1")
    for tool in ("findscu", "echoscu", "wlmscpfs"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} not found: install DCMTK (Debian package dcmtk)")
    if args.orthanc and (orthanc_executable() is None or orthanc_plugin() is None):
        print("Orthanc or its Worklists plugin not found (Debian package orthanc): "
              "the orthanc column is left empty")
        args.orthanc = False
    return args


def main(argv: list[str] | None = None) -> int:
    # pynetdicom installs its own findscu/echoscu into the venv's bin: drop that folder
    # from PATH so an activated venv cannot stand in for DCMTK (mwl-service is
    # started by its full path).
    os.environ["PATH"] = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep)
        if p and Path(p).resolve() != BIN.resolve()
    )
    args = parse_args(argv)
    # SIGTERM ends the run like Ctrl-C does: servers stopped, temp dirs removed.
    signal.signal(signal.SIGTERM, interrupt)
    dcmtk = subprocess.run(["findscu", "--version"], check=False, capture_output=True,
                           text=True).stdout
    print(f"machine: {os.cpu_count()} cores ({cpu_model()}), Python {platform.python_version()}, "
          f"{dcmtk.splitlines()[0].strip('$ ')}; {load()}")
    template = findscu_args("<AE>", 0, ["<matching keys>"])[:-2]
    print("timed command: " + " ".join(template) + " 127.0.0.1 <port>")
    procs: list[subprocess.Popen] = []
    rows, notes = [], []
    try:
        for n in args.sizes:
            more_rows, more_notes = bench_size(n, args, procs)
            rows += more_rows
            notes += more_notes
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        stop(procs)
    if not args.pg_url:
        notes.append(f"replicas on PostgreSQL: skipped (no --pg-url or {PG_ENV})")
    print(f"\nmedian wall time per findscu/echoscu run (new association each), "
          f"{args.repeats} repeats (broad: {args.broad_repeats}); conc p50/p95: "
          f"{CLIENTS} clients at once x {args.concurrent_rounds} rounds during publishes; "
          f"{load()}")
    print_table(rows)
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
