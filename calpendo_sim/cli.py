"""``calpendo-sim``: run the Calpendo simulator in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import os
import sys

from . import admin_client
from .background import non_negative, run_in_foreground, zone_name
from .server import CalpendoSimulator


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="calpendo-sim",
        description="Serve a simulated Calpendo web API (webdav/q and webdav/b, HTTP Basic "
                    "auth) with generated bookings, for demos, tests and benchmarks. "
                    "`calpendo-sim list|edit|move|cancel --help`: change the bookings of a "
                    "running simulator through its loopback admin endpoint (/admin/bookings).")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=non_negative(int), default=8089,
                        help="TCP port; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--bookings", type=non_negative(int), default=60,
                        help="number of generated bookings (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=42,
                        help="random seed; the same seed and day give the same bookings "
                             "(default: %(default)s)")
    parser.add_argument("--days", type=non_negative(int), default=7,
                        help="bookings start from today up to this many days ahead "
                             "(default: %(default)s)")
    parser.add_argument("--past-days", type=non_negative(int), default=1,
                        help="bookings may also start this many days before today "
                             "(default: %(default)s)")
    parser.add_argument("--latency", type=non_negative(float), default=0.0,
                        help="seconds of delay added to every request, e.g. 0.05 "
                             "(default: %(default)s)")
    parser.add_argument("--timezone", type=zone_name, default="America/Edmonton",
                        help="site time zone; booking times are wall-clock times there and "
                             "'today' is today there (default: %(default)s)")
    parser.add_argument("--username", default=os.environ.get("CALPENDO_USERNAME") or "calpendo",
                        help="Basic-auth user (default: $CALPENDO_USERNAME, else 'calpendo')")
    parser.add_argument("--password", default=os.environ.get("CALPENDO_PASSWORD") or "calpendo",
                        help="Basic-auth password (default: $CALPENDO_PASSWORD, else "
                             "'calpendo'); never printed")
    parser.add_argument("--flat-keys", action="store_true",
                        help="answer with flat dotted keys ('resource.name': ...) instead of "
                             "nested 'properties' objects")
    parser.add_argument("--quiet", action="store_true",
                        help="do not log each request to stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in admin_client.COMMANDS for a in argv):  # the server itself takes no positionals
        return admin_client.main(argv)
    args = build_parser().parse_args(argv)
    return run_in_foreground(
        "calpendo-sim",
        lambda: CalpendoSimulator(
            host=args.host, port=args.port, bookings=args.bookings, seed=args.seed,
            username=args.username, password=args.password, latency=args.latency,
            timezone=args.timezone, days=args.days, past_days=args.past_days,
            flat_keys=args.flat_keys, log_requests=not args.quiet),
        f"{args.host}:{args.port}",
        lambda sim: f"{args.bookings} bookings (seed {args.seed}, today {sim.today} in "
                    f"{args.timezone}), user {args.username!r}; API under {sim.url}/webdav")


if __name__ == "__main__":
    sys.exit(main())
