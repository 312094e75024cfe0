"""The plugin seam: what every source type provides and what it hands back.

A source type is a `SourcePlugin` listed in `calpendo_assets.sources.registry`. It
brings the pydantic model of its ``config`` object (a subclass of
`calpendo_assets.core.settings.SourceSettings`, so the shared keys come for free)
and turns "the bookings of this window" into plain records: nested dicts read with
dotted paths (`calpendo_assets.core.records.get_path`), one per booking, each with
an ``id``. Everything after that (mapping, checks, reconciliation, publishing, the
Dagster assets, schedule and sensor) is shared by every type.

What a record should carry for the shared mapping step, and the one rule a plugin
must get right (`FetchResult.complete`), are in docs/architecture.md, "The plugin
seam".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from calpendo_assets.core.credentials import Credentials
from calpendo_assets.core.records import records_fingerprint
from calpendo_assets.core.settings import SourceSettings
from calpendo_assets.core.source import DataSource
from calpendo_assets.core.window import Window


@dataclass
class FetchResult:
    """One fetch of a window: its records and whether the window is complete."""

    bookings: list[dict]  # plain records, nested dicts, each with an "id"
    skipped: dict[str, str] = field(default_factory=dict)  # record id -> reason (no content)
    complete: bool = True  # False: the window may be missing bookings, cancel nothing
    requests: int = 0  # logical requests made (HTTP, or file reads)
    strategy: str = "bulk"  # how it fetched, for the run's metadata


SettingsT = TypeVar("SettingsT", bound=SourceSettings)


class SourcePlugin(Generic[SettingsT]):
    """A source type. Subclass it (``SourcePlugin[MySettings]``), set the class
    attributes, implement `fetch_entries` and `probe`, and list an instance in
    `calpendo_assets.sources.registry.PLUGINS`.

    Every method takes the loaded `DataSource`; `settings` gives its ``config`` as
    this type's model. ``logger`` is a `logging.Logger`-like object: Dagster's run
    log inside a run, else a logger whose lines name the source. ``credentials`` are
    what the Dagster resource holds (CALPENDO_USERNAME / CALPENDO_PASSWORD), or None
    when it holds none; a type with another secret (a token) reads it from the
    environment variable its config names.
    """

    #: the config's ``type`` value.
    type: ClassVar[str]
    #: pydantic model of the source's ``config`` object.
    config_model: type[SettingsT]
    #: whether fetching needs CALPENDO_USERNAME/CALPENDO_PASSWORD.
    needs_credentials: ClassVar[bool] = False
    #: how an operator names the source's server in messages ("Calpendo", "REDCap").
    label: ClassVar[str] = "the source"

    def settings(self, source: DataSource) -> SettingsT:
        """``source.settings`` as this type's model."""
        if not isinstance(source.settings, self.config_model):
            raise TypeError(
                f"data source {source.name!r} is of type {source.type!r}, not {self.type!r}"
            )
        return source.settings

    def secret_env(self, source: DataSource) -> tuple[str, ...]:
        """Names of the environment variables holding this source's own secrets (API
        tokens): the Dagster resource reads them at run time into
        ``credentials.tokens``, and ``calpendo-mwl check`` says whether they are set."""
        return ()

    def validate_config(self, raw: dict, context: dict | None = None) -> SettingsT:
        """The ``config`` object validated by `config_model` (ValidationError if not)."""
        return self.config_model.model_validate_json(json.dumps(raw), context=context or {})

    def fetch_entries(
        self, source: DataSource, window: Window, credentials: Credentials | None, logger: Any
    ) -> FetchResult:
        """Every booking of the window as a plain record, and whether that is all of them.

        Raise a `calpendo_assets.core.errors.SourceError` when the fetch fails.
        """
        raise NotImplementedError

    def fingerprint(
        self, source: DataSource, window: Window, credentials: Credentials | None, logger: Any
    ) -> str:
        """A cheap digest of the window that changes when its bookings change. By default
        the digest of the whole fetch: override it when a smaller request can tell."""
        return records_fingerprint(self.fetch_entries(source, window, credentials, logger).bookings)

    def probe(self, source: DataSource, credentials: Credentials | None) -> str:
        """One cheap request proving the source is reachable (and the credentials work).

        Returns a short description for `calpendo-mwl check`; raises SourceError.
        """
        raise NotImplementedError
