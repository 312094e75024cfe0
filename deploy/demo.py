"""`make demo`: the whole system on loopback, stopped cleanly with Ctrl-C.

Starts the Calpendo simulator, runs a first sync, starts the MWL service, mwl-api
(the worklist's REST API and page, with a demo account whose random password is
printed) and `dagster dev` (schedule and sensor on), then prints what to open, a
ready findscu command and the `calpendo-sim` commands that edit, move and cancel a
booking while the demo runs (the sensor brings each change to the worklist within
seconds). With --redcap it also starts the REDCap simulator and adds the REDCap
source of config/redcap-example.json, whose visits join the same worklist.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from calpendo_assets.config import enabled_sources, load_config
from calpendo_assets.core.errors import ConfigError
from calpendo_assets.core.source import DataSource
from calpendo_sim.redcap import DEMO_TOKEN

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
VAR = ROOT / "var"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--mwl-port", type=int, default=11112, help="MWL service port (default 11112)")
    p.add_argument("--mwl-aet", default="CALPENDO_MWL", help="MWL service AE title")
    p.add_argument("--dagster-port", type=int, default=3000, help="Dagster UI port (default 3000)")
    p.add_argument("--api-port", type=int, default=8000, help="mwl-api port (default 8000)")
    p.add_argument("--bookings", type=int, default=60, help="simulated bookings (default 60)")
    p.add_argument("--sim-port", type=int, default=None,
                   help="Calpendo simulator port (default: the port of the config's base_url, 8089)")
    p.add_argument("--redcap", action="store_true",
                   help="also start redcap-sim and sync the REDCap source of "
                        "config/redcap-example.json into the same worklist")
    p.add_argument("--redcap-port", type=int, default=8091,
                   help="REDCap simulator port (default 8091)")
    return p.parse_args(argv)


def port_free(port: int) -> bool:
    """Nothing listens on the port (a started service is up once this is False)."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def port_bindable(port: int) -> bool:
    """A service could listen on the port: binding finds what a connect cannot, such as
    a client connection whose local end holds the port (one in the ephemeral range)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the services bind
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_until(check, what: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: {what} exited with code {proc.returncode}; see {VAR}/*.log")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"error: {what} did not come up within {timeout:.0f}s; see {VAR}/*.log")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status < 500
    except urllib.error.HTTPError as e:  # 401 from the simulator still means "up"
        return e.code < 500


class Processes:
    """Child processes in their own process groups, stopped in reverse order."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, args: list[str], env: dict, cwd: Path | str = ROOT) -> subprocess.Popen:
        log = open(VAR / f"{name}.log", "ab")
        proc = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs.append((name, proc))
        return proc

    def stop(self) -> None:
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for name, proc in reversed(self.procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            print(f"  stopped {name}")


def demo_env() -> dict:
    env = dict(os.environ)
    env.setdefault("CALPENDO_MWL_CONFIG", str(ROOT / "config" / "calpendo.json"))
    env.setdefault("WORKLIST_DB_URL", f"sqlite:///{VAR / 'worklist.db'}")
    # The simulator's demo credentials, unless the user brought their own.
    env.setdefault("CALPENDO_USERNAME", "calpendo")
    env.setdefault("CALPENDO_PASSWORD", "calpendo")
    env.setdefault("REDCAP_API_TOKEN", DEMO_TOKEN)  # redcap-sim's demo token
    home = VAR / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    link = home / "dagster.yaml"
    if not link.exists():
        link.symlink_to(ROOT / "dagster.yaml")
    env["DAGSTER_HOME"] = str(home)
    return env


def enabled_config_sources(env: dict) -> list[DataSource]:
    """The enabled sources of the config (through load_config: validated); one at
    least must be a Calpendo source, for the simulator."""
    try:
        sources = enabled_sources(load_config(env["CALPENDO_MWL_CONFIG"], env))
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    if not any(s.type == "calpendo" for s in sources):
        raise SystemExit("error: the demo needs an enabled calpendo source (for the simulator)")
    return sources


def write_demo_config(env: dict, cfg: dict) -> None:
    """Sync with `cfg`, a changed copy of the config (var/demo-calpendo.json)."""
    path = Path(env["CALPENDO_MWL_CONFIG"])
    for source in cfg["data_sources"]:
        if source.get("type") == "file":
            # The copy lives in var/: keep a relative entries path pointing where it did.
            source["config"]["path"] = str(path.resolve().parent / source["config"]["path"])
    copy = VAR / "demo-calpendo.json"
    copy.write_text(json.dumps(cfg, indent=2))
    env["CALPENDO_MWL_CONFIG"] = str(copy)


def point_sources_at(env: dict, sources: list[DataSource], port: int) -> str:
    """The simulator URL on `port`; when that differs from the config's base_url, the
    demo syncs with a copy of the config (var/demo-calpendo.json) that says so."""
    url = f"http://127.0.0.1:{port}"
    if all(urlparse(s.settings.base_url).port == port for s in sources):
        return url
    cfg = json.loads(Path(env["CALPENDO_MWL_CONFIG"]).read_text())
    for source in cfg["data_sources"]:
        if source.get("enabled", True) and source.get("type") == "calpendo":
            source["config"]["base_url"] = url
    write_demo_config(env, cfg)
    return url


def add_redcap_source(env: dict, port: int) -> str:
    """The REDCap simulator's API URL; the config copy gains the example's REDCap source."""
    url = f"http://127.0.0.1:{port}/api/"
    cfg = json.loads(Path(env["CALPENDO_MWL_CONFIG"]).read_text())
    example = json.loads((ROOT / "config" / "redcap-example.json").read_text())
    for source in example["data_sources"]:
        source["config"]["url"] = url
    names = {s["name"] for s in example["data_sources"]}
    cfg["data_sources"] = [s for s in cfg["data_sources"] if s.get("name") not in names]
    cfg["data_sources"] += example["data_sources"]
    write_demo_config(env, cfg)
    return url


def start_simulators(args, env: dict, procs: Processes, sim_url) -> str | None:
    """calpendo-sim (and redcap-sim with --redcap), each answering; the REDCap URL."""
    sim = procs.start("calpendo-sim", [str(BIN / "calpendo-sim"), "--host", "127.0.0.1",
                      "--port", str(sim_url.port), "--bookings", str(args.bookings)], env)
    wait_until(lambda: http_ok(f"{sim_url.scheme}://{sim_url.netloc}/webdav/q/Calpendo.Booking/id/GT/0"),
               "calpendo-sim", sim)
    print(f"Calpendo simulator   {sim_url.scheme}://{sim_url.netloc}")
    if not args.redcap:
        return None
    redcap = procs.start("redcap-sim", [str(BIN / "redcap-sim"), "--host", "127.0.0.1",
                         "--port", str(args.redcap_port), "--records", "12", "--visits", "20"], env)
    wait_until(lambda: not port_free(args.redcap_port), "redcap-sim", redcap)
    url = f"http://127.0.0.1:{args.redcap_port}/api/"
    print(f"REDCap simulator     {url}   (token: $REDCAP_API_TOKEN)")
    return url


def demo_account(env: dict) -> tuple[str, str]:
    """The demo's mwl-api account (role admin) with a new random password each run;
    there is no built-in account."""
    password = secrets.token_urlsafe(12)
    cli = str(BIN / "calpendo-mwl")
    for command in (["user", "add", "demo", "--role", "admin"], ["user", "passwd", "demo"]):
        done = subprocess.run([cli, *command, "--password-stdin"], input=password + "\n",
                              text=True, env=env, capture_output=True)
        if done.returncode == 0:
            return "demo", password
    raise SystemExit(f"error: cannot make the demo account: {done.stderr.strip()}")


def _interrupt(*_):
    # SIGTERM and SIGINT both stop the demo the way Ctrl-C does.
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = parse_args(argv)
    VAR.mkdir(exist_ok=True)
    env = demo_env()
    sources = enabled_config_sources(env)
    calpendo = [s for s in sources if s.type == "calpendo"]
    sim_port = args.sim_port or urlparse(calpendo[0].settings.base_url).port
    sim_url = urlparse(point_sources_at(env, calpendo, sim_port))
    ports = [sim_url.port, args.mwl_port, args.dagster_port, args.api_port]
    if args.redcap:
        add_redcap_source(env, args.redcap_port)
        sources = enabled_config_sources(env)
        ports.append(args.redcap_port)
    for port in ports:
        if not port_bindable(port):
            raise SystemExit(f"error: port {port} on 127.0.0.1 is in use; stop what uses it first")

    procs = Processes()
    # Explicit for SIGINT too: a shell may start us with SIGINT ignored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        redcap_url = start_simulators(args, env, procs, sim_url)

        # The first sync before the MWL service, so it starts on a filled worklist.
        for source in sources:
            job = f"{source.name}_sync"
            print(f"First sync           {job} ...", end=" ", flush=True)
            run = subprocess.run([str(BIN / "dagster"), "job", "execute", "-m",
                                  "calpendo_assets.definitions", "-j", job], cwd=ROOT, env=env,
                                 stdout=open(VAR / "first-sync.log", "ab"), stderr=subprocess.STDOUT)
            print("ok" if run.returncode == 0 else f"FAILED (see {VAR / 'first-sync.log'})")

        mwl = procs.start("mwl-service", [str(BIN / "mwl-service"), "--host", "127.0.0.1",
                          "--port", str(args.mwl_port), "--ae-title", args.mwl_aet], env)
        wait_until(lambda: not port_free(args.mwl_port), "mwl-service", mwl)
        print(f"MWL service          {args.mwl_aet} @ 127.0.0.1:{args.mwl_port}")

        login = demo_account(env)
        api_url = f"http://127.0.0.1:{args.api_port}"
        api = procs.start("mwl-api", [str(BIN / "mwl-api"), "--host", "127.0.0.1",
                          "--port", str(args.api_port)], env)
        wait_until(lambda: http_ok(f"{api_url}/api/v1/health"), "mwl-api", api)
        print(f"Worklist page/API    {api_url}   (log in as {login[0]} / {login[1]}; "
              f"API docs {api_url}/docs)")

        # Run from DAGSTER_HOME: dagster dev warns about the repository's dagster.yaml
        # in its working directory (DAGSTER_HOME links to that very file).
        dagster = procs.start("dagster", [str(BIN / "dagster"), "dev", "-h", "127.0.0.1",
                              "-p", str(args.dagster_port), "-w", str(ROOT / "workspace.yaml")],
                              env, cwd=env["DAGSTER_HOME"])
        ui = f"http://127.0.0.1:{args.dagster_port}"
        wait_until(lambda: http_ok(f"{ui}/server_info"), "dagster dev", dagster, timeout=180)
        redcap = [s.name for s in sources if s.type == "redcap"]
        print_next_steps(ui, args, calpendo[0], f"{sim_url.scheme}://{sim_url.netloc}",
                         redcap if redcap_url else [])
        while all(p.poll() is None for _, p in procs.procs):
            time.sleep(1)
        dead = [n for n, p in procs.procs if p.poll() is not None]
        print(f"error: {', '.join(dead)} stopped unexpectedly; see {VAR}/*.log")
        return 1
    except KeyboardInterrupt:
        print("\nStopping ...")
        return 0
    finally:
        procs.stop()


def print_next_steps(ui: str, args, source: DataSource, sim: str, redcap: list[str]) -> None:
    now = dt.datetime.now(source.tz)
    today = now.strftime("%Y%m%d")
    sim_cli = f"{BIN / 'calpendo-sim'} --url {sim}"
    print(f"""
Dagster UI           {ui}   (Assets -> Global asset lineage; Jobs -> {source.name}_sync)

The worklist over HTTP (token from POST /api/v1/login with the demo login above):
  curl -s -X POST http://127.0.0.1:{args.api_port}/api/v1/login -H 'Content-Type: application/json' \\
    -d '{{"username": "demo", "password": "PASSWORD"}}'
  curl -s http://127.0.0.1:{args.api_port}/api/v1/worklist -H "Authorization: Bearer TOKEN"

Today's worklist over DICOM (DCMTK):
  findscu -W -aet DEMO -aec {args.mwl_aet} 127.0.0.1 {args.mwl_port} \\
    -k PatientName -k PatientID -k AccessionNumber \\
    -k PatientWeight -k PatientSize -k RequestedProcedureCodeSequence \\
    -k "ScheduledProcedureStepSequence[0].ScheduledStationAETitle" \\
    -k "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate={today}" \\
    -k "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime" \\
    -k "ScheduledProcedureStepSequence[0].Modality" \\
    -k "ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence"

Change Calpendo while the demo runs; the sensor ({source.name}_sensor) looks every
10 s and a changed booking is in the worklist within about 20 s (run findscu again):
  {sim_cli} list --day {now:%Y-%m-%d}
  {sim_cli} edit ID --title "SUB0999 - Roe^Jane"
  {sim_cli} move ID "{now:%Y-%m-%d} 16:30"
  {sim_cli} cancel ID --reason "participant ill"

{redcap_lines(redcap)}
Logs in {VAR}/ . Press Ctrl-C to stop everything.""")


def redcap_lines(names: list[str]) -> str:
    if not names:
        return ""
    return (f"\nREDCap scan visits (source {', '.join(names)}, job {names[0]}_sync) are on "
            "station MRI3T too: the findscu\ncommand above lists today's. Their patient IDs are "
            "REDCap study ids (CPIP-...).\n")


if __name__ == "__main__":
    sys.exit(main())
