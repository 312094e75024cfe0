"""The shipped JSON Schema is the models' own, and the README reference lists their keys."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import jsonschema
import pytest

from calpendo_assets.config import json_schema
from calpendo_assets.config.models import SourceBase
from calpendo_assets.core.settings import Code, SourceSettings, Units
from calpendo_assets.sources.calpendo.settings import CalpendoSettings
from calpendo_assets.sources.file import FileSettings
from calpendo_assets.sources.redcap.settings import RedcapSettings
from tests.fixtures.sim import ROOT

SCHEMA = ROOT / "config" / "calpendo-mwl.schema.json"
README = (ROOT / "README.md").read_text(encoding="utf-8")


def keys(model, minus=()) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()} - set(minus)


def test_shipped_schema_is_generated_from_the_models():
    # Regenerate with: python -m calpendo_assets.config --schema > config/calpendo-mwl.schema.json
    assert json.loads(SCHEMA.read_text()) == json.loads(json.dumps(json_schema()))


@pytest.mark.external
def test_the_documented_command_prints_the_shipped_schema():
    command = [sys.executable, "-m", "calpendo_assets.config", "--schema"]
    assert "python -m calpendo_assets.config --schema" in README
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == SCHEMA.read_text()


@pytest.mark.parametrize("name", ["calpendo.json", "pylantir-example.json",
                                  "redcap-example.json", "pylantir-redcap-example.json"])
def test_shipped_configs_validate_against_the_schema(name):
    jsonschema.validate(json.loads((ROOT / "config" / name).read_text()), json_schema())


def test_schema_refuses_an_unknown_key():
    data = json.loads((ROOT / "config" / "calpendo.json").read_text())
    data["data_sources"][0]["config"]["timzone"] = "UTC"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, json_schema())


def readme_table_keys(heading: str) -> set[str]:
    """First-column keys of the tables after `heading` up to the next heading."""
    start = README.index(heading + "\n")
    rest = README[start + len(heading):]
    end = re.search(r"\n#{2,4} ", rest)
    section = rest[: end.start()] if end else rest
    return set(re.findall(r"^\| `([A-Za-z_]+)` \|", section, flags=re.M))


def test_readme_reference_lists_the_model_keys():
    shared = keys(SourceSettings)
    assert readme_table_keys("#### Source keys") == keys(SourceBase) | {"type", "config"}
    every_type = readme_table_keys("#### `config` keys of every type")
    assert every_type == shared | keys(Units) | keys(Code)
    assert readme_table_keys('#### `config` keys of `type: "calpendo"`') == keys(
        CalpendoSettings, shared
    )
    assert readme_table_keys('#### `config` keys of `type: "file"`') == keys(FileSettings, shared)
    assert readme_table_keys('#### `config` keys of `type: "redcap"`') == keys(
        RedcapSettings, shared
    )
