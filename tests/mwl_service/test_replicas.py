"""Replicas and first starts: processes started together on an empty database all come up.

Three `mwl-service` replicas and `calpendo-mwl db upgrade` start at the same moment on one
empty database, ten times over on PostgreSQL (three on SQLite): the schema is created
once (the lock in mwl_service.migrate), every replica answers C-ECHO and the upgrade
ends cleanly. Without
the lock, replicas died with UniqueViolation / DuplicateTable on PostgreSQL and with a
doubled alembic_version row on SQLite.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from mwl_service import migrate, schema
from tests.fixtures.db import PG_URL, reset_postgres
from tests.fixtures.dicom import HOST, SERVER_AET, free_port, mwl_service_executable, wait_for_echo

pytestmark = pytest.mark.external

ROUNDS = {"postgresql": 10, "sqlite": 3}
REPLICAS = 3  # and the upgrade: four processes


def start_together(db_url: str, logs: Path) -> tuple[list[subprocess.Popen], list[int]]:
    ports = [free_port() for _ in range(REPLICAS)]
    commands = [[mwl_service_executable(), "--db-url", db_url, "--host", HOST,
                 "--port", str(port), "--ae-title", SERVER_AET] for port in ports]
    commands.append([str(Path(sys.executable).with_name("calpendo-mwl")), "db", "upgrade",
                     "--db-url", db_url])
    procs = []
    for n, command in enumerate(commands):
        with open(logs / f"process-{n}.log", "wb") as log:
            procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
    return procs, ports


@pytest.mark.parametrize("backend", ["sqlite"] + (["postgresql"] if PG_URL else []))
def test_replicas_started_together_on_an_empty_database_all_come_up(backend, tmp_path):
    for n in range(ROUNDS[backend]):
        logs = tmp_path / f"round-{n}"
        logs.mkdir()
        if backend == "postgresql":
            reset_postgres(PG_URL)
            db_url = PG_URL
        else:
            db_url = f"sqlite:///{logs / 'worklist.db'}"
        procs, ports = start_together(db_url, logs)
        try:
            upgrade = procs[-1]
            assert upgrade.wait(timeout=60) == 0, (logs / f"process-{REPLICAS}.log").read_text()
            for i, (proc, port) in enumerate(zip(procs, ports)):
                try:
                    wait_for_echo(HOST, port, SERVER_AET, proc=proc, timeout=60)
                except pytest.fail.Exception:
                    pytest.fail((logs / f"process-{i}.log").read_text()[-3000:])
        finally:
            for proc in procs[:REPLICAS]:
                proc.terminate()
            exits = [proc.wait(timeout=30) for proc in procs[:REPLICAS]]
        assert exits == [0] * REPLICAS, [
            (logs / f"process-{i}.log").read_text()[-2000:] for i in range(REPLICAS)]
        engine = schema.make_engine(db_url, create=False)
        try:
            with engine.connect() as conn:
                versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
        finally:
            engine.dispose()
        assert [v for (v,) in versions] == [migrate.head_revision()], n
