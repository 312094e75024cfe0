"""Which bookings a sync publishes, and as what: resource scope and mappings, step status.

Resources match case-insensitively by prefix (``"3T"`` takes ``"3T MRI"``); the
modality and AE-title mappings take the exact name first, then the longest prefix.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from calpendo_assets.rows.codes import match_by_name
from mwl_service.schema import DISCONTINUED, SCHEDULED

CANCELLED_STATUSES = frozenset({"CANCELLED", "CANCELED"})
DENIED_STATUSES = frozenset({"DENIED"})


def match_resource(resource_name: str | None, resources: Iterable[str]) -> bool:
    """No configured resources = every resource; else case-insensitive prefix match."""
    resources = tuple(resources)
    if not resources:
        return True
    name = (resource_name or "").strip().casefold()
    return any(name.startswith(r.strip().casefold()) for r in resources)


def map_by_resource(resource_name: str | None, mapping: Mapping[str, Any], default: Any) -> Any:
    """Exact (case-insensitive) match first, then the longest matching prefix, else default."""
    return match_by_name(resource_name, mapping, default)


def default_ae_title(resource_name: str | None) -> str:
    """Resource name upper-cased, non [A-Z0-9_] -> "_" (runs collapsed), max 16."""
    ae = re.sub(r"[^A-Z0-9_]+", "_", (resource_name or "").upper())
    ae = re.sub(r"_+", "_", ae).strip("_")
    return ae[:16].rstrip("_")


def map_step_status(
    booking_status: str | None, cancelled: bool, status_filter: Iterable[str]
) -> tuple[str | None, str]:
    """(step_status, reason) for a booking; step_status None = not in scope.

    Cancelled (flag or status CANCELLED) -> DISCONTINUED, reason with the source's
    cancellation reason appended by the caller; DENIED -> DISCONTINUED; a status in
    the filter -> SCHEDULED; anything else (REQUESTED, TENTATIVE, ...) -> None. The
    reasons name Calpendo, whose enum values these are: stored rows keep that text.
    """
    status = (booking_status or "").strip().upper()
    if cancelled or status in CANCELLED_STATUSES:
        return DISCONTINUED, "cancelled in Calpendo"
    if status in DENIED_STATUSES:
        return DISCONTINUED, "denied in Calpendo"
    wanted = {s.strip().upper() for s in status_filter}
    if status in wanted or not wanted:  # no filter (a file source): every other status
        return SCHEDULED, ""
    return None, f"status {status or '(empty)'} not in filter"


def truthy(value: Any) -> bool:
    """A record's flag: a boolean, or text such as "true"/"yes"/"1"."""
    if isinstance(value, str):
        return value.strip().lower() in {"true", "yes", "1", "y"}
    return bool(value)
