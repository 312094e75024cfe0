"""Editing a running simulator's bookings from outside: a loopback admin endpoint
and the ``calpendo-sim list|edit|move|cancel`` commands that call it.

Endpoint (same HTTP Basic credentials as the API; loopback clients only; not
counted as API requests and never hit by injected failures):

    GET  /admin/bookings                    every booking: id, title, start, resource, status
    POST /admin/bookings/ID                 JSON {"title", "start", "minutes", "status"} (any)
    POST /admin/bookings/ID/cancel          JSON {"reason"}

``start`` is site-local wall time, "YYYY-MM-DD HH:MM" or "HH:MM" (today).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import ipaddress
import json
import os
import sys
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from .errors import ApiError, BadRequest, NotFound

if TYPE_CHECKING:
    from .server import CalpendoSimulator, Response

COMMANDS = ("list", "edit", "move", "cancel")
EDITABLE = ("title", "start", "minutes", "status")


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


def handle(sim: CalpendoSimulator, method: str, path: str, body: bytes) -> tuple[int, Any]:
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


def respond(sim: CalpendoSimulator, method: str, path: str, body: bytes, client: str,
            authorised: bool) -> Response:
    from .server import Response

    if not is_loopback(client):
        return Response.text(403, "the admin endpoint answers loopback clients only")
    if not authorised:
        return Response.text(401, "Authentication required",
                             **{"WWW-Authenticate": 'Basic realm="Calpendo"'})
    status, answer = handle(sim, method, path, body)
    response = Response.json(json.dumps(answer, ensure_ascii=False).encode("utf-8"))
    response.status = status
    return response


# ----------------------------------------------------------------- the client commands


def _connection_options(p: argparse.ArgumentParser, defaults: bool) -> None:
    # Accepted before and after the command (`calpendo-sim edit 1002 --url ...`), and so
    # shown in each command's --help; after the command they override, else the defaults.
    def default(value: str) -> str:
        return value if defaults else argparse.SUPPRESS
    p.add_argument("--url", default=default(os.environ.get("CALPENDO_SIM_URL", "http://127.0.0.1:8089")),
                   help="the running simulator (default: $CALPENDO_SIM_URL, else "
                        "http://127.0.0.1:8089)")
    p.add_argument("--username", default=default(os.environ.get("CALPENDO_USERNAME") or "calpendo"),
                   help="Basic-auth user (default: $CALPENDO_USERNAME, else 'calpendo')")
    p.add_argument("--password", default=default(os.environ.get("CALPENDO_PASSWORD") or "calpendo"),
                   help="its password (default: $CALPENDO_PASSWORD, else 'calpendo')")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="calpendo-sim",
        description="Change the bookings of a running calpendo-sim (its loopback admin "
                    "endpoint). Start the simulator itself with `calpendo-sim --port ...`.")
    _connection_options(p, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    _connection_options(common, defaults=False)
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", parents=[common], help="list bookings (id, start, resource, status, title)")
    ls.add_argument("--day", help="only this day, YYYY-MM-DD")
    edit = sub.add_parser("edit", parents=[common], help="change a booking's title, status or duration")
    edit.add_argument("id", type=int)
    edit.add_argument("--title")
    edit.add_argument("--status", help="e.g. APPROVED, TENTATIVE, DENIED")
    edit.add_argument("--minutes", type=int)
    move = sub.add_parser("move", parents=[common], help="reschedule a booking")
    move.add_argument("id", type=int)
    move.add_argument("start", help="site-local 'YYYY-MM-DD HH:MM', or 'HH:MM' for today")
    move.add_argument("--minutes", type=int, help="new duration (default: unchanged)")
    cancel = sub.add_parser("cancel", parents=[common], help="cancel a booking in Calpendo")
    cancel.add_argument("id", type=int)
    cancel.add_argument("--reason", default="cancelled from the shell")
    return p


def call(args: argparse.Namespace, method: str, path: str, body: dict | None = None) -> Any:
    token = base64.b64encode(f"{args.username}:{args.password}".encode()).decode()
    request = urllib.request.Request(
        args.url.rstrip("/") + path, method=method,
        data=None if body is None else json.dumps(body).encode("utf-8"),
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def line(b: dict) -> str:
    return f"{b['id']:>6}  {b['start']}  {b['resource']:<14} {b['status']:<10} {b['title']}"


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            bookings = call(args, "GET", "/admin/bookings")
            for b in bookings:
                if not args.day or b["start"].startswith(args.day):
                    print(line(b))
            return 0
        if args.command == "cancel":
            booking = call(args, "POST", f"/admin/bookings/{args.id}/cancel", {"reason": args.reason})
        else:
            changes = {k: getattr(args, k, None) for k in EDITABLE}
            changes = {k: v for k, v in changes.items() if v is not None}
            if not changes:
                print("calpendo-sim: nothing to change (see --help)", file=sys.stderr)
                return 2
            booking = call(args, "POST", f"/admin/bookings/{args.id}", changes)
        print(line(booking))
        return 0
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace").strip()
        print(f"calpendo-sim: {exc.code}: {detail}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"calpendo-sim: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
