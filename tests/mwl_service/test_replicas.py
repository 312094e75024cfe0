"""Several `mwl-service` replicas on one worklist database (real processes).

Started together on an empty database, all come up; once up, they give the same
answers and one MPPS winner per SOP Instance.

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
import threading
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from mwl_service import migrate, schema
from mwl_service.engine import make_engine
from mwl_service.schema import EVENT_MPPS_CREATE, IN_PROGRESS, MppsInstance, WorklistHistory
from tests.fixtures.db import PG_URL, reset_postgres
from tests.fixtures.dicom import (
    HOST,
    SERVER_AET,
    associate,
    free_port,
    insert_items,
    mpps_attributes,
    mwl_query,
    mwl_service_executable,
    pynetdicom_find,
    wait_for_echo,
)

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
        engine = make_engine(db_url, create=False)
        try:
            with engine.connect() as conn:
                versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
        finally:
            engine.dispose()
        assert [v for (v,) in versions] == [migrate.head_revision()], n


def test_replicas_agree_and_give_one_mpps_winner(db_url, engine, mwl_service_process):
    """Two replicas: identical C-FIND answers; 20 simultaneous N-CREATEs of one SOP
    Instance, 10 on each, give one success and 19 "duplicate SOP instance" (0x0111),
    one stored instance and one history event."""
    rows = insert_items(engine, 5)
    limits = ("--max-associations", "20", "--max-connections-per-host", "20")
    replicas = [mwl_service_process(db_url, *limits) for _ in range(2)]
    answers = []
    for replica in replicas:
        found, status = pynetdicom_find(replica.host, replica.port, SERVER_AET,
                                        mwl_query(AccessionNumber=""))
        assert status == 0x0000
        answers.append(sorted(str(ds.AccessionNumber) for ds in found))
    assert answers[0] == answers[1] == sorted(r["accession_number"] for r in rows)

    step, uid = rows[0], generate_uid()
    attributes = mpps_attributes(step["study_instance_uid"], step["accession_number"],
                                 step["scheduled_procedure_step_id"],
                                 patient_id=step["patient_id"])
    statuses: list[int] = []
    start = threading.Barrier(20)

    def create(replica) -> None:
        with associate(replica.host, replica.port, SERVER_AET, calling_aet="MRI3T") as assoc:
            assert assoc.is_established
            start.wait(timeout=30)
            status, _ = assoc.send_n_create(attributes, ModalityPerformedProcedureStep, uid)
            statuses.append(int(status.Status))

    threads = [threading.Thread(target=create, args=(replicas[n % 2],)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [0x0000] + [0x0111] * 19
    with Session(engine) as s:
        assert [i.sop_instance_uid for i in s.scalars(select(MppsInstance))] == [uid]
        events = s.scalars(select(WorklistHistory).where(
            WorklistHistory.event == EVENT_MPPS_CREATE)).all()
        assert len(events) == 1
    with engine.connect() as conn:
        status = conn.scalar(select(schema.WorklistItem.step_status).where(
            schema.WorklistItem.accession_number == step["accession_number"]))
    assert status == IN_PROGRESS
