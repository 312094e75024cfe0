"""Reading the config file: its path, validation, and the loaded `DataSource` list.

The file is JSON, its path from env ``CALPENDO_MWL_CONFIG`` (default
``config/calpendo.json`` relative to the current directory), in the seed's format::

    {"data_sources": [
      {"name": "mri3t", "type": "calpendo", "enabled": true, "sync_interval": 300,
       "operation_interval": {"start_time": [6, 0], "end_time": [22, 0]},
       "config": {"base_url": "http://127.0.0.1:8089", "resources": ["3T MRI"], ...},
       "field_mapping": {"title": {"_extract": {...}}, "project.name": "study_description"}}
    ]}

Everything is validated before any request is made; a `ConfigError` names the file,
the data source and the dotted key at fault (``data source 'mri3t': config.timezone:
unknown time zone 'Mars/Base'``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from calpendo_assets.config.mapping import FieldMapping, compile_mapping, default_field_mapping
from calpendo_assets.config.messages import config_error
from calpendo_assets.config.models import SourceBase, file_model
from calpendo_assets.core.errors import ConfigError
from calpendo_assets.core.records import json_document
from calpendo_assets.core.source import DataSource
from mwl_service.schema import MANUAL_SOURCE

log = logging.getLogger(__name__)

CONFIG_ENV = "CALPENDO_MWL_CONFIG"
DEFAULT_CONFIG_PATH = Path("config") / "calpendo.json"

# (file, content digest), note: what load_config has logged in this process.
_LOGGED_NOTES: set[tuple[tuple[str, str], str]] = set()


def config_path(path: str | os.PathLike | None = None, env: Mapping[str, str] = os.environ) -> Path:
    """Explicit path, else `CALPENDO_MWL_CONFIG`, else ``config/calpendo.json``."""
    if path:
        return Path(path)
    from_env = (env.get(CONFIG_ENV) or "").strip()
    return Path(from_env) if from_env else DEFAULT_CONFIG_PATH


def data_source(model: SourceBase) -> DataSource:
    """The loaded form of one validated ``data_sources`` entry."""
    label = f"data source {model.name!r}"
    settings = model.config  # type: ignore[attr-defined]
    rules = settings.mapping_rules()
    written = model.field_mapping
    if written is None:
        written = default_field_mapping() if rules.default is None else (
            FieldMapping.model_validate(rules.default))
    mapping, notes = compile_mapping(label, written, rules)
    return DataSource(
        name=model.name,
        type=model.type,  # type: ignore[attr-defined]
        settings=settings,
        mapping=mapping,
        enabled=model.enabled,
        sync_interval=model.sync_interval,
        operation_interval=model.operation_interval,
        notes=notes + tuple(f"{label}: {note}" for note in settings.notes()),
    )


def parse_config(
    data: Any, env: Mapping[str, str] = os.environ, base_dir: Path | None = None
) -> list[DataSource]:
    """Validate an already-parsed config document; every source, enabled or not.

    `base_dir` is where relative paths in the config (a file source's ``path``) start:
    the config file's directory when loaded from a file.
    """
    context = {"env": env, "base_dir": base_dir or Path.cwd()}
    try:
        # JSON mode: JSON's own types, so "300" is no count and [6, 0] is a clock.
        document = file_model().model_validate_json(json.dumps(data), context=context)
    except ValidationError as exc:
        raise config_error(exc, data) from None
    sources: list[DataSource] = []
    seen: set[str] = set()
    for model in document.data_sources:
        source = data_source(model)
        if source.name in seen:
            raise ConfigError(f"data source {source.name!r}: name: duplicate data source name")
        if source.name.casefold() == MANUAL_SOURCE:
            raise ConfigError(
                f"data source {source.name!r}: name: reserved for the worklist's manual items "
                "(walk-ins made over mwl-api); choose another name"
            )
        seen.add(source.name)
        sources.append(source)
    return sources


def _read(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {str(file)!r} not found (set {CONFIG_ENV} to the data-source config)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"config file {str(file)!r}: cannot read: {exc.strerror}") from None


def _log_notes(file: Path, text: str, sources: Iterable[DataSource]) -> None:
    """Config warnings, once per process for a file as it is: Dagster loads the code
    location several times."""
    seen = (str(file.resolve()), hashlib.sha256(text.encode()).hexdigest())
    for source in sources:
        for note in source.notes:
            if (seen, note) not in _LOGGED_NOTES:
                _LOGGED_NOTES.add((seen, note))
                log.warning(f"config file {str(file)!r}: {note}")


def load_config(path: str | None = None, env: Mapping[str, str] = os.environ) -> list[DataSource]:
    """Read and validate the config file; all sources (enabled and not).

    Config warnings (Pylantir keys given their meaning here) are logged once per
    process for a file as it is.
    """
    file = config_path(path, env)
    text = _read(file)
    data = json_document(text, f"config file {str(file)!r}", ConfigError)
    try:
        sources = parse_config(data, env, base_dir=file.resolve().parent)
    except ConfigError as exc:
        raise ConfigError(f"config file {str(file)!r}: {exc}") from None
    _log_notes(file, text, sources)
    return sources


def forget_logged_notes() -> None:
    """Log every config note again at the next load (tests that read the log)."""
    _LOGGED_NOTES.clear()


def enabled_sources(sources: Iterable[DataSource]) -> list[DataSource]:
    return [s for s in sources if s.enabled]
