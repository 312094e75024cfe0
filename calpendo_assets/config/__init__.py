"""The config file: its models (assembled from the source registry), loading, and
error messages an operator can act on.

`load_config` is what the code location, the CLI, the demo and the benchmarks call.
"""

from calpendo_assets.config.load import (
    CONFIG_ENV,
    config_path,
    enabled_sources,
    load_config,
    parse_config,
)
from calpendo_assets.config.models import json_schema

__all__ = [
    "CONFIG_ENV", "config_path", "enabled_sources", "json_schema", "load_config", "parse_config",
]
