"""The MWL server end to end: real server on 127.0.0.1, real SQLite file, DCMTK and
pynetdicom clients, the real `mwl-service` console script as a subprocess.

The matcher's exhaustive matching tests live with the matcher; here: that the server
answers real clients correctly, cancels, refuses, secures and shuts down.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from zoneinfo import ZoneInfo

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
)
from sqlalchemy import text
from sqlalchemy.orm import Session

from mwl_service import schema
from mwl_service.engine import make_engine
from tests.fixtures.dicom import (
    associate,
    insert_item,
    insert_items,
    mpps_attributes,
    mwl_query,
    pynetdicom_echo,
    pynetdicom_find,
    run_echoscu,
    run_findscu,
    sps,
    with_keys,
)

pytestmark = pytest.mark.timeout(60)


def rejection(assoc) -> tuple[int, int, int]:
    """(result, source, reason) of a rejected association request."""
    assert assoc.is_rejected, "association was not rejected"
    rsp = assoc.acceptor.primitive
    return rsp.result, rsp.result_source, rsp.diagnostic


@pytest.fixture
def rows(sqlite_url):
    """Three steps today: two on the 3T scanner, one EEG."""
    engine = make_engine(sqlite_url)

    tz = ZoneInfo("America/Edmonton")
    today = dt.datetime.now(tz).date()
    at = lambda h, m=0: dt.datetime.combine(today, dt.time(h, m), tzinfo=tz)
    made = {
        "jane": insert_item(engine, patient_name="Doe^Jane", start=at(9)),
        "john": insert_item(engine, patient_name="Smith^John", start=at(11, 30)),
        "eeg": insert_item(
            engine,
            patient_name="Eeg^Erin",
            start=at(10),
            scheduled_station_ae_title="EEG1",
            modality="EEG",
        ),
    }
    made["today"] = today.strftime("%Y%m%d")
    yield made
    engine.dispose()


# ----------------------------------------------------------------- C-ECHO


@pytest.mark.external
def test_echo_with_dcmtk_and_pynetdicom(sqlite_url, mwl_server):
    server = mwl_server(sqlite_url)
    proc = run_echoscu(server.host, server.port, server.ae_title)
    assert proc.returncode == 0, proc.stderr
    assert pynetdicom_echo(server.host, server.port, server.ae_title) == 0x0000


# ----------------------------------------------------------------- C-FIND


@pytest.mark.external
def test_findscu_worklist_query(sqlite_url, mwl_server, rows):
    server = mwl_server(sqlite_url)
    results = run_findscu(
        server.host,
        server.port,
        server.ae_title,
        with_keys(
            sps("ScheduledStationAETitle", "MRI3T"),
            sps("ScheduledProcedureStepStartDate", rows["today"]),
        ),
    )
    by_id = {ds.PatientID: ds for ds in results}
    assert set(by_id) == {rows["jane"]["patient_id"], rows["john"]["patient_id"]}
    john = by_id[rows["john"]["patient_id"]]
    assert john.PatientName == "Smith^John"
    assert john.AccessionNumber == rows["john"]["accession_number"]
    assert john.StudyInstanceUID == rows["john"]["study_instance_uid"]
    step = john.ScheduledProcedureStepSequence[0]
    assert step.ScheduledStationAETitle == "MRI3T"
    assert step.ScheduledProcedureStepStartDate == rows["today"]
    assert step.ScheduledProcedureStepStartTime == "113000"
    assert step.Modality == "MR"
    assert step.ScheduledProcedureStepID == rows["john"]["scheduled_procedure_step_id"]

    results = run_findscu(server.host, server.port, server.ae_title, with_keys("PatientName=Smi*"))
    assert [ds.PatientID for ds in results] == [rows["john"]["patient_id"]]

    results = run_findscu(
        server.host, server.port, server.ae_title, with_keys(sps("Modality", "EEG"))
    )
    assert [ds.PatientName for ds in results] == ["Eeg^Erin"]


@pytest.mark.external
def test_transfer_syntaxes_explicit_preferred_implicit_accepted(sqlite_url, mwl_server, rows):
    server = mwl_server(sqlite_url)
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(
        ModalityWorklistInformationFind, [ImplicitVRLittleEndian, ExplicitVRLittleEndian]
    )
    assoc = ae.associate(server.host, server.port, ae_title=server.ae_title)
    try:
        assert assoc.is_established
        assert [cx.transfer_syntax[0] for cx in assoc.accepted_contexts] == [ExplicitVRLittleEndian]
    finally:
        assoc.release()
        ae.shutdown()

    # DCMTK proposing Implicit VR Little Endian only
    results = run_findscu(
        server.host,
        server.port,
        server.ae_title,
        with_keys(f"PatientID={rows['jane']['patient_id']}"),
        extra=["-xi"],
    )
    assert [(r.PatientName, r.AccessionNumber) for r in results] == [
        ("Doe^Jane", rows["jane"]["accession_number"])
    ]
    assert results[0].ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime == "090000"


def test_pynetdicom_query_returns_the_requested_keys(sqlite_url, mwl_server, rows):
    server = mwl_server(sqlite_url)
    query = Dataset()
    query.PatientID = rows["jane"]["patient_id"]
    query.PatientName = ""
    query.AccessionNumber = ""
    item = Dataset()
    item.ScheduledProcedureStepStartTime = ""
    item.ScheduledStationAETitle = ""
    query.ScheduledProcedureStepSequence = [item]

    results, final = pynetdicom_find(server.host, server.port, server.ae_title, query)
    assert final == 0x0000
    assert len(results) == 1
    (ds,) = results
    assert {e.keyword for e in ds} - {"SpecificCharacterSet"} == {
        "PatientID",
        "PatientName",
        "AccessionNumber",
        "ScheduledProcedureStepSequence",
    }
    assert {e.keyword for e in ds.ScheduledProcedureStepSequence[0]} == {
        "ScheduledProcedureStepStartTime",
        "ScheduledStationAETitle",
    }
    assert ds.PatientName == "Doe^Jane"
    assert ds.AccessionNumber == rows["jane"]["accession_number"]
    assert ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime == "090000"


@pytest.mark.external
def test_non_ascii_names_round_trip(sqlite_url, mwl_server):
    engine = make_engine(sqlite_url)
    mueller = insert_item(engine, patient_name="Müller^Jürgen")
    yamada = insert_item(engine, patient_name="Yamada^Tarou=山田^太郎=やまだ^たろう")
    engine.dispose()
    server = mwl_server(sqlite_url)

    # DCMTK: the response files carry ISO_IR 192 and decode to the same name
    (ds,) = run_findscu(
        server.host, server.port, server.ae_title, with_keys(f"PatientID={mueller['patient_id']}")
    )
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.PatientName == "Müller^Jürgen"
    assert "Müller^Jürgen".encode() in ds["PatientName"].value.original_string

    # DCMTK, matching on the non-ASCII name itself
    results = run_findscu(
        server.host,
        server.port,
        server.ae_title,
        with_keys("SpecificCharacterSet=ISO_IR 192", "PatientName=Müller*"),
    )
    assert [r.PatientID for r in results] == [mueller["patient_id"]]

    # pynetdicom
    query = mwl_query(PatientName="Müller^Jürgen", SpecificCharacterSet="ISO_IR 192")
    results, final = pynetdicom_find(server.host, server.port, server.ae_title, query)
    assert final == 0x0000
    assert [(r.PatientID, str(r.PatientName)) for r in results] == [
        (mueller["patient_id"], "Müller^Jürgen")
    ]

    query = mwl_query(PatientID=yamada["patient_id"])
    (r,), final = pynetdicom_find(server.host, server.port, server.ae_title, query)
    assert r.PatientName.ideographic == "山田^太郎"
    assert r.PatientName.phonetic == "やまだ^たろう"


def test_c_cancel_stops_the_answers(sqlite_url, mwl_server, fast_sends):
    engine = make_engine(sqlite_url)
    n = 5000  # large enough that the answers are still going out when the cancel comes
    made = insert_items(engine, n, scheduled_station_ae_title="BUSY")
    engine.dispose()
    server = mwl_server(sqlite_url)

    query = mwl_query(sps={"ScheduledStationAETitle": "BUSY"})
    with associate(server.host, server.port, server.ae_title) as assoc:
        assert assoc.is_established
        pending, final = 0, None
        for status, _identifier in assoc.send_c_find(
            query, ModalityWorklistInformationFind, msg_id=7
        ):
            if status.Status == 0xFF00:
                pending += 1
                if pending == 1:
                    assoc.send_c_cancel(7, query_model=ModalityWorklistInformationFind)
            else:
                final = status.Status
        assert final == 0xFE00  # Cancel
        # The fast path lets the DUL drain (and read the C-CANCEL) every
        # DUL_QUEUE_HIGH_WATER primitives: the cancel is seen long before the end.
        assert 1 <= pending < n // 2
        assert 1 <= fast_sends["count"] < n // 2
        # a C-CANCEL for no running query is ignored, even when the next query
        # reuses its Message ID; the association is still usable
        assoc.send_c_cancel(9, query_model=ModalityWorklistInformationFind)
        results = list(
            assoc.send_c_find(
                mwl_query(PatientID=made[0]["patient_id"]),
                ModalityWorklistInformationFind,
                msg_id=9,
            )
        )
        assert [s.Status for s, _ in results] == [0xFF00, 0x0000]
        assert results[0][1].PatientID == made[0]["patient_id"]


def test_max_results_limits_answers(sqlite_url, mwl_server, rows):
    server = mwl_server(sqlite_url, max_results=2)
    results, final = pynetdicom_find(server.host, server.port, server.ae_title, mwl_query())
    assert final == 0x0000
    assert len(results) == 2


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")
def test_query_failures_get_failure_statuses(sqlite_url, mwl_server, rows, caplog):
    server = mwl_server(sqlite_url)
    bad = mwl_query(sps={"ScheduledProcedureStepStartDate": "tomorrow"})
    with associate(server.host, server.port, server.ae_title) as assoc:
        ((status, identifier),) = list(assoc.send_c_find(bad, ModalityWorklistInformationFind))
    assert status.Status == 0xC000
    assert "ScheduledProcedureStepStartDate" in status.ErrorComment
    assert identifier is None

    # a database failure: 0xC000, logged without patient data, server keeps serving
    engine = make_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE worklist_items RENAME TO worklist_items_away"))
    try:
        with caplog.at_level(logging.INFO, logger="mwl_service"):
            results, final = pynetdicom_find(
                server.host, server.port, server.ae_title, mwl_query(PatientName="Doe*")
            )
        assert (results, final) == ([], 0xC000)
        assert "C-FIND from" in caplog.text and "failed: OperationalError" in caplog.text
        assert "Doe" not in caplog.text
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE worklist_items_away RENAME TO worklist_items"))
        engine.dispose()
    results, final = pynetdicom_find(server.host, server.port, server.ae_title, mwl_query())
    assert (len(results), final) == (3, 0x0000)


def test_logs_name_keys_and_counts_but_no_patient_data(sqlite_url, mwl_server, rows, caplog):
    server = mwl_server(sqlite_url)
    query = mwl_query(
        sps={"Modality": "MR"}, PatientName="Smith^J*", PatientID=rows["john"]["patient_id"]
    )
    with caplog.at_level(logging.INFO):
        results, final = pynetdicom_find(
            server.host, server.port, server.ae_title, query, calling_aet="MRI3T"
        )
    assert (len(results), final) == (1, 0x0000)
    log = caplog.text
    assert "MRI3T@127.0.0.1:" in log  # association: calling AE title and address
    assert "PatientName" in log and "PatientID" in log and "Modality=MR" in log
    assert "1 result(s)" in log
    assert "Smith" not in log and rows["john"]["patient_id"] not in log


# ----------------------------------------------------------------- AE titles, limits


@pytest.mark.external
def test_allow_list_rejects_unknown_calling_ae(sqlite_url, mwl_server):
    server = mwl_server(sqlite_url, allowed_aets=("MRI3T", "ECHOSCU"))
    with associate(server.host, server.port, server.ae_title, calling_aet="INTRUDER") as assoc:
        # rejected-permanent, service-user, calling AE title not recognised
        assert rejection(assoc) == (0x01, 0x01, 0x03)
    proc = run_echoscu(server.host, server.port, server.ae_title, calling_aet="FINDSCU")
    assert proc.returncode != 0

    assert pynetdicom_echo(server.host, server.port, server.ae_title, calling_aet="MRI3T") == 0
    proc = run_echoscu(server.host, server.port, server.ae_title, calling_aet="ECHOSCU")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.external
def test_wrong_called_ae_title_is_rejected(sqlite_url, mwl_server):
    server = mwl_server(sqlite_url)
    with associate(server.host, server.port, "NOT_THE_MWL") as assoc:
        # rejected-permanent, service-user, called AE title not recognised
        assert rejection(assoc) == (0x01, 0x01, 0x07)
    proc = run_echoscu(server.host, server.port, "NOT_THE_MWL")
    assert proc.returncode != 0


def test_max_associations(sqlite_url, mwl_server):
    server = mwl_server(sqlite_url, max_associations=2, max_connections_per_host=3)
    with (
        associate(server.host, server.port, server.ae_title) as first,
        associate(server.host, server.port, server.ae_title) as second,
    ):
        assert first.is_established and second.is_established
        with associate(server.host, server.port, server.ae_title) as third:
            # rejected-transient, service-provider (presentation), local limit exceeded
            assert rejection(third) == (0x02, 0x03, 0x02)
        assert first.send_c_echo().Status == 0
    # both released: a new association is accepted again
    deadline = time.monotonic() + 5
    while pynetdicom_echo(server.host, server.port, server.ae_title) != 0:
        assert time.monotonic() < deadline, "association slots were not freed"
        time.sleep(0.1)


# ----------------------------------------------------------------- TLS


@pytest.mark.external
def test_tls_with_client_certificates(sqlite_url, mwl_server, rows, tls_files):
    server = mwl_server(
        sqlite_url,
        tls_cert=str(tls_files.server_cert),
        tls_key=str(tls_files.server_key),
        tls_ca=str(tls_files.ca_cert),
    )
    host, port, aet = server.host, server.port, server.ae_title
    good = (tls_files.client_context(), "localhost")

    # a silent plain TCP client must not hold up anyone's handshake
    idle = socket.create_connection((host, port))
    try:
        assert pynetdicom_echo(host, port, aet, tls_args=good) == 0x0000
        results, final = pynetdicom_find(host, port, aet, mwl_query(), tls_args=good)
        assert (len(results), final) == (3, 0x0000)
    finally:
        idle.close()

    # DCMTK over TLS with the client certificate
    tls = [
        "+tls",
        str(tls_files.client_key),
        str(tls_files.client_cert),
        "+cf",
        str(tls_files.ca_cert),
    ]
    proc = run_echoscu(host, port, aet, extra=tls)
    assert proc.returncode == 0, proc.stderr
    results = run_findscu(
        host, port, aet, with_keys(f"PatientID={rows['john']['patient_id']}"), extra=tls
    )
    assert [r.PatientName for r in results] == ["Smith^John"]

    # refused: plain DICOM, TLS without a client certificate, a certificate of another CA
    assert pynetdicom_echo(host, port, aet) is None
    assert run_echoscu(host, port, aet).returncode != 0
    no_cert = (tls_files.client_context(with_cert=False), "localhost")
    assert pynetdicom_echo(host, port, aet, tls_args=no_cert) is None
    untrusted = (tls_files.client_context(trusted=False), "localhost")
    assert pynetdicom_echo(host, port, aet, tls_args=untrusted) is None
    # and still serving
    assert pynetdicom_echo(host, port, aet, tls_args=good) == 0x0000


@pytest.mark.external
def test_tls_without_client_certificates(sqlite_url, mwl_server, tls_files):
    server = mwl_server(
        sqlite_url, tls_cert=str(tls_files.server_cert), tls_key=str(tls_files.server_key)
    )
    anonymous = (tls_files.client_context(with_cert=False), "localhost")
    assert pynetdicom_echo(server.host, server.port, server.ae_title, tls_args=anonymous) == 0
    assert pynetdicom_echo(server.host, server.port, server.ae_title) is None


# ----------------------------------------------------------------- the console script


@pytest.mark.external
def test_console_script_serves_and_stops_cleanly(sqlite_url, mwl_service_process):
    engine = make_engine(sqlite_url)
    for name in ("Müller^Jürgen", "Doe^Jane", "Roe^Richard"):
        insert_item(engine, patient_name=name)
    row = insert_item(engine, patient_name="Poe^Edgar", scheduled_station_ae_title="OTHER")

    service = mwl_service_process(
        sqlite_url,
        "--allowed-aet",
        "PYNETDICOM,FINDSCU",
        "--allowed-aet",
        "ECHOSCU",
        "--max-results",
        "2",
        "--max-associations",
        "4",
    )
    host, port, aet = service.host, service.port, service.ae_title

    results = run_findscu(host, port, aet, with_keys(sps("ScheduledStationAETitle", "MRI3T")))
    assert len(results) == 2  # --max-results
    assert run_echoscu(host, port, aet).returncode == 0
    assert pynetdicom_echo(host, port, aet, calling_aet="STRANGER") is None
    results, final = pynetdicom_find(host, port, aet, mwl_query(PatientName="Müller*"))
    assert [str(r.PatientName) for r in results] == ["Müller^Jürgen"]
    assert final == 0x0000

    uid = generate_uid()
    attrs = mpps_attributes(
        row["study_instance_uid"], row["accession_number"], row["scheduled_procedure_step_id"]
    )
    with associate(host, port, aet) as assoc:
        status, _ = assoc.send_n_create(attrs, ModalityPerformedProcedureStep, uid)
    assert status.Status == 0

    assert service.stop(signal.SIGTERM) == 0
    log = service.output()
    assert "Received SIGTERM" in log and "MWL service stopped" in log
    assert "rejected: calling AE title not on the allow-list" in log
    assert "Müller" not in log and "Poe" not in log  # no patient names at INFO
    assert "alembic" not in log  # the schema check at start is silent at INFO

    # restarted on the same port: the MPPS instance is still there
    service = mwl_service_process(sqlite_url, "--allowed-aet", "PYNETDICOM", port=port)
    done = Dataset()
    done.PerformedProcedureStepStatus = "COMPLETED"
    with associate(host, port, aet) as assoc:
        status, _ = assoc.send_n_set(done, ModalityPerformedProcedureStep, uid)
    assert status.Status == 0
    with Session(engine) as s:
        item = s.get(schema.WorklistItem, row["id"])
        assert (item.step_status, item.step_status_owner) == ("COMPLETED", "mpps")
    engine.dispose()
    assert service.stop(signal.SIGINT) == 0


@pytest.mark.external
def test_module_help_documents_every_option():
    proc = subprocess.run(
        [sys.executable, "-m", "mwl_service", "--help"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0
    for option in (
        "--db-url",
        "--ae-title",
        "--host",
        "--port",
        "--allowed-aet",
        "--max-associations",
        "--max-connections-per-host",
        "--request-timeout",
        "--station-from-calling-aet",
        "--offer-past-days",
        "--network-timeout",
        "--acse-timeout",
        "--dimse-timeout",
        "--max-results",
        "--tls-cert",
        "--tls-key",
        "--tls-ca",
        "--log-level",
        "WORKLIST_DB_URL",
        "SIGTERM",
    ):
        assert option in proc.stdout


@pytest.mark.external
def test_bad_arguments_and_busy_port_fail(sqlite_url, mwl_service_process):
    proc = subprocess.run(
        [sys.executable, "-m", "mwl_service", "--ae-title", "X" * 17],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and "1 to 16 characters" in proc.stderr

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        service = mwl_service_process(sqlite_url, port=busy.getsockname()[1], wait=False)
        assert service.proc.wait(timeout=30) == 1
        assert "Cannot start the MWL service" in service.output()


@pytest.mark.external
def test_empty_database_is_reported_with_its_absolute_path(tmp_path, mwl_service_process):
    """Started from the wrong directory, the default relative SQLite path makes a new,
    empty database: the log says so and names the absolute file."""
    url = f"sqlite:///{tmp_path / 'elsewhere' / 'worklist.db'}"
    service = mwl_service_process(url)
    assert service.stop() == 0
    out = service.output()
    assert f"SQLite file {tmp_path / 'elsewhere' / 'worklist.db'}" in out
    assert "has no rows yet" in out


@pytest.mark.external
def test_unparsable_database_url_names_the_setting(tmp_path):
    env = {**os.environ, "WORKLIST_DB_URL": "not a url"}
    proc = subprocess.run(
        [sys.executable, "-m", "mwl_service", "--port", "0"],
        check=False, capture_output=True, text=True, timeout=30, env=env,
    )
    assert proc.returncode == 1
    assert "database from WORKLIST_DB_URL" in proc.stderr


# ----------------------------------------------------------------- logging, files at rest


@pytest.mark.external
def test_utf8_query_without_character_set_matches(sqlite_url, mwl_service_process):
    """PatientName bytes M\\xc3\\xbcller* with no (0008,0005) are read as UTF-8 and
    find the row; describing the query for the log once made pydicom decode them
    as Latin-1 first, and the query found nothing."""
    engine = make_engine(sqlite_url)
    insert_item(engine, patient_name="Müller^Jürgen")
    insert_item(engine, patient_name="Mueller^Hans")
    engine.dispose()
    service = mwl_service_process(sqlite_url)
    # findscu sends the command line's UTF-8 bytes as they are, without a charset.
    answers = run_findscu(service.host, service.port, service.ae_title, with_keys("PatientName=Müller*"))
    assert "SpecificCharacterSet" not in with_keys("PatientName=Müller*")[0]
    assert [str(a.PatientName) for a in answers] == ["Müller^Jürgen"]
    assert "matching keys: PatientName" in service.output()
    assert "Müller" not in service.output()
    assert service.stop() == 0


@pytest.mark.external
def test_logged_values_are_cut(sqlite_url, mwl_service_process):
    """A 100 kB station AE title query gives a short log line, not a 100 kB one."""
    service = mwl_service_process(sqlite_url)
    long_title = "A" * 100_000
    with pytest.warns(UserWarning):  # pydicom: too long for AE, written as UN
        query = mwl_query(sps={"ScheduledStationAETitle": long_title})
        pynetdicom_find(service.host, service.port, service.ae_title, query)
    assert service.stop() == 0
    log = service.output()
    assert "ScheduledStationAETitle=" + "A" * 64 + "...(100000 characters)" in log
    assert max(len(line) for line in log.splitlines()) < 1000


@pytest.mark.external
def test_new_sqlite_worklist_is_private(tmp_path, mwl_service_process):
    """The database file and its -wal/-shm are created 0600, whatever the umask."""
    path = tmp_path / "private" / "worklist.db"
    previous = os.umask(0o022)
    try:
        service = mwl_service_process(f"sqlite:///{path}")
    finally:
        os.umask(previous)
    made = [p for p in (path, path.with_name("worklist.db-wal"), path.with_name("worklist.db-shm"))]
    assert path.exists() and made[1].exists()  # the service holds a WAL connection
    for p in made:
        if p.exists():
            assert p.stat().st_mode & 0o777 == 0o600, p
    assert service.stop() == 0


def test_existing_sqlite_file_keeps_its_mode(tmp_path):
    path = tmp_path / "worklist.db"
    path.touch(mode=0o640)
    path.chmod(0o640)
    make_engine(f"sqlite:///{path}").dispose()
    assert path.stat().st_mode & 0o777 == 0o640


# ----------------------------------------------------------------- matcher options
# These two need the matcher's calling_station= and offer_past_days= keywords.


@pytest.mark.external
def test_station_from_calling_aet(sqlite_url, mwl_service_process):
    """--station-from-calling-aet: a query that leaves Scheduled Station AE Title
    universal gets only the calling AE title's steps; an explicit station wins."""
    engine = make_engine(sqlite_url)
    mri = [insert_item(engine, patient_name=n) for n in ("Doe^Jane", "Roe^Rick")]
    eeg = insert_item(engine, patient_name="Eeg^Erin", scheduled_station_ae_title="EEG1")
    engine.dispose()
    service = mwl_service_process(sqlite_url, "--station-from-calling-aet")
    host, port, aet = service.host, service.port, service.ae_title

    def ids(calling: str, **sps_keys) -> list[str]:
        results, final = pynetdicom_find(
            host, port, aet, mwl_query(sps=sps_keys), calling_aet=calling
        )
        assert final == 0x0000
        return sorted(str(r.PatientID) for r in results)

    assert ids("EEG1") == [eeg["patient_id"]]
    assert ids("MRI3T") == sorted(r["patient_id"] for r in mri)
    assert ids("EEG1", ScheduledStationAETitle="MRI3T") == sorted(r["patient_id"] for r in mri)
    assert ids("NOSUCH") == []
    assert service.stop() == 0

    unfiltered = mwl_service_process(sqlite_url)
    results, _ = pynetdicom_find(
        unfiltered.host, unfiltered.port, aet, mwl_query(), calling_aet="EEG1"
    )
    assert len(results) == 3
    assert unfiltered.stop() == 0


@pytest.mark.external
def test_offer_past_days(sqlite_url, mwl_service_process):
    """--offer-past-days 2: a step five days ago is not offered as work, unless the
    query's date range asks for that day."""
    tz = ZoneInfo("America/Edmonton")
    today = dt.datetime.now(tz).date()
    engine = make_engine(sqlite_url)
    now = insert_item(engine, start=dt.datetime.combine(today, dt.time(9), tzinfo=tz))
    old_day = today - dt.timedelta(days=5)
    old = insert_item(engine, start=dt.datetime.combine(old_day, dt.time(9), tzinfo=tz))
    engine.dispose()
    service = mwl_service_process(sqlite_url, "--offer-past-days", "2")
    host, port, aet = service.host, service.port, service.ae_title

    results, final = pynetdicom_find(host, port, aet, mwl_query())
    assert final == 0x0000
    assert [str(r.PatientID) for r in results] == [now["patient_id"]]
    asked = mwl_query(sps={"ScheduledProcedureStepStartDate": old_day.strftime("%Y%m%d")})
    results, final = pynetdicom_find(host, port, aet, asked)
    assert [str(r.PatientID) for r in results] == [old["patient_id"]]
    assert service.stop() == 0
