"""The model of the config file, assembled from the registered source types.

The models are the reference: `config/calpendo-mwl.schema.json` is generated from
them (`python -m calpendo_assets.config --schema`) and the README's configuration
reference lists the same keys. Each source type (`calpendo_assets.sources.registry`)
brings the model of its ``config`` object, a subclass of `SourceSettings` (the keys
every type shares). Unknown keys are errors, so a typo is never silently ignored.
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, StringConstraints, Tag
from pydantic import create_model, field_validator

from calpendo_assets.config.mapping import FieldMapping
from calpendo_assets.core.settings import OperationInterval
from calpendo_assets.core.source import DEFAULT_SYNC_INTERVAL
from calpendo_assets.core.types import Model
from calpendo_assets.sources.registry import PLUGINS

MIN_SYNC_INTERVAL = 60
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SourceBase(Model):
    """One entry of ``data_sources``; ``type`` picks the plugin and its ``config`` model."""

    name: Annotated[str, StringConstraints(min_length=1)] = Field(
        description="letters, digits and _; prefixes the Dagster asset keys"
    )
    enabled: bool = True
    sync_interval: Annotated[int, Field(ge=MIN_SYNC_INTERVAL)] = Field(
        DEFAULT_SYNC_INTERVAL, description="seconds between scheduled syncs"
    )
    operation_interval: OperationInterval | None = None
    field_mapping: FieldMapping | None = Field(
        None, description="absent: the default mapping (title -> patient ID and name, ...)"
    )

    @field_validator("name")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not NAME_PATTERN.fullmatch(value):
            raise ValueError(
                f"{value!r} cannot prefix Dagster asset keys (letters, digits and _, "
                "not starting with a digit)"
            )
        return value


def _source_kind(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else None
    return f"<{kind}>" if isinstance(kind, str) else None


@functools.cache
def file_model() -> type[BaseModel]:
    """The model of the whole file, built from the registered source types."""
    members = []
    for type_name, plugin in PLUGINS.items():
        model = create_model(
            f"{plugin.config_model.__name__.removesuffix('Settings')}Source",
            __base__=SourceBase,
            __doc__=f"A data source of type {type_name!r}.",
            type=(Literal[type_name], ...),
            config=(plugin.config_model, ...),
        )
        members.append(Annotated[model, Tag(f"<{type_name}>")])
    source = Annotated[Union[tuple(members)], Discriminator(_source_kind)]

    class ConfigFile(Model):
        """The calpendo-mwl data-source config file (CALPENDO_MWL_CONFIG)."""

        model_config = ConfigDict(title="calpendo-mwl configuration")
        data_sources: list[source]  # type: ignore[valid-type]

    return ConfigFile


def json_schema() -> dict:
    """The JSON Schema shipped as config/calpendo-mwl.schema.json."""
    schema = file_model().model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
