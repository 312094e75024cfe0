"""The servers the MWL benchmark times, each its own process on loopback:
mwl-service, DCMTK wlmscpfs, Orthanc with its Worklists plugin, and the floor
(`mwl_floor.py`, replaying mwl-service's recorded answers)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

BENCH = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent  # mwl-service lives next to this venv's python
OUR_AET, DCMTK_AET, ORTHANC_AET = "CALPENDO_MWL", "WLMSCPFS", "ORTHANC"
CALLING_AET = "BENCH"
ORTHANC_PLUGINS = [  # where Debian's orthanc package puts the Worklists plugin
    Path("/usr/share/orthanc/plugins/libModalityWorklists.so"),
    Path("/usr/lib/orthanc/libModalityWorklists.so"),
]


@dataclass
class Peer:
    name: str
    aet: str
    port: int
    proc: subprocess.Popen


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def echo_args(aet: str, port: int) -> list[str]:
    return ["echoscu", "-aet", CALLING_AET, "-aec", aet, "127.0.0.1", str(port)]


def start(name: str, aet: str, cmd: list[str], port: int, log: IO[bytes],
          procs: list[subprocess.Popen]) -> Peer:
    """Start `cmd` in its own session (wlmscpfs forks per association: the whole
    group is stopped) and wait until it answers C-ECHO."""
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
    procs.append(proc)
    wait_for_echo(aet, port, proc, name)
    return Peer(name, aet, port, proc)


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


def mwl_service_cmd(db_url: str, port: int, past_days: int, clients: int) -> list[str]:
    """All clients come from 127.0.0.1: allow them all (the per-host default is half
    of --max-associations). The items lie in a fixed past window, and wlmscpfs offers
    every step: offer them all as work too."""
    return [str(BIN / "mwl-service"), "--db-url", db_url, "--ae-title", OUR_AET,
            "--host", "127.0.0.1", "--port", str(port),
            "--max-associations", str(2 * clients),
            "--max-connections-per-host", str(2 * clients),
            "--offer-past-days", str(max(0, past_days)), "--log-level", "WARNING"]


def wlmscpfs_cmd(dfp: Path, port: int) -> list[str]:
    # -csk: answer with the files' ISO_IR 192 (non-ASCII names), as mwl-service does.
    return ["wlmscpfs", "-csk", "-dfp", str(dfp), str(port)]


def orthanc_plugin() -> Path | None:
    return next((p for p in ORTHANC_PLUGINS if p.exists()), None)


def orthanc_executable() -> str | None:
    return shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/bin")


def orthanc_cmd(workdir: Path, wl_dir: Path, port: int, clients: int) -> list[str]:
    """Orthanc's DICOM server only (no HTTP), its Worklists plugin reading the same
    .wl files as wlmscpfs, answering in UTF-8 (ISO_IR 192) as the files are, with
    as many DICOM threads as mwl-service gets associations."""
    config = {
        "Name": "mwl-bench", "StorageDirectory": str(workdir / "orthanc-db"),
        "IndexDirectory": str(workdir / "orthanc-db"), "HttpServerEnabled": False,
        "DicomServerEnabled": True, "DicomAet": ORTHANC_AET, "DicomPort": port,
        "DicomCheckCalledAet": True, "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowFindWorklist": True, "DicomThreadsCount": 2 * clients,
        "DefaultEncoding": "Utf8", "Plugins": [str(orthanc_plugin())],
        "Worklists": {"Enable": True, "Database": str(wl_dir), "FilterIssuerAet": False,
                      "LimitAnswers": 0},
    }
    path = workdir / "orthanc.json"
    path.write_text(json.dumps(config, indent=2))
    return [str(orthanc_executable()), str(path)]


def floor_cmd(port: int, recordings: Path) -> list[str]:
    return [sys.executable, str(BENCH / "mwl_floor.py"), "--port", str(port), str(recordings)]


def stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each server's process group, then wait (SIGKILL after 10 s)."""
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
