"""C-ECHO and final C-FIND responses encoded once, not once per association.

pynetdicom sends every DIMSE message through ``DIMSEServiceProvider.send_msg``,
which builds the command set as a pydicom Dataset (validating every UID) and
encodes it twice, once only to learn its group length: about 0.5 ms for a
C-ECHO-RSP or the final C-FIND-RSP on the 2-core bench machine, more than the rest
of answering a C-ECHO. Such a response carries no data set, and its command set
is a function of the response primitive's fields alone, so
:class:`CachedResponses` keeps the PDV values pynetdicom's own ``encode_msg``
produced for each distinct set of fields (and maximum PDU length) and sends those.
Any other message, and every message while someone listens to EVT_DIMSE_SENT
(which carries the built message), takes pynetdicom's path.

pynetdicom internals relied on (pynetdicom>=3,<4, checked against 3.0.4; when one
does not hold, :func:`adopt_responses` leaves the DIMSE provider as it is):
``assoc.dimse`` is a ``DIMSEServiceProvider`` whose ``send_msg(primitive,
context_id)`` sends each message as ``dul.send_pdu(P_DATA)`` for every P-DATA of
``message.encode_msg(context_id, maximum_pdu_size)`` after
``message.primitive_to_message(primitive)``; ``dimse_messages._COMMAND_SET_KEYWORDS``
names, per message type, the primitive attributes that command set is built from
(besides CommandGroupLength, CommandField and CommandDataSetType, which follow
from the message type and the absent data set).
"""

from __future__ import annotations

import logging
from typing import Any

from pynetdicom import evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import _COMMAND_SET_KEYWORDS, C_ECHO_RSP, C_FIND_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_FIND
from pynetdicom.pdu_primitives import P_DATA

LOG = logging.getLogger("mwl_service.responses")

_MESSAGES = {C_ECHO: C_ECHO_RSP, C_FIND: C_FIND_RSP}
_KEYWORDS = {
    primitive: _COMMAND_SET_KEYWORDS.get(message.__name__.replace("_", "-"), ())
    for primitive, message in _MESSAGES.items()
}
# Distinct responses kept (status, message ID, SOP class): a handful in practice.
CACHE_SIZE = 256
_cache: dict[tuple[Any, ...], tuple[bytes, ...]] = {}
_warned = False


def response_key(primitive: Any) -> tuple[Any, ...] | None:
    """What a C-ECHO or C-FIND response's command set is built from, or None for
    any other message, a request, or a response carrying a data set."""
    keywords = _KEYWORDS.get(type(primitive))
    if not keywords or primitive.MessageIDBeingRespondedTo is None:
        return None
    if getattr(primitive, "Identifier", None) is not None:
        return None
    if getattr(primitive, "_dataset_path", None) is not None:
        return None
    key = (type(primitive), *(getattr(primitive, keyword, None) for keyword in keywords))
    try:
        hash(key)
    except TypeError:  # e.g. an OffendingElement list
        return None
    return key


class CachedResponses(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider, sending C-ECHO and final C-FIND responses from
    the PDV values it encoded for the first such response."""

    def send_msg(self, primitive: Any, context_id: int) -> None:
        key = response_key(primitive)
        if key is None or self.assoc.get_handlers(evt.EVT_DIMSE_SENT):
            super().send_msg(primitive, context_id)
            return
        key = (*key, self.maximum_pdu_size)
        values = _cache.get(key)
        if values is None:
            message = _MESSAGES[type(primitive)]()
            message.primitive_to_message(primitive)
            values = tuple(
                pdata.presentation_data_value_list[0][1]
                for pdata in message.encode_msg(context_id, self.maximum_pdu_size)
            )
            if len(_cache) < CACHE_SIZE:
                _cache[key] = values
        for value in values:
            pdata = P_DATA()
            pdata.presentation_data_value_list.append((context_id, value))
            self.dul.send_pdu(pdata)


def adopt_responses(assoc: Any) -> bool:
    """Give an accepted association, before it starts, the caching DIMSE provider
    (the same object, of a subclass that only sends differently). Returns False,
    and leaves pynetdicom's, when the internals are not as expected."""
    global _warned
    dimse = getattr(assoc, "dimse", None)
    if type(dimse) is not DIMSEServiceProvider or not all(_KEYWORDS.values()):
        if not _warned:
            _warned = True
            LOG.warning("Cached DIMSE responses unavailable; pynetdicom encodes each one")
        return False
    dimse.__class__ = CachedResponses
    return True
