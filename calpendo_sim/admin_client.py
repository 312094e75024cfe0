"""The ``calpendo-sim list|edit|move|cancel`` commands: a client of a running
simulator's loopback admin endpoint (:mod:`calpendo_sim.admin`)."""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

from .admin import EDITABLE

COMMANDS = ("list", "edit", "move", "cancel")
BOOKING_ID = "the booking's id (the first column of `list`)"


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
    edit.add_argument("id", type=int, help=BOOKING_ID)
    edit.add_argument("--title", help="new title, e.g. 'SUB0999 - Roe^Jane' (participant ID and name)")
    edit.add_argument("--status", help="new status, e.g. APPROVED, TENTATIVE, DENIED")
    edit.add_argument("--minutes", type=int, help="new duration in minutes")
    move = sub.add_parser("move", parents=[common], help="reschedule a booking")
    move.add_argument("id", type=int, help=BOOKING_ID)
    move.add_argument("start", help="site-local 'YYYY-MM-DD HH:MM', or 'HH:MM' for today")
    move.add_argument("--minutes", type=int, help="new duration (default: unchanged)")
    cancel = sub.add_parser("cancel", parents=[common], help="cancel a booking in Calpendo")
    cancel.add_argument("id", type=int, help=BOOKING_ID)
    cancel.add_argument("--reason", default="cancelled from the shell",
                        help="cancellation reason (default: 'cancelled from the shell')")
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
