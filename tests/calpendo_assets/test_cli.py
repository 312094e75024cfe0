"""`calpendo-mwl check` against the real simulator; the password never appears.

The database step needs `mwl_service.migrate` for the schema revision; these tests
cover it only where no revision is read (a missing SQLite file) and otherwise pass
``--no-db``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from calpendo_assets.cli import main
from tests.fixtures.sim import ROOT, SIM_PASSWORD, SIM_USER

CLI = str(Path(sys.executable).parent / "calpendo-mwl")


def write_config(directory: Path, url: str, **config) -> Path:
    data = json.loads((ROOT / "config" / "pylantir-example.json").read_text())
    data["data_sources"][0]["config"].update(base_url=url, **config)
    path = directory / "calpendo.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def run(monkeypatch, capsys):
    def run_check(config: Path, *args: str, password: str | None = SIM_PASSWORD):
        monkeypatch.setenv("CALPENDO_USERNAME", SIM_USER)
        if password is None:
            monkeypatch.delenv("CALPENDO_PASSWORD", raising=False)
        else:
            monkeypatch.setenv("CALPENDO_PASSWORD", password)
        code = main(["check", "--config", str(config), *args])
        out, err = capsys.readouterr()
        for secret in (SIM_PASSWORD, "wrong-Pa55"):
            assert secret not in out + err
        return code, out

    return run_check


@pytest.mark.external
def test_good_setup_exits_0_from_the_console_script(calpendo_sim, tmp_path):
    config = write_config(tmp_path, calpendo_sim.url)
    env = {**os.environ, "CALPENDO_USERNAME": SIM_USER, "CALPENDO_PASSWORD": SIM_PASSWORD}
    proc = subprocess.run(
        [CLI, "check", "--config", str(config), "--no-db"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"  source: ok - {calpendo_sim.url}/webdav: credentials accepted" in proc.stdout
    assert "  credentials: ok - CALPENDO_USERNAME and CALPENDO_PASSWORD are set" in proc.stdout
    assert "config.lookback_multiplier is accepted and not used" in proc.stdout
    assert proc.stdout.rstrip().endswith("all checks passed")
    assert SIM_PASSWORD not in proc.stdout + proc.stderr


def test_refused_credentials(calpendo_sim, tmp_path, run):
    code, out = run(write_config(tmp_path, calpendo_sim.url), "--no-db", password="wrong-Pa55")
    assert code == 1
    assert "  source: FAIL - credentials refused: Calpendo refused the credentials (HTTP 401)" in out


def test_missing_credentials(calpendo_sim, tmp_path, run):
    code, out = run(write_config(tmp_path, calpendo_sim.url), "--no-db", password=None)
    assert code == 1
    assert "  credentials: FAIL - environment variable CALPENDO_PASSWORD is not set" in out


def test_unreachable_server(tmp_path, run):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, out = run(write_config(tmp_path, f"http://127.0.0.1:{port}", timeout=5), "--no-db")
    assert code == 1
    assert f"  source: FAIL - unreachable: request to http://127.0.0.1:{port}/webdav/q/" in out


def test_answer_that_is_not_calpendo_json(calpendo_sim, tmp_path, run):
    calpendo_sim.fail_requests(status=200, body="<html><body>Sign in</body></html>", count=None)
    code, out = run(write_config(tmp_path, calpendo_sim.url), "--no-db")
    assert code == 1
    assert "  source: FAIL - the answer is not Calpendo JSON: Calpendo returned an HTML page" in out
    assert "Sign in" not in out


def test_config_error_names_file_source_and_key(tmp_path, run):
    config = write_config(tmp_path, "http://127.0.0.1:9", timzone="UTC")
    code, out = run(config, "--no-db")
    assert code == 1
    assert (
        f"  config: FAIL - config file '{config}': data source 'calpendo_3t': "
        "config.timzone: unknown key" in out
    )


def test_missing_sqlite_database_fails_the_check(calpendo_sim, tmp_path, run):
    db = tmp_path / "nope" / "worklist.db"
    code, out = run(write_config(tmp_path, calpendo_sim.url), "--db-url", f"sqlite:///{db}")
    assert code == 1
    assert f"  database: FAIL - {db} does not exist (run: calpendo-mwl db upgrade)" in out
    assert not db.exists()  # the check creates nothing


def test_default_database_is_named_without_nested_parentheses(calpendo_sim, tmp_path, run, monkeypatch):
    monkeypatch.delenv("WORKLIST_DB_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    code, out = run(write_config(tmp_path, calpendo_sim.url))
    assert code == 1  # no var/worklist.db here
    assert ("worklist database sqlite:///var/worklist.db "
            "(from the default, var/worklist.db under the current directory)\n") in out
    assert not (tmp_path / "var").exists()


def test_unreachable_database_hides_its_password(calpendo_sim, tmp_path, run):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql+psycopg://mwl:db-Secret-pw@127.0.0.1:{port}/worklist"
    code, out = run(write_config(tmp_path, calpendo_sim.url), "--db-url", url)
    assert code == 1
    assert f"worklist database postgresql+psycopg://mwl:***@127.0.0.1:{port}/worklist (from --db-url)" in out
    assert "  database: FAIL - unreachable: OperationalError" in out
    assert "db-Secret-pw" not in out


def test_db_upgrade_then_check_passes(calpendo_sim, tmp_path, run, capsys):
    from mwl_service import migrate
    url = f"sqlite:///{tmp_path / 'worklist.db'}"
    assert main(["db", "upgrade", "--db-url", url]) == 0
    upgraded = capsys.readouterr().out
    code, out = run(write_config(tmp_path, calpendo_sim.url), "--db-url", url)
    from mwl_service.engine import make_engine

    engine = make_engine(url, create=False, check_schema=False)
    head = migrate.schema_state(engine).head
    engine.dispose()
    assert f"schema upgraded from an empty database to {head}" in upgraded
    assert f"  schema: ok - at revision {head} (current)" in out
    assert code == 0, out
