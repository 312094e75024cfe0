"""What an accepted connection becomes: pynetdicom's association, reading with
quick ACKs (:mod:`mwl_service.quickack`), run by reactors that wait instead of
poll (:mod:`mwl_service.reactors`), sending C-ECHO and final C-FIND responses
encoded once (:mod:`mwl_service.responses`). Why, and what it saves:
``bench/README.md``.

pynetdicom internals relied on (pynetdicom>=3,<4, checked against 3.0.4):
``RequestHandler._create_association()`` builds the acceptor Association, with its
DUL and AssociationSocket, which ``handle()`` then starts; it takes both ends'
addresses from the handler's ``local`` and ``remote`` (AddressInformation, whose
constructor resolves the address with ``getaddrinfo()``). Each adoption checks the
internals it needs and leaves pynetdicom's own parts where they differ.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from pynetdicom.transport import AddressInformation, RequestHandler

from mwl_service.quickack import adopt_socket
from mwl_service.reactors import adopt_reactors
from mwl_service.responses import adopt_responses


class AcceptedConnectionHandler(RequestHandler):
    """pynetdicom's request handler for the association server: every accepted
    connection (plain or TLS; C-ECHO, C-FIND and MPPS alike) gets the quick-ACK
    socket (which refuses PDUs longer than our maximum PDU length), the waiting
    reactors and the cached responses before its association starts."""

    @property
    def local(self) -> AddressInformation:
        return _address_info(tuple(self.server.server_address))

    @property
    def remote(self) -> AddressInformation:
        return _address_info(tuple(self.client_address))

    def _create_association(self) -> Any:
        assoc = super()._create_association()
        # No PDU longer than our maximum PDU length (0: none) is read.
        adopt_socket(assoc, max_read=assoc.acceptor.maximum_length or None)
        adopt_reactors(assoc)
        adopt_responses(assoc)
        return assoc


def _address_info(address: tuple[Any, ...]) -> AddressInformation:
    """AddressInformation for an (address, port[, flowinfo, scope_id]) tuple,
    resolved once per address rather than once per association (numeric
    addresses, but getaddrinfo() all the same); a copy, as each association owns
    its own."""
    info = copy.copy(_resolved(address[0], *address[2:]))
    info.port = address[1]
    return info


@functools.lru_cache(maxsize=256)
def _resolved(address: str, *ipv6: int) -> AddressInformation:
    return AddressInformation.from_tuple((address, 0, *ipv6))  # type: ignore[arg-type]
