"""What mwl-service's log says about peers and queries, and what pynetdicom may log.

At INFO: associations (calling AE title, peer address), queries (which keys were
used, values only for non-identifying keys such as modality, station and dates, cut
to ``LOGGED_VALUE_LENGTH`` characters) and result counts. Describing a query never
decodes its values: what the matcher sees is what the peer sent. Patient data is
never logged at INFO; pynetdicom's identifier dumps and per-PDU/DIMSE logging are
switched off unless the ``pynetdicom`` logger is enabled for DEBUG
(:func:`quiet_pynetdicom`, called when the application entity is built).
"""

from __future__ import annotations

import logging
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pynetdicom import _config

# Logged query values are cut to this many characters.
LOGGED_VALUE_LENGTH = 64

# Query keys whose values identify no patient: safe to show at INFO.
_LOGGABLE_VALUES = frozenset(
    {
        "Modality",
        "ScheduledStationAETitle",
        "ScheduledStationName",
        "ScheduledProcedureStepLocation",
        "ScheduledProcedureStepStartDate",
        "ScheduledProcedureStepStartTime",
        "ScheduledProcedureStepStatus",
        "SpecificCharacterSet",
    }
)

# The association's number in this process's log lines: an attribute of our own on
# pynetdicom's Association object, set when its connection opens.
_NUMBER_ATTRIBUTE = "_mwl_number"


def quiet_pynetdicom() -> None:
    """pynetdicom dumps identifiers (patient data) and every PDU unless told not to
    (its documented ``pynetdicom._config`` options)."""
    debug = logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG)
    _config.LOG_REQUEST_IDENTIFIERS = debug
    _config.LOG_RESPONSE_IDENTIFIERS = debug
    # The "standard" handlers format every PDU/DIMSE message even when nobody reads
    # the log; read at association creation, so set before serving.
    _config.LOG_HANDLER_LEVEL = "standard" if debug else "none"


def number_association(assoc: Any, number: int) -> None:
    """Give ``assoc`` the number :func:`peer_label` shows."""
    setattr(assoc, _NUMBER_ATTRIBUTE, number)


def peer_label(assoc: Any) -> str:
    """`#n CALLING@host:port` for log lines."""
    requestor = assoc.requestor
    number = getattr(assoc, _NUMBER_ATTRIBUTE, "?")
    try:
        address = f"{requestor.address}:{requestor.port}"
    except Exception:  # noqa: BLE001 - logging must never fail a request
        address = "?"
    calling = (requestor.ae_title or "").strip() or "?"
    return f"#{number} {calling}@{address}"


def _shown(value: Any) -> str:
    """A logged value: raw bytes shown as text, cut to LOGGED_VALUE_LENGTH."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    text = text.strip(" \x00")
    if len(text) > LOGGED_VALUE_LENGTH:
        return f"{text[:LOGGED_VALUE_LENGTH]}...({len(text)} characters)"
    return text


def _raw_vr(elem: Any) -> str | None:
    if elem.VR:
        return str(elem.VR)
    try:
        return dictionary_VR(elem.tag)
    except KeyError:
        return None


def _is_empty(value: Any) -> bool:
    if isinstance(value, bytes):
        return not value.strip(b" \x00")
    return value is None or not str(value).strip(" \x00")


def describe_query(identifier: Dataset) -> str:
    """Which keys a C-FIND uses, without patient values (safe for INFO logs).

    Walks the elements as received (``Dataset.elements()``): decoding a value here
    would make pydicom convert it with the default character set, and the matcher
    would then see that instead of the bytes the peer sent. Only sequences are
    parsed, as the matcher parses them too."""
    matching: list[str] = []
    returned = 0

    def visit(ds: Dataset, prefix: str) -> None:
        nonlocal returned
        for elem in ds.elements():
            keyword = keyword_for_tag(elem.tag) or str(elem.tag)
            value = elem.value
            if keyword == "SpecificCharacterSet":
                if value:
                    matching.append(f"{keyword}={_shown(value)}")
                continue
            returned += 1
            if _raw_vr(elem) == "SQ":
                for item in ds[elem.tag].value or []:
                    visit(item, f"{prefix}{keyword}>")
            elif _is_empty(value):
                continue
            elif keyword in _LOGGABLE_VALUES:
                matching.append(f"{prefix}{keyword}={_shown(value)}")
            else:
                matching.append(f"{prefix}{keyword}")

    visit(identifier, "")
    keys = ", ".join(matching) if matching else "none (universal)"
    return f"matching keys: {keys}; {returned} requested keys"
