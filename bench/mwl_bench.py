"""Worklist benchmark: mwl-service against DCMTK wlmscpfs, timed with DCMTK findscu -W.

For each size N the same N worklist items go into a fresh SQLite worklist DB (for
mwl-service) and into one .wl file each (for wlmscpfs). Both servers run as their own
processes on loopback; every timed run is a fresh findscu/echoscu process with a new
association, so the numbers are what a scanner sees (process start + association +
query + answers). The layout is 10 stations x 10 days x N/100 items per station-day,
so at N=10000 "one station, one day" is 100 items.

Queries:
  broad    all items of the 10-day SPS start date range (returns N)
  typical  one Scheduled Station AE Title + one day    (N/100)
  narrow   one Patient ID                              (a few)
  echo     echoscu: the association floor
  concurrent  CLIENTS findscu processes at once, each running the typical query
           (a different station each) --concurrent-rounds times, while a publisher
           process rewrites a tenth of the worklist in a loop: one transaction in
           the SQLite database for mwl-service, the same items' .wl files (written
           and renamed into place) for wlmscpfs; p50 and p95 per query

Before timing, each query runs once against both servers with responses extracted to
files; both must return exactly the expected items (identifiers, decoded names, step).

    python bench/mwl_bench.py                          # N = 1000, 10000; 5 repeats (broad: 3)
    python bench/mwl_bench.py --sizes 1000 --repeats 9
    python bench/mwl_bench.py --large                  # adds N = 100000 (minutes)

How the numbers were found and what they mean: bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import multiprocessing
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zoneinfo
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from sqlalchemy import insert, update

from mwl_service.engine import make_engine
from mwl_service.schema import (
    WorklistItem,
    accession_number,
    step_id,
    study_instance_uid,
)

BIN = Path(sys.executable).parent  # mwl-service lives next to this venv's python
OUR_AET, DCMTK_AET, CALLING_AET = "CALPENDO_MWL", "WLMSCPFS", "BENCH"
CLIENTS = 8  # concurrent findscu processes in the concurrency case
SOURCE, TZ = "bench", zoneinfo.ZoneInfo("America/Edmonton")
FIRST_DAY, DAYS = dt.date(2026, 5, 4), 10  # no DST change inside the window
STATIONS = [  # (AE title, modality, station name)
    ("MR3T_A", "MR", "PRISMA_A"), ("MR3T_B", "MR", "PRISMA_B"), ("MR7T", "MR", "TERRA"),
    ("MR15T", "MR", "AERA"), ("PETMR", "PT", "BIOGRAPH"), ("CT1", "CT", "SOMATOM"),
    ("US1", "US", "ACUSON"), ("EEG1", "EEG", "EEG_LAB1"), ("EEG2", "EEG", "EEG_LAB2"),
    ("XA1", "XA", "ARTIS"),
]
FAMILY = ["Smith", "Nguyen", "Müller", "García", "O'Brien", "Łukasiewicz", "Søndergaard",
          "Chen", "Okafor", "Dubois", "Ivanov", "Kowalski", "Brown", "山田", "Côté", "Singh"]
GIVEN = ["Anna", "Jürgen", "José", "Mei", "Chidi", "Zoë", "Liam", "Olga", "太郎", "Priya",
         "François", "Noah", "Åsa", "Omar", "Ewa", "Kai"]
PROTOCOLS = ["fMRI resting state", "DTI 64 dir", "T1 MPRAGE", "Spectroscopy", "EEG 64ch",
             "Cardiac cine", "Pilot scan", "PET amyloid"]

# Return keys of every query (top level; the SPS item gets the SPS_KEYS below).
TOP_KEYS = ["PatientName", "PatientID", "AccessionNumber", "StudyInstanceUID"]
SPS = "(0040,0100)[0]."
SPS_KEYS = {"(0040,0001)": "ScheduledStationAETitle", "(0008,0060)": "Modality",
            "(0040,0002)": "ScheduledProcedureStepStartDate",
            "(0040,0003)": "ScheduledProcedureStepStartTime",
            "(0040,0009)": "ScheduledProcedureStepID",
            "(0040,0007)": "ScheduledProcedureStepDescription"}


@dataclass(frozen=True)
class Item:
    booking_id: str
    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    station: str
    modality: str
    station_name: str
    start: dt.datetime  # site-local, aware
    description: str

    @property
    def accession(self) -> str:
        return accession_number(SOURCE, self.booking_id)


def make_items(n: int, seed: int = 7) -> list[Item]:
    """N items: 10 stations x 10 days x n/100 per station-day, 07:00-19:00 local.

    Patients are drawn from n/2 IDs, so a Patient ID has a handful of bookings
    (a narrow query) and some names are non-ASCII (the charset path is exercised).
    """
    rng = random.Random(seed)
    per_slot = max(1, n // (len(STATIONS) * DAYS))
    step = dt.timedelta(minutes=720 / per_slot)
    items = []
    for day in range(DAYS):
        date = FIRST_DAY + dt.timedelta(days=day)
        for aet, modality, name in STATIONS:
            for k in range(per_slot):
                start = dt.datetime.combine(date, dt.time(7), TZ) + k * step
                p = rng.randrange(max(1, n // 2))
                items.append(Item(
                    booking_id=str(100000 + len(items)), patient_id=f"SUBJ{p:06d}",
                    patient_name=f"{FAMILY[p % 16]}^{GIVEN[(p // 16) % 16]}",
                    birth_date=f"{1950 + p % 50}{1 + p % 12:02d}{1 + p % 28:02d}",
                    sex="MF"[p % 2], station=aet, modality=modality, station_name=name,
                    start=start.replace(second=0, microsecond=0),
                    description=PROTOCOLS[rng.randrange(len(PROTOCOLS))],
                ))
    return items


def load_database(items: list[Item], db_path: Path) -> None:
    """One bulk INSERT through the project's own schema (what a sync publishes)."""
    engine = make_engine(f"sqlite:///{db_path}")
    rows = [{
        "source": SOURCE, "booking_id": it.booking_id, "patient_id": it.patient_id,
        "patient_name": it.patient_name, "patient_birth_date": it.birth_date,
        "patient_sex": it.sex, "accession_number": it.accession,
        "study_instance_uid": study_instance_uid(SOURCE, it.booking_id),
        "requested_procedure_id": step_id(SOURCE, it.booking_id),
        "requested_procedure_description": it.description, "study_description": it.description,
        "scheduled_procedure_step_id": step_id(SOURCE, it.booking_id),
        "scheduled_procedure_step_description": it.description,
        "scheduled_station_ae_title": it.station, "scheduled_station_name": it.station_name,
        "modality": it.modality, "scheduled_start_utc": it.start.astimezone(dt.UTC),
        "site_timezone": TZ.key, "scheduled_start_date": it.start.strftime("%Y%m%d"),
        "scheduled_start_time": it.start.strftime("%H%M%S"), "duration_minutes": 60,
        "booking_status": "APPROVED", "resource_name": it.station_name,
        "content_hash": hashlib.sha256(it.booking_id.encode()).hexdigest(),
    } for it in items]
    with engine.begin() as conn:
        conn.execute(insert(WorklistItem), rows)
    engine.dispose()


def write_wl_files(items: list[Item], aet_dir: Path) -> None:
    """One .wl per item in <dfp>/<called AE title>/, plus the 'lockfile' wlmscpfs locks.

    A .wl is a plain DICOM dataset (what `dump2dcm` writes); it carries every type 1
    worklist key (PS3.4 table K.6-1) so wlmscpfs's default file reject keeps it.
    """
    aet_dir.mkdir(parents=True)
    (aet_dir / "lockfile").touch()
    for it in items:
        write_wl_file(it, aet_dir)


def write_wl_file(it: Item, aet_dir: Path, description: str | None = None) -> None:
    """The .wl file of one item, written aside and renamed into place (atomic)."""
    description = description or it.description
    sps = Dataset()
    sps.ScheduledStationAETitle = it.station
    sps.ScheduledStationName = it.station_name
    sps.Modality = it.modality
    sps.ScheduledProcedureStepStartDate = it.start.strftime("%Y%m%d")
    sps.ScheduledProcedureStepStartTime = it.start.strftime("%H%M%S")
    sps.ScheduledProcedureStepDescription = description
    sps.ScheduledProcedureStepID = step_id(SOURCE, it.booking_id)
    sps.ScheduledProcedureStepStatus = "SCHEDULED"
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.AccessionNumber = it.accession
    ds.PatientName = it.patient_name
    ds.PatientID = it.patient_id
    ds.PatientBirthDate = it.birth_date
    ds.PatientSex = it.sex
    ds.StudyInstanceUID = study_instance_uid(SOURCE, it.booking_id)
    ds.RequestedProcedureID = step_id(SOURCE, it.booking_id)
    ds.RequestedProcedureDescription = description
    ds.ScheduledProcedureStepSequence = [sps]
    # wlmscpfs skips files whose name does not end in .wl: write aside, rename.
    tmp = aet_dir / f"{it.booking_id}.tmp"
    ds.save_as(tmp, implicit_vr=False, little_endian=True, enforce_file_format=False)
    os.replace(tmp, aet_dir / f"{it.booking_id}.wl")


def answer(it: Item) -> tuple[str, ...]:
    """What a correct answer for `it` carries: identifiers, the decoded name, the step."""
    return (it.accession, it.patient_id, it.patient_name, it.station, it.modality,
            it.start.strftime("%Y%m%d"), it.start.strftime("%H%M%S"),
            step_id(SOURCE, it.booking_id))


def queries(items: list[Item]) -> list[tuple[str, list[str], list[tuple[str, ...]]]]:
    """(name, findscu -k matching keys, expected answers) per query."""
    first = FIRST_DAY.strftime("%Y%m%d")
    last = (FIRST_DAY + dt.timedelta(DAYS - 1)).strftime("%Y%m%d")
    day = (FIRST_DAY + dt.timedelta(3)).strftime("%Y%m%d")
    station = STATIONS[0][0]
    patient = items[len(items) // 2].patient_id
    want = lambda pred: sorted(answer(it) for it in items if pred(it))
    return [
        ("broad", [f"{SPS}(0040,0002)={first}-{last}"], want(lambda it: True)),
        ("typical", [f"{SPS}(0040,0001)={station}", f"{SPS}(0040,0002)={day}"],
         want(lambda it: it.station == station and it.start.strftime("%Y%m%d") == day)),
        ("narrow", [f"PatientID={patient}"], want(lambda it: it.patient_id == patient)),
    ]


def findscu_args(aet: str, port: int, match: list[str]) -> list[str]:
    """findscu -W with the matching keys plus the same return keys for every query."""
    matched = {m.split("=")[0] for m in match}
    keys = [k for k in TOP_KEYS if k not in matched]
    keys += [SPS + tag for tag in SPS_KEYS if SPS + tag not in matched]
    args = ["findscu", "-W", "-aet", CALLING_AET, "-aec", aet]
    for k in match + keys:
        args += ["-k", k]
    return args + ["127.0.0.1", str(port)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def echo_args(aet: str, port: int) -> list[str]:
    return ["echoscu", "-aet", CALLING_AET, "-aec", aet, "127.0.0.1", str(port)]


def wait_for_echo(aet: str, port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with status {proc.returncode}")
        probe = subprocess.run(echo_args(aet, port) + ["-to", "2"], check=False,
                               capture_output=True)
        if probe.returncode == 0:
            return
        time.sleep(0.1)
    raise SystemExit(f"{what} did not answer C-ECHO within 30 s")


def answered(aet: str, port: int, match: list[str], out: Path) -> list[tuple[str, ...]]:
    """Run the query once with -X (responses to files) and decode every answer.

    Names are decoded with the answer's own Specific Character Set, so a server that
    mislabels non-ASCII names fails the comparison."""
    out.mkdir()
    subprocess.run(findscu_args(aet, port, match) + ["-X", "-od", str(out)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    got = []
    for f in out.glob("rsp*.dcm"):
        ds = pydicom.dcmread(f)
        sps = ds.ScheduledProcedureStepSequence[0]
        got.append((ds.AccessionNumber, ds.PatientID, str(ds.PatientName),
                 sps.ScheduledStationAETitle, sps.Modality, sps.ScheduledProcedureStepStartDate,
                 sps.ScheduledProcedureStepStartTime, sps.ScheduledProcedureStepID))
    return sorted(got)


def median_seconds(commands: list[list[str]], repeats: int) -> list[float]:
    """Median wall time of each command over `repeats` runs, each a new process and
    association; the commands take turns so drift in machine load hits both alike."""
    times: list[list[float]] = [[] for _ in commands]
    for _ in range(repeats):
        for args, runs in zip(commands, times):
            t0 = time.perf_counter()
            subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            runs.append(time.perf_counter() - t0)
    return [statistics.median(runs) for runs in times]


def publish_loop(db_path: Path, aet_dir: Path, items: list[Item], stop: threading.Event) -> None:
    """What a sync does to each server's data, again and again until `stop`: a
    tenth of the items get a new description, in one transaction for mwl-service
    (the way a sync publishes) and as rewritten .wl files for wlmscpfs."""
    engine = make_engine(f"sqlite:///{db_path}")
    try:
        for round_ in range(1_000_000):
            if stop.is_set():
                return
            changed = items[round_ % 10 :: 10]
            text = f"{PROTOCOLS[round_ % len(PROTOCOLS)]} r{round_}"
            with engine.begin() as conn:
                conn.execute(
                    update(WorklistItem)
                    .where(WorklistItem.booking_id.in_([it.booking_id for it in changed]))
                    .values(scheduled_procedure_step_description=text,
                            requested_procedure_description=text,
                            updated_at=dt.datetime.now(dt.UTC))
                )
            for it in changed:
                write_wl_file(it, aet_dir, text)
            time.sleep(0.05)
    finally:
        engine.dispose()


def concurrent_latencies(servers: list, items: list[Item], rounds: int, db_path: Path,
                         aet_dir: Path) -> list[list[float]]:
    """Per server: the wall time of every findscu run of CLIENTS clients at once
    (the typical query, one station each), `rounds` times, the servers taking
    turns, while a publisher process rewrites the data."""
    day = (FIRST_DAY + dt.timedelta(3)).strftime("%Y%m%d")
    matches = [[f"{SPS}(0040,0001)={STATIONS[k % len(STATIONS)][0]}", f"{SPS}(0040,0002)={day}"]
               for k in range(CLIENTS)]
    stop_event = multiprocessing.Event()
    publisher = multiprocessing.Process(target=publish_loop,
                                        args=(db_path, aet_dir, items, stop_event))
    publisher.start()
    times: list[list[float]] = [[] for _ in servers]
    try:
        time.sleep(0.5)  # the publisher is writing
        for _ in range(rounds):
            for (_, aet, port, _proc), runs in zip(servers, times):
                def one(match: list[str], runs: list[float] = runs, aet: str = aet,
                        port: int = port) -> None:
                    t0 = time.perf_counter()
                    subprocess.run(findscu_args(aet, port, match), check=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    runs.append(time.perf_counter() - t0)
                threads = [threading.Thread(target=one, args=(m,)) for m in matches]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
    finally:
        stop_event.set()
        publisher.join(30)
    if publisher.exitcode != 0:
        raise SystemExit(f"the publisher failed (exit code {publisher.exitcode})")
    for runs in times:
        if len(runs) != rounds * CLIENTS:
            raise SystemExit("a concurrent findscu run failed")
    return times


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def bench_size(n: int, repeats: int, broad_repeats: int, procs: list[subprocess.Popen],
               concurrent_rounds: int = 0) -> list:
    """Load N items into both servers, verify the answers, time every query."""
    workdir = Path(tempfile.mkdtemp(prefix=f"mwl-bench-{n}-"))
    log = open(workdir / "servers.log", "wb")  # noqa: SIM115 - both servers write to it
    try:
        items = make_items(n)
        t0 = time.perf_counter()
        load_database(items, workdir / "worklist.db")
        write_wl_files(items, workdir / "wlistdb" / DCMTK_AET)
        print(f"N={len(items)}: DB + .wl files written in {time.perf_counter() - t0:.1f} s",
              flush=True)

        ours_port, dcmtk_port = free_port(), free_port()
        # All clients come from 127.0.0.1: allow them all (the per-host default is
        # half of --max-associations). The items lie in a fixed past window, and
        # wlmscpfs offers every step: offer them all as work too.
        past_days = (dt.date.today() - FIRST_DAY).days + 1
        ours_cmd = [str(BIN / "mwl-service"), "--db-url", f"sqlite:///{workdir / 'worklist.db'}",
                    "--ae-title", OUR_AET, "--host", "127.0.0.1", "--port", str(ours_port),
                    "--max-associations", str(2 * CLIENTS),
                    "--max-connections-per-host", str(2 * CLIENTS),
                    "--offer-past-days", str(max(0, past_days)), "--log-level", "WARNING"]
        # -csk: answer with the files' ISO_IR 192 (non-ASCII names), as mwl-service does.
        dcmtk_cmd = ["wlmscpfs", "-csk", "-dfp", str(workdir / "wlistdb"), str(dcmtk_port)]
        for cmd in (ours_cmd, dcmtk_cmd):
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True))
        servers = [("mwl-service", OUR_AET, ours_port, procs[-2]),
                   ("wlmscpfs", DCMTK_AET, dcmtk_port, procs[-1])]
        for what, aet, port, proc in servers:
            wait_for_echo(aet, port, proc, what)
        print("  " + " ".join(ours_cmd) + "\n  " + " ".join(dcmtk_cmd))

        rows = []
        for name, match, expected in queries(items):
            got = [answered(aet, port, match, workdir / f"{name}-{what}")
                   for what, aet, port, _ in servers]
            ok = all(g == expected for g in got)
            print(f"  verify {name:8} expected {len(expected):6}  mwl-service {len(got[0]):6}  "
                  f"wlmscpfs {len(got[1]):6}  {'OK' if ok else 'MISMATCH'}", flush=True)
            if not ok:
                wrong = next(set(g) ^ set(expected) for g in got if g != expected)
                raise SystemExit(f"{name}: answers differ from the expected items, e.g. "
                                 f"{sorted(wrong)[:2]}")
            reps = broad_repeats if name == "broad" else repeats
            secs = median_seconds([findscu_args(aet, port, match) for _, aet, port, _ in servers],
                                  reps)
            rows.append((name, len(items), len(expected), *secs))
        secs = median_seconds([echo_args(aet, port) for _, aet, port, _ in servers], repeats)
        rows.append(("echo", len(items), 0, *secs))
        if concurrent_rounds:
            times = concurrent_latencies(servers, items, concurrent_rounds,
                                         workdir / "worklist.db", workdir / "wlistdb" / DCMTK_AET)
            for q in (50, 95):
                rows.append((f"conc p{q}", len(items), len(items) // 100,
                             *(percentile(t, q) for t in times)))
        return rows
    except SystemExit:
        log.flush()
        print((workdir / "servers.log").read_text(errors="replace")[-2000:], file=sys.stderr)
        raise
    finally:
        stop(procs)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each server's process group (wlmscpfs forks per association), then wait."""
    while procs:
        proc = procs.pop()
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                pass


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000],
                        help="worklist sizes N, multiples of 100 (default: 1000 10000)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed runs per query and server; the median is reported (default: 5)")
    parser.add_argument("--broad-repeats", type=int, default=3,
                        help="timed runs of the broad query, the slow one (default: 3)")
    parser.add_argument("--concurrent-rounds", type=int, default=5,
                        help=f"rounds of {CLIENTS} clients at once while a publisher writes; "
                        "0 skips the case (default: 5)")
    parser.add_argument("--large", action="store_true",
                        help="also N = 100000 (writing 100000 .wl files and the broad query "
                        "take minutes)")
    args = parser.parse_args(argv)
    if args.large and 100000 not in args.sizes:
        args.sizes.append(100000)
    if any(n < 100 or n % 100 for n in args.sizes):
        parser.error("--sizes: each N must be a multiple of 100 (10 stations x 10 days)")
    if args.repeats < 1 or args.broad_repeats < 1:
        parser.error("--repeats/--broad-repeats must be at least 1")
    # pynetdicom installs its own findscu/echoscu into the venv's bin: drop that folder
    # from PATH so an activated venv cannot stand in for DCMTK (mwl-service is
    # started by its full path).
    os.environ["PATH"] = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep)
        if p and Path(p).resolve() != BIN.resolve()
    )
    for tool in ("findscu", "echoscu", "wlmscpfs"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} not found: install DCMTK (Debian package dcmtk)")

    # SIGTERM ends the run like Ctrl-C does: servers stopped, temp dirs removed.
    signal.signal(signal.SIGTERM, interrupt)
    dcmtk = subprocess.run(["findscu", "--version"], check=False, capture_output=True,
                           text=True).stdout
    print(f"machine: {os.cpu_count()} cores ({cpu_model()}), Python {platform.python_version()}, "
          f"{dcmtk.splitlines()[0].strip('$ ')}")
    template = findscu_args("<AE>", 0, ["<matching keys>"])[:-2]
    print("timed command: " + " ".join(template) + " 127.0.0.1 <port>")
    procs: list[subprocess.Popen] = []
    rows = []
    try:
        for n in args.sizes:
            rows += bench_size(n, args.repeats, args.broad_repeats, procs, args.concurrent_rounds)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        stop(procs)

    print(f"\nmedian wall time per findscu/echoscu run (new association each), "
          f"{args.repeats} repeats (broad: {args.broad_repeats}); conc p50/p95: "
          f"{CLIENTS} clients at once x {args.concurrent_rounds} rounds during publishes")
    print(f"{'query':8} {'N':>6} {'items':>6} {'mwl-service s':>14} {'wlmscpfs s':>11} "
          f"{'ratio':>6}   (ratio = wlmscpfs / mwl-service; >1: mwl-service faster)")
    for name, n, count, ours, dcmtk in rows:
        print(f"{name:8} {n:6} {count:6} {ours:14.4f} {dcmtk:11.4f} {dcmtk / ours:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
