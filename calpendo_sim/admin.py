"""Editing a running simulator's bookings from outside: the loopback admin endpoint
(the ``calpendo-sim list|edit|move|cancel`` commands that call it:
:mod:`calpendo_sim.admin_client`).

Endpoint (same HTTP Basic credentials as the API; loopback clients only; not
counted as API requests and never hit by injected failures):

    GET  /admin/bookings                    every booking: id, title, start, resource, status
    POST /admin/bookings/ID                 JSON {"title", "start", "minutes", "status"} (any)
    POST /admin/bookings/ID/cancel          JSON {"reason"}

``start`` is site-local wall time, "YYYY-MM-DD HH:MM" or "HH:MM" (today).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from typing import Any, Protocol

from .errors import ApiError, BadRequest, NotFound
from .response import Response

EDITABLE = ("title", "start", "minutes", "status")


class EditableSimulator(Protocol):
    """What the endpoint needs of the simulator (CalpendoSimulator has it)."""

    today: dt.date

    def bookings(self) -> list[dict]: ...

    def get_booking(self, booking_id: int) -> dict: ...

    def update_booking(self, booking_id: int, **props: Any) -> None: ...

    def cancel_booking(self, booking_id: int, reason: str = ...) -> None: ...


def parse_start(text: str, today: dt.date) -> dt.datetime:
    """ "YYYY-MM-DD HH:MM" or "HH:MM" (today), site-local and naive."""
    for fmt in ("%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"):
        try:
            return dt.datetime.strptime(text, fmt)
        except ValueError:
            pass
    try:
        return dt.datetime.combine(today, dt.datetime.strptime(text, "%H:%M").time())
    except ValueError:
        raise BadRequest(f"start {text!r}: expected 'YYYY-MM-DD HH:MM' or 'HH:MM'") from None


def summary(booking: dict) -> dict:
    props = booking["properties"]
    return {"id": booking["id"], "title": props.get("title", ""),
            "start": props["dateRange"]["start"][:16], "minutes": props.get("durationInMinutes"),
            "resource": (props.get("resource") or {}).get("name", ""),
            "status": props.get("status", "")}


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def handle(sim: EditableSimulator, method: str, path: str, body: bytes) -> tuple[int, Any]:
    """One admin request -> (HTTP status, JSON-ready answer)."""
    parts = [p for p in path.split("?")[0].split("/") if p]  # ["admin", "bookings", ...]
    try:
        if parts[:2] != ["admin", "bookings"] or len(parts) > 4:
            raise NotFound(f"no such admin resource: {path}")
        if len(parts) == 2:
            if method != "GET":
                raise BadRequest("use GET /admin/bookings")
            return 200, [summary(b) for b in sim.bookings()]
        if method != "POST":
            raise BadRequest("use POST to change a booking")
        if not parts[2].isdigit():
            raise NotFound(f"no booking {parts[2]!r}")
        booking_id = int(parts[2])
        try:
            changes = json.loads(body or b"{}")
        except ValueError:
            raise BadRequest("the body must be a JSON object") from None
        if not isinstance(changes, dict):
            raise BadRequest("the body must be a JSON object")
        try:
            sim.get_booking(booking_id)
        except KeyError:
            raise NotFound(f"no booking {booking_id}") from None
        if len(parts) == 4:
            if parts[3] != "cancel":
                raise NotFound(f"no such admin resource: {path}")
            sim.cancel_booking(booking_id, reason=str(changes.get("reason") or "cancelled"))
        else:
            unknown = set(changes) - set(EDITABLE)
            if unknown or not changes:
                raise BadRequest(f"give some of {', '.join(EDITABLE)}; unknown: {sorted(unknown)}")
            if "start" in changes:
                changes["start"] = parse_start(str(changes["start"]), sim.today)
            try:
                sim.update_booking(booking_id, **changes)
            except (ValueError, TypeError) as exc:
                raise BadRequest(str(exc)) from None
        return 200, summary(sim.get_booking(booking_id))
    except ApiError as exc:
        return exc.status, {"error": exc.message}


def respond(sim: EditableSimulator, method: str, path: str, body: bytes, client: str,
            authorised: bool) -> Response:
    if not is_loopback(client):
        return Response.text(403, "the admin endpoint answers loopback clients only")
    if not authorised:
        return Response.authentication_required()
    status, answer = handle(sim, method, path, body)
    return Response.json(json.dumps(answer, ensure_ascii=False).encode("utf-8"), status)
