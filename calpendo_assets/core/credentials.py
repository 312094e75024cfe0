"""Credentials from the environment: a user name and password, API tokens; never shown."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from calpendo_assets.core.errors import ConfigError
from calpendo_assets.core.source import DataSource

USERNAME_ENV = "CALPENDO_USERNAME"
PASSWORD_ENV = "CALPENDO_PASSWORD"


@dataclass(frozen=True)
class Credentials:
    """A user name and password (HTTP Basic, Calpendo), and API tokens by the name of
    the environment variable that holds each (REDCap's ``config.token_env``); the
    password and the tokens never show in repr or logs."""

    username: str = ""
    password: str = field(default="", repr=False)
    tokens: Mapping[str, str] = field(default_factory=dict, repr=False)


def env_credentials(source: DataSource, env: Mapping[str, str] = os.environ) -> Credentials:
    """CALPENDO_USERNAME / CALPENDO_PASSWORD for `source`; a ConfigError names the
    variable that is not set, never a value."""
    user = env.get(USERNAME_ENV) or ""
    password = env.get(PASSWORD_ENV) or ""
    for var, value in ((USERNAME_ENV, user), (PASSWORD_ENV, password)):
        if not value.strip():
            raise ConfigError(
                f"data source {source.name!r}: credentials: environment variable {var} is not set"
            )
    return Credentials(user, password)
