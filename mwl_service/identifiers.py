"""The identifiers of a worklist row, derived from (source, booking id) alone.

Accession Number, Study Instance UID and the step id are the same on every machine
and in every run, for synced rows and manual items alike (source ``manual``).
"""

from __future__ import annotations

import hashlib
import uuid

# Fixed namespace so identifiers are reproducible on every machine, forever.
_UID_NAMESPACE = uuid.UUID("6f3c7c1e-9a57-4b43-9d7e-5b0f1f6a2c11")


def _booking_uuid(source: str, booking_id: str) -> uuid.UUID:
    return uuid.uuid5(_UID_NAMESPACE, f"{source}\x1f{booking_id}")


def study_instance_uid(source: str, booking_id: str) -> str:
    """`2.25.<uuid5 as int>`: a valid UI (digits and dots, at most 44 of 64 chars)."""
    return f"2.25.{_booking_uuid(source, booking_id).int}"


def accession_number(source: str, booking_id: str) -> str:
    """16 decimal digits (SH limit) derived from (source, booking_id)."""
    return f"{_booking_uuid(source, booking_id).int % 10**16:016d}"


def step_id(source: str, booking_id: str) -> str:
    """Scheduled Procedure Step ID / Requested Procedure ID (SH, <= 16 chars).

    The booking id itself when it fits, so technologists can find the booking;
    otherwise a stable digest of it.
    """
    bid = str(booking_id)
    if 0 < len(bid) <= 16 and bid.isascii() and bid.replace("-", "").replace("_", "").isalnum():
        return bid
    return hashlib.sha1(bid.encode("utf-8")).hexdigest()[:16].upper()
