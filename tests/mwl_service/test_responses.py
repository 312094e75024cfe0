"""C-ECHO and final C-FIND responses sent from the cache are, byte for byte, what
pynetdicom sends for them: the same conversations against the in-process server
with and without the cache, every byte the server wrote compared."""

from __future__ import annotations

from io import BytesIO

import pytest
from pynetdicom import evt
from pynetdicom.dimse_messages import C_ECHO_RSP, C_FIND_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_FIND

from mwl_service import responses, transport
from mwl_service.responses import response_key
from tests.fixtures.dicom import associate, insert_item, mwl_query, pynetdicom_echo, pynetdicom_find

pytestmark = pytest.mark.timeout(60)


def conversations(server) -> list[bytes]:
    """What the server wrote, twice over: a C-ECHO, a C-FIND with an answer, one
    without, and a refused one (0xC000 with an error comment), an association each."""
    sent: list[bytes] = []
    server.server.bind(evt.EVT_DATA_SENT, lambda event: sent.append(event.data))
    host, port, aet = server.host, server.port, server.ae_title
    bad = mwl_query()
    bad.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate = "2026-01-01"
    for _ in range(2):
        assert pynetdicom_echo(host, port, aet) == 0x0000
        assert pynetdicom_find(host, port, aet, mwl_query())[1] == 0x0000
        assert pynetdicom_find(host, port, aet, mwl_query(PatientID="NOBODY")) == ([], 0x0000)
        assert pynetdicom_find(host, port, aet, bad)[1] == 0xC000
    return sent


def count_builds(monkeypatch) -> list:
    """The response primitives pynetdicom builds a C-ECHO/C-FIND-RSP message for."""
    built: list = []
    for message in (C_ECHO_RSP, C_FIND_RSP):
        real = message.primitive_to_message

        def spy(self, primitive, real=real):
            built.append(primitive)
            return real(self, primitive)

        monkeypatch.setattr(message, "primitive_to_message", spy)
    return built


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")
def test_cached_responses_are_pynetdicoms_bytes(db_url, engine, mwl_server, monkeypatch):
    insert_item(engine)
    monkeypatch.setattr(responses, "_cache", {})
    cached = conversations(mwl_server(db_url))
    built = count_builds(monkeypatch)
    monkeypatch.setattr(transport, "adopt_responses", lambda assoc: False)
    standard = conversations(mwl_server(db_url))
    # This time pynetdicom built every response itself: per round the C-ECHO-RSP,
    # three final C-FIND-RSPs and, the fast path being off while EVT_DATA_SENT is
    # watched, the one Pending response.
    assert len(built) == 10
    assert cached == standard


def test_the_cache_builds_each_response_once(db_url, mwl_server, monkeypatch):
    monkeypatch.setattr(responses, "_cache", {})
    built = count_builds(monkeypatch)
    server = mwl_server(db_url)
    for _ in range(3):
        with associate(server.host, server.port, server.ae_title) as assoc:
            assert assoc.send_c_echo().Status == 0x0000
    assert [p.Status for p in built] == [0x0000]


def test_requests_and_responses_with_a_data_set_are_not_cached():
    request = C_ECHO()
    request.MessageID = 1
    assert response_key(request) is None
    pending = C_FIND()
    pending.MessageIDBeingRespondedTo = 1
    pending.Status = 0xFF00
    pending.Identifier = BytesIO(b"\x10\x00\x20\x00\x02\x00\x00\x00X ")
    assert response_key(pending) is None
    final = C_FIND()
    final.MessageIDBeingRespondedTo = 1
    final.AffectedSOPClassUID = "1.2.840.10008.5.1.4.31"
    final.Status = 0x0000
    assert response_key(final) is not None
