"""What the MWL benchmark runs against the servers: DCMTK findscu/echoscu (a new
process and association per run, as a scanner console does), the conversations
recorded for the floor, the concurrency case, and idle associations."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import pickle
import socket
import statistics
import subprocess
import threading
import time
from pathlib import Path

import pydicom
from mwl_bench_data import (
    PROTOCOLS,
    SPS,
    SPS_KEYS,
    STATIONS,
    TOP_KEYS,
    Item,
    typical_match,
    write_wl_file,
)
from mwl_bench_peers import CALLING_AET, Peer, cpu_seconds
from mwl_floor import Recorder, read_pdu
from sqlalchemy import update

from mwl_service.engine import make_engine
from mwl_service.schema import WorklistItem


def findscu_args(aet: str, port: int, match: list[str], quiet: bool = False) -> list[str]:
    """findscu -W with the matching keys plus the same return keys for every query;
    `quiet`: -q, findscu prints nothing per answer (as a console's list would not)."""
    matched = {m.split("=")[0] for m in match}
    keys = [k for k in TOP_KEYS if k not in matched]
    keys += [SPS + tag for tag in SPS_KEYS if SPS + tag not in matched]
    args = ["findscu", "-W"] + (["-q"] if quiet else []) + ["-aet", CALLING_AET, "-aec", aet]
    for k in match + keys:
        args += ["-k", k]
    return args + ["127.0.0.1", str(port)]


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


def response_files(out: Path) -> list[bytes]:
    """The data sets findscu -X wrote, byte for byte, in the order they came; the
    file meta header (findscu gives each file a new SOP Instance UID) left out:
    128-byte preamble, "DICM", then (0002,0000) UL whose value is the length of
    the rest of the group."""
    datasets = []
    for f in sorted(out.glob("rsp*.dcm")):
        data = f.read_bytes()
        meta_end = 144 + int.from_bytes(data[140:144], "little")
        datasets.append(data[meta_end:])
    return datasets


def record(peer: Peer, commands: list[list[str]], path: Path) -> None:
    """Run each command once through a recording proxy in front of `peer`; the
    conversations go to `path` for the floor."""
    recorder = Recorder(peer.port)
    try:
        for args in commands:
            proxied = args[:-1] + [str(recorder.port)]
            subprocess.run(proxied, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while len(recorder.conversations) < len(commands) and time.monotonic() < deadline:
            time.sleep(0.01)  # the proxy still relays the connection's close
    finally:
        recorder.close()
    if len(recorder.conversations) != len(commands):
        raise SystemExit("the recording proxy lost a conversation")
    path.write_bytes(pickle.dumps(recorder.conversations))


def timed_runs(commands: list[list[str]], repeats: int) -> list[list[float]]:
    """Wall time of each command, `repeats` times, each run a new process and
    association; the commands take turns, so the runs of one repeat are next to
    each other in time (and a change of machine load hits them alike)."""
    times: list[list[float]] = [[] for _ in commands]
    for _ in range(repeats):
        for args, runs in zip(commands, times):
            t0 = time.perf_counter()
            subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            runs.append(time.perf_counter() - t0)
    return times


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def publish_loop(db_url: str, aet_dir: Path, items: list[Item], stop: threading.Event) -> None:
    """What a sync does to each server's data, again and again until `stop`: a
    tenth of the items get a new description, in one transaction for mwl-service
    (the way a sync publishes) and as rewritten .wl files for wlmscpfs and Orthanc."""
    engine = make_engine(db_url)
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


def client_matches(clients: int) -> list[list[str]]:
    """The typical query of each of `clients` simultaneous clients, a station each."""
    return [typical_match(STATIONS[k % len(STATIONS)][0]) for k in range(clients)]


def at_once(jobs: list[tuple[Peer, list[str]]]) -> list[float]:
    """Start one findscu per (peer, matching keys) at the same time; the wall time
    of each."""
    runs: list[float] = []

    def one(peer: Peer, match: list[str]) -> None:
        t0 = time.perf_counter()
        subprocess.run(findscu_args(peer.aet, peer.port, match), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        runs.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=one, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if len(runs) != len(jobs):
        raise SystemExit("a concurrent findscu run failed")
    return runs


def simultaneous(peers: list[Peer], clients: int, rounds: int) -> list[list[float]]:
    """Per peer: the wall time of every findscu run of `clients` clients at once,
    `rounds` times, the peers taking turns."""
    times: list[list[float]] = [[] for _ in peers]
    for _ in range(rounds):
        for peer, runs in zip(peers, times):
            runs += at_once([(peer, m) for m in client_matches(clients)])
    return times


def concurrent_latencies(peers: list[Peer], items: list[Item], clients: int, rounds: int,
                         db_url: str, aet_dir: Path) -> list[list[float]]:
    """simultaneous() while a publisher process rewrites the data."""
    stop_event = multiprocessing.Event()
    publisher = multiprocessing.Process(target=publish_loop,
                                        args=(db_url, aet_dir, items, stop_event))
    publisher.start()
    try:
        time.sleep(0.5)  # the publisher is writing
        times = simultaneous(peers, clients, rounds)
    finally:
        stop_event.set()
        publisher.join(30)
    if publisher.exitcode != 0:
        raise SystemExit(f"the publisher failed (exit code {publisher.exitcode})")
    return times


def idle_cpu(peer: Peer, associate_rq: bytes, count: int = 16, seconds: float = 5) -> float:
    """Percent of one core `peer` uses while `count` associations are open and
    idle (raw connections: an A-ASSOCIATE-RQ, the A-ASSOCIATE-AC, then nothing)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", peer.port), timeout=10)
            socks.append(sock)
            sock.sendall(associate_rq)
            pdu = read_pdu(sock)
            if not pdu or pdu[0] != 0x02:
                raise SystemExit(f"{peer.name} did not accept an idle association")
        time.sleep(0.5)  # settled
        cpu0, t0 = cpu_seconds(peer.proc.pid), time.monotonic()
        time.sleep(seconds)
        cpu1, t1 = cpu_seconds(peer.proc.pid), time.monotonic()
    finally:
        for sock in socks:
            sock.close()
    return 100 * (cpu1 - cpu0) / (t1 - t0)


def echo_request(recordings: Path) -> bytes:
    """The A-ASSOCIATE-RQ of the recorded echoscu run (the last conversation)."""
    return pickle.loads(recordings.read_bytes())[-1][0][0]

