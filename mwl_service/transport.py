"""What an accepted connection becomes: pynetdicom's association, reading with
quick ACKs (:mod:`mwl_service.quickack`) and run by reactors that wait instead of
poll (:mod:`mwl_service.reactors`). Why, and what it saves: ``bench/README.md``.

pynetdicom internal relied on (pynetdicom>=3,<4, checked against 3.0.4):
``RequestHandler._create_association()`` builds the acceptor Association, with its
DUL and AssociationSocket, which ``handle()`` then starts. Each adoption checks the
internals it needs and leaves pynetdicom's own parts where they differ.
"""

from __future__ import annotations

from typing import Any

from pynetdicom.transport import RequestHandler

from mwl_service.quickack import adopt_socket
from mwl_service.reactors import adopt_reactors


class AcceptedConnectionHandler(RequestHandler):
    """pynetdicom's request handler for the association server: every accepted
    connection (plain or TLS; C-ECHO, C-FIND and MPPS alike) gets the quick-ACK
    socket and the waiting reactors before its association starts."""

    def _create_association(self) -> Any:
        assoc = super()._create_association()
        adopt_socket(assoc)
        adopt_reactors(assoc)
        return assoc
