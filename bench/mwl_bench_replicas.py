"""Two mwl-service replicas on one PostgreSQL worklist against one replica: the
same N items, CLIENTS findscu processes at once (the typical query, a station
each), split between the replicas or all on one; p50 and p95 per query.

The database is named by --pg-url or MWL_BENCH_PG_URL (for example
postgresql+psycopg://postgres@127.0.0.1:55400/mybench); the bench replaces its own
rows there (source "bench") and leaves everything else alone. Without one the
case is skipped, and the bench says so.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from typing import IO

from mwl_bench_clients import at_once, client_matches, percentile
from mwl_bench_data import FIRST_DAY, Item, load_database
from mwl_bench_peers import OUR_AET, free_port, mwl_service_cmd, start, stop

PG_ENV = "MWL_BENCH_PG_URL"


def replica_latencies(pg_url: str, items: list[Item], clients: int, rounds: int,
                      log: IO[bytes]) -> dict[int, tuple[float, float]]:
    """{replicas: (p50, p95)} for one and for two replicas."""
    load_database(items, pg_url)
    past_days = (dt.date.today() - FIRST_DAY).days + 1
    procs: list[subprocess.Popen] = []
    try:
        replicas = []
        for k in range(2):
            port = free_port()
            cmd = mwl_service_cmd(pg_url, port, past_days, clients)
            replicas.append(start(f"mwl-service replica {k + 1}", OUR_AET, cmd, port, log, procs))
        matches = client_matches(clients)
        one: list[float] = []
        two: list[float] = []
        for _ in range(rounds):  # the two set-ups take turns
            one += at_once([(replicas[0], m) for m in matches])
            two += at_once([(replicas[k % 2], m) for k, m in enumerate(matches)])
    finally:
        stop(procs)
    return {n: (percentile(t, 50), percentile(t, 95)) for n, t in ((1, one), (2, two))}
