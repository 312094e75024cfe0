"""The shipped instance files: the production one is the repository's dagster.yaml plus
Dagster's storage on PostgreSQL through a driver that works with the pinned versions."""

from __future__ import annotations

from pathlib import Path

import yaml
from dagster._core.instance.config import dagster_instance_config
from dagster_postgres.utils import pg_url_from_config
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[2]
PG_ENV = {"DAGSTER_PG_USERNAME": "dagster", "DAGSTER_PG_PASSWORD": "s3cret:/@",
          "DAGSTER_PG_HOST": "db.example.org", "DAGSTER_PG_PORT": "6543",
          "DAGSTER_PG_DB": "dagster"}


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def test_production_file_is_dagster_yaml_plus_postgres_storage():
    production = load("deploy/dagster-postgres.yaml")
    storage = production.pop("storage")
    assert production == load("dagster.yaml")
    assert set(storage) == {"postgres"}


def test_production_file_validates_and_names_the_psycopg2_driver(monkeypatch):
    for key, value in PG_ENV.items():
        monkeypatch.setenv(key, value)
    config, _ = dagster_instance_config(str(ROOT / "deploy"), "dagster-postgres.yaml")
    postgres = config["storage"]["postgres"]
    db = postgres["postgres_db"]
    resolved = {**db, **{k: PG_ENV[v["env"]] for k, v in db.items() if isinstance(v, dict)}}
    url = make_url(pg_url_from_config({"postgres_db": resolved}))
    # psycopg 3 (SQLAlchemy 2.1's default for postgresql://) breaks dagster-postgres's NOTIFY.
    assert url.get_driver_name() == "psycopg2"
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "dagster", "s3cret:/@", "db.example.org", 6543, "dagster")

