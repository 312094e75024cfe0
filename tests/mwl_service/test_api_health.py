"""Health: 200 with each source's freshness, 503 when the database goes away or its
schema is out of date; the database errors of other endpoints are 503 JSON too."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from mwl_service import migrate
from tests.fixtures.api import api_user
from tests.fixtures.db import PG_URL

pytestmark = pytest.mark.postgres


def downgrade(url: str, revision: str) -> None:
    engine = create_engine(url)
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        command.downgrade(migrate._config(conn), revision)
        conn.commit()
    engine.dispose()


def test_health_turns_503_when_the_schema_is_out_of_date(db_url, api_server):
    api = api_server(db_url)
    assert api.call("GET", "/api/v1/health").status_code == 200
    downgrade(db_url, "0002")
    answer = api.call("GET", "/api/v1/health")
    assert answer.status_code == 503
    body = answer.json()
    assert (body["status"], body["database"], body["schema"]) == ("degraded", "ok", "out of date")
    assert "revision 0002" in body["reason"] and "calpendo-mwl db upgrade" in body["reason"]


def _drop_sqlite(tmp_path, api_server):
    folder = tmp_path / "db"
    api = api_server(f"sqlite:///{folder / 'worklist.db'}")

    def vanish() -> None:
        folder.rename(tmp_path / "moved")  # pooled connections still hold it open

    return api, vanish


def _drop_postgresql(api_server):
    url = make_url(PG_URL)
    name = f"{url.database}_gone"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")

    def run(sql: str) -> None:
        with admin.connect() as conn:
            conn.execute(text(sql))

    run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    run(f'CREATE DATABASE "{name}"')
    api = api_server(url.set(database=name).render_as_string(hide_password=False))
    return api, lambda: run(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_health_turns_503_when_the_database_goes_away(db_url, tmp_path, api_server):
    if db_url.startswith("sqlite"):
        api, vanish = _drop_sqlite(tmp_path, api_server)
    else:
        api, vanish = _drop_postgresql(api_server)
    api_user(api.engine, "reader", "read")
    token = api.token("reader")
    assert api.call("GET", "/api/v1/health").status_code == 200
    vanish()
    answer = api.call("GET", "/api/v1/health")
    assert answer.status_code == 503
    body = answer.json()
    assert (body["status"], body["database"], body["schema"]) == (
        "degraded", "unreachable", "unknown")
    assert "OperationalError" in body["reason"] and str(tmp_path) not in body["reason"]
    api.engine.dispose()  # new connections find no database
    listed = api.call("GET", "/api/v1/worklist", headers={"Authorization": f"Bearer {token}"})
    assert listed.status_code == 503
    assert listed.json() == {"detail": "the worklist database is unavailable"}
