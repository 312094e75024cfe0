"""``redcap-sim``: run the REDCap simulator in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys

from calpendo_sim.background import non_negative, run_in_foreground, zone_name

from .server import DEMO_TOKEN, RedcapSimulator

TOKEN_ENV = "REDCAP_API_TOKEN"


def _day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from None


def _token(text: str) -> str:
    if not (text.isascii() and text.isalnum()):
        raise argparse.ArgumentTypeError("a REDCap token is letters and digits only")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="redcap-sim",
        description="Serve a simulated REDCap API (POST /api/, one project, one token) with "
                    "generated participants and scan visits (a repeating 'mri' instrument): "
                    "content=record (format=json, type=flat, fields, events, filterLogic), "
                    "content=version, content=project and content=metadata.")
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    add("--port", type=non_negative(int), default=8091,
        help="TCP port; 0 picks a free one (default: %(default)s)")
    add("--token", type=_token, default=os.environ.get(TOKEN_ENV) or DEMO_TOKEN,
        help=f"the project's API token (default: ${TOKEN_ENV}, else the demo token "
             f"{DEMO_TOKEN}); never printed")
    add("--records", type=non_negative(int), default=40,
        help="number of generated participants (default: %(default)s)")
    add("--visits", type=non_negative(int), default=60,
        help="number of generated scan visits (default: %(default)s)")
    add("--seed", type=int, default=42,
        help="random seed; the same seed and day give the same data (default: %(default)s)")
    add("--today", type=_day, default=None,
        help="the simulated today, YYYY-MM-DD (default: today in --timezone)")
    add("--days", type=non_negative(int), default=7,
        help="most visits fall from today up to this many days ahead (default: %(default)s)")
    add("--past-days", type=non_negative(int), default=1,
        help="... or this many days before today (default: %(default)s)")
    add("--timezone", type=zone_name, default="America/Edmonton",
        help="site time zone: visit times are wall-clock times there (default: %(default)s)")
    add("--longitudinal", action="store_true",
        help="a longitudinal project: events baseline_arm_1 (participant) and "
             "t1_arm_1, t2_arm_1, t3_arm_1 (mri)")
    add("--no-repeating", action="store_true",
        help="the mri instrument does not repeat: each record (or record-event, with "
             "--longitudinal) is one visit")
    add("--latency", type=non_negative(float), default=0.0,
        help="seconds of delay added to every request, e.g. 0.05 (default: %(default)s)")
    add("--quiet", action="store_true", help="do not log each request to stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    shape = "longitudinal" if args.longitudinal else "classic"
    return run_in_foreground(
        "redcap-sim",
        lambda: RedcapSimulator(
            host=args.host, port=args.port, token=args.token, records=args.records,
            visits=args.visits, seed=args.seed, today=args.today, days=args.days,
            past_days=args.past_days, longitudinal=args.longitudinal,
            repeating=not args.no_repeating, latency=args.latency, timezone=args.timezone,
            log_requests=not args.quiet),
        f"{args.host}:{args.port}",
        lambda sim: f"{args.records} records, {args.visits} visits (seed {args.seed}, today "
                    f"{sim.today}, {shape}, mri {'not ' if args.no_repeating else ''}"
                    f"repeating); POST {sim.url} with the token")


if __name__ == "__main__":
    sys.exit(main())
