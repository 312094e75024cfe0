"""The plain-Python sync (calpendo_assets.sync): what its log says, for every source type.

Every plain log line of a sync names the source (``[calpendo:NAME]``); a booking that
spans days is logged once per sync for the administrator, by id, never by title.
"""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from calpendo_assets import sync
from calpendo_assets.config import parse_config
from mwl_service.engine import make_engine
from tests.fixtures.sim import SIM_PASSWORD, SIM_USER

ENV = {"CALPENDO_USERNAME": SIM_USER, "CALPENDO_PASSWORD": SIM_PASSWORD}
NAMES = ("Jane", "Doe", "Night", "Owl", "SUB0801", "SUB0802")


def calpendo_source(sim):
    raw = {"name": "mri", "type": "calpendo",
           "config": {"base_url": sim.url, "resources": ["3T MRI"], "retries": 0}}
    return parse_config({"data_sources": [raw]}, env={})[0]


def file_source(path):
    raw = {"name": "manual_entries", "type": "file", "config": {"path": str(path)}}
    return parse_config({"data_sources": [raw]}, env={})[0]


@pytest.fixture
def engine(tmp_path):
    eng = make_engine(f"sqlite:///{tmp_path / 'worklist.db'}")
    yield eng
    eng.dispose()


def sync_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("calpendo_assets")]


def test_every_plain_log_line_of_a_calpendo_sync_names_the_source(
    calpendo_sim_factory, engine, caplog
):
    sim = calpendo_sim_factory(bookings=0)
    today = sim.today
    sim.add_booking("SUB0801 - Jane Doe", start=dt.datetime.combine(today, dt.time(10)))
    overnight = sim.add_booking(
        "SUB0802 - Night Owl", start=dt.datetime.combine(today, dt.time(22)), minutes=180
    )
    source = calpendo_source(sim)
    now = dt.datetime.combine(today, dt.time(8)).replace(tzinfo=source.tz)
    with caplog.at_level(logging.DEBUG, logger="calpendo_assets"):
        _, result, published = sync.run_sync(source, engine, env=ENV, now=now)
    assert published.inserted == 2
    lines = sync_lines(caplog)
    assert any("bulk fetch: 2 bookings" in line for line in lines)  # the plugin's own line
    assert lines and all(line.startswith("[calpendo:mri] ") for line in lines), lines
    multi_day = [line for line in lines if "multi-day" in line]
    assert multi_day == [f"[calpendo:mri] {result.multi_day[str(overnight)]}"]
    assert multi_day[0].startswith(f"[calpendo:mri] booking {overnight}: a multi-day booking")
    for line in lines:
        assert not any(name in line for name in NAMES), line


def test_a_file_sync_logs_a_multi_day_entry_once_per_sync(tmp_path, engine, caplog):
    path = tmp_path / "entries.csv"
    path.write_text(
        "id,start,minutes,resource,title\n"
        "night-1,2026-03-10 23:30,90,Prisma,SUB0802 - Night Owl\n"
        "day-2,2026-03-10 10:00,30,Prisma,SUB0801 - Jane Doe\n"
    )
    source = file_source(path)
    now = dt.datetime(2026, 3, 10, 8, tzinfo=source.tz)
    for _ in range(2):  # two syncs: once each
        with caplog.at_level(logging.WARNING, logger="calpendo_assets"):
            sync.run_sync(source, engine, env={}, now=now)
        lines = sync_lines(caplog)
        assert lines == [
            "[calpendo:manual_entries] booking night-1: a multi-day booking (from 2026-03-10 23:30 "
            "to 2026-03-11 01:00, site-local); its worklist step is scheduled on its start date"
        ]
        caplog.clear()


def test_dagsters_own_log_gets_no_prefix(tmp_path):
    class Collect(logging.Handler):
        def __init__(self):
            super().__init__()
            self.lines = []

        def emit(self, record):
            self.lines.append(record.getMessage())

    run_log = logging.getLogger("test_sync.run_log")  # stands in for context.log
    handler = Collect()
    run_log.addHandler(handler)
    path = tmp_path / "entries.csv"
    path.write_text("id,start,minutes,resource,title\nn-1,2026-03-10 23:30,90,Prisma,SUB0802\n")
    source = file_source(path)
    fetched = sync.fetch(source, now=dt.datetime(2026, 3, 10, 8, tzinfo=source.tz))
    sync.transform(source, fetched, run_log)
    run_log.removeHandler(handler)
    assert handler.lines == [
        "booking n-1: a multi-day booking (from 2026-03-10 23:30 to 2026-03-11 01:00, "
        "site-local); its worklist step is scheduled on its start date"
    ]
