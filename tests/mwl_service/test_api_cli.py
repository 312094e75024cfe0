"""mwl-api's command line, in this process: the site zone it passes to the app."""

from __future__ import annotations

import json

import pytest

from calpendo_assets.core.errors import ConfigError
from mwl_service.api import cli


def write_config(tmp_path, *sources: tuple[str, str, bool]) -> dict[str, str]:
    """A data-source config of (name, timezone, enabled) file sources; its env."""
    path = tmp_path / "calpendo.json"
    path.write_text(json.dumps({"data_sources": [
        {"name": name, "type": "file", "enabled": enabled,
         "config": {"path": "entries.csv", "timezone": zone}}
        for name, zone, enabled in sources
    ]}))
    return {"CALPENDO_MWL_CONFIG": str(path)}


def test_the_default_zone_is_the_first_enabled_sources(tmp_path):
    env = write_config(tmp_path, ("off", "Europe/Berlin", False),
                       ("mri", "America/Edmonton", True), ("eeg", "Asia/Tokyo", True))
    assert cli.config_timezone(env) == "America/Edmonton"


def test_a_config_without_an_enabled_source_tells_no_zone(tmp_path):
    env = write_config(tmp_path, ("off", "Europe/Berlin", False))
    with pytest.raises(ConfigError, match="no enabled data source to take the site time zone"):
        cli.config_timezone(env)


def test_timezone_given_is_passed_down_without_reading_the_config(tmp_path, monkeypatch):
    monkeypatch.setenv("CALPENDO_MWL_CONFIG", str(tmp_path / "missing.json"))
    args = cli.build_parser().parse_args(["--timezone", "Asia/Tokyo", "--token-ttl", "120"])
    settings = cli.settings_from_args(args)
    assert (settings.timezone, settings.token_ttl.total_seconds()) == ("Asia/Tokyo", 120)
    args = cli.build_parser().parse_args([])
    with pytest.raises(ConfigError, match="missing.json"):  # no zone given: the config's
        cli.settings_from_args(args)
    monkeypatch.setenv("CALPENDO_MWL_CONFIG", write_config(
        tmp_path, ("mri", "America/Edmonton", True))["CALPENDO_MWL_CONFIG"])
    assert cli.settings_from_args(args).timezone == "America/Edmonton"


def test_an_unknown_timezone_is_refused_as_the_config_refuses_it(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--timezone", "Mars/Base"])
    assert "argument --timezone: unknown time zone 'Mars/Base'" in capsys.readouterr().err
