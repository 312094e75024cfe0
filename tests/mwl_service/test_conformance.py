"""What docs/dicom-conformance.md states about associations, contexts, sockets and keys
that no other test checks: the running server (in process, on 127.0.0.1) as a
pynetdicom requestor sees it, and the settings it builds pynetdicom's AE from."""

from __future__ import annotations

import socket
import ssl

import pytest
import pynetdicom
from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE
from pynetdicom.pdu_primitives import (
    AsynchronousOperationsWindowNegotiation,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from mwl_service.engine import make_engine
from mwl_service.matching import find_worklist
from mwl_service.server import MAXIMUM_PDU_SIZE, build_ae
from mwl_service.settings import ServerConfig
from mwl_service.tls import make_ssl_context
from tests.fixtures.dicom import associate, insert_item, mwl_query, pynetdicom_find
from tests.mwl_service.test_matching import worklist  # noqa: F401 - the fixture

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
CONTEXT_REJECTED_ABSTRACT_SYNTAX = 3  # PS3.8 9.3.3.2: abstract syntax not supported
CONTEXT_REJECTED_TRANSFER_SYNTAXES = 4  # transfer syntaxes not supported


def _requestor(*contexts) -> AE:
    ae = AE(ae_title="CONFORMANCE")
    for abstract, syntaxes in contexts:
        ae.add_requested_context(abstract, syntaxes)
    return ae


def test_association_acceptance_parameters(sqlite_url, mwl_server):
    server = mwl_server(sqlite_url)
    ae = _requestor((ModalityWorklistInformationFind, [ExplicitVRLittleEndian]))
    window = AsynchronousOperationsWindowNegotiation()
    window.maximum_number_operations_invoked = 5
    window.maximum_number_operations_performed = 5
    role = SCP_SCU_RoleSelectionNegotiation()
    role.sop_class_uid = ModalityWorklistInformationFind
    role.scu_role, role.scp_role = True, True
    assoc = ae.associate(server.host, server.port, ae_title=server.ae_title,
                         ext_neg=[window, role])
    try:
        assert assoc.is_established
        acceptor = assoc.acceptor
        assert acceptor.primitive.application_context_name == APPLICATION_CONTEXT
        assert acceptor.maximum_length == MAXIMUM_PDU_SIZE == 1024 * 1024
        assert acceptor.implementation_class_uid == pynetdicom.PYNETDICOM_IMPLEMENTATION_UID
        assert acceptor.implementation_version_name == (
            pynetdicom.PYNETDICOM_IMPLEMENTATION_VERSION)
        # No asynchronous operations: one operation at a time.
        assert acceptor.asynchronous_operations == (1, 1)
        # The requestor keeps the SCU role only; it never becomes an MWL SCP here.
        (context,) = assoc.accepted_contexts
        assert (context.as_scu, context.as_scp) == (True, False)
    finally:
        assoc.release()
        ae.shutdown()


def test_presentation_contexts_accepted_and_rejected(sqlite_url, mwl_server):
    server = mwl_server(sqlite_url)
    both = [ImplicitVRLittleEndian, ExplicitVRLittleEndian]
    ae = _requestor(
        (Verification, both),
        (ModalityWorklistInformationFind, both),
        (ModalityPerformedProcedureStep, both),
        (ModalityWorklistInformationFind, [ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian]),
        (StudyRootQueryRetrieveInformationModelFind, both),
    )
    assoc = ae.associate(server.host, server.port, ae_title=server.ae_title)
    try:
        assert assoc.is_established
        accepted = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
        assert accepted == {
            (Verification, ExplicitVRLittleEndian),
            (ModalityWorklistInformationFind, ExplicitVRLittleEndian),
            (ModalityPerformedProcedureStep, ExplicitVRLittleEndian),
        }
        rejected = {(cx.abstract_syntax, cx.result) for cx in assoc.rejected_contexts}
        assert rejected == {
            (ModalityWorklistInformationFind, CONTEXT_REJECTED_TRANSFER_SYNTAXES),
            (StudyRootQueryRetrieveInformationModelFind, CONTEXT_REJECTED_ABSTRACT_SYNTAX),
        }
    finally:
        assoc.release()
        ae.shutdown()


def test_the_service_only_accepts_associations(sqlite_url):
    ae = build_ae(ServerConfig(db_url=sqlite_url))
    assert ae.requested_contexts == []
    assert {cx.abstract_syntax for cx in ae.supported_contexts} == {
        Verification, ModalityWorklistInformationFind, ModalityPerformedProcedureStep}
    for cx in ae.supported_contexts:
        assert cx.transfer_syntax == [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


def test_configured_timeouts_reach_pynetdicom(sqlite_url):
    config = ServerConfig(db_url=sqlite_url, network_timeout=41.0, acse_timeout=12.0,
                          dimse_timeout=13.0, max_associations=7)
    ae = build_ae(config)
    assert (ae.network_timeout, ae.acse_timeout, ae.dimse_timeout) == (41.0, 12.0, 13.0)
    assert ae.maximum_pdu_size == MAXIMUM_PDU_SIZE
    assert ae.require_called_aet is True


def test_accepted_sockets_send_without_delay(sqlite_url, mwl_server):
    server = mwl_server(sqlite_url)
    with associate(server.host, server.port, server.ae_title) as assoc:
        assert assoc.is_established
        (accepted,) = server.server.active_associations
        sock = accepted.dul.socket.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


@pytest.mark.external  # openssl makes the certificates
def test_tls_is_version_1_2_or_newer(tls_files):
    context = make_ssl_context(ServerConfig(tls_cert=str(tls_files.server_cert),
                                            tls_key=str(tls_files.server_key)))
    assert context is not None and context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_NONE  # without --tls-ca: no client certificate


def test_a_sequence_key_with_two_items_is_refused_over_dicom(sqlite_url, mwl_server):
    server = mwl_server(sqlite_url)
    query = mwl_query()
    query.ScheduledProcedureStepSequence.append(Dataset())
    with associate(server.host, server.port, server.ae_title) as assoc:
        ((status, identifier),) = list(assoc.send_c_find(query, ModalityWorklistInformationFind))
    assert status.Status == 0xA900
    assert "one item" in status.ErrorComment
    assert identifier is None


def test_unknown_keys_are_returned_empty_and_never_matched(sqlite_url, mwl_server):
    engine = make_engine(sqlite_url)
    row = insert_item(engine)
    engine.dispose()
    server = mwl_server(sqlite_url)
    query = Dataset()
    query.AccessionNumber = ""
    query.InstitutionName = "Somewhere Else"  # a value: not matched, returned empty
    query.ReferencedPatientSequence = []  # a sequence the worklist does not hold
    query.add_new(0x00091010, "LO", "private")  # private: dropped
    (answer,), final = pynetdicom_find(server.host, server.port, server.ae_title, query)
    assert final == 0x0000
    assert answer.AccessionNumber == row["accession_number"]
    assert answer.InstitutionName == "" and answer["InstitutionName"].VR == "LO"
    assert len(answer.ReferencedPatientSequence) == 0
    assert 0x00091010 not in answer


def test_undeclared_bytes_that_are_not_utf8_are_read_as_latin1(worklist):
    ds = Dataset()
    ds[0x00100010] = RawDataElement(
        0x00100010, "PN", 8, "Müller*".encode("latin-1") + b" ", 0, False, True
    )  # no SpecificCharacterSet, and no UTF-8 either
    ds.set_original_encoding(False, True)
    ds.PatientID = ""
    assert [str(a.PatientID) for a in find_worklist(worklist, ds)] == ["P101"]
