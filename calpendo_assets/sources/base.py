"""The plugin seam: what every source type provides and what it hands back.

A plugin turns "the bookings of this window" into plain records: nested dicts read
with dotted paths (`get_path`), one per booking, each with an ``id``. Everything
after that (mapping, checks, reconciliation, publishing, the Dagster assets,
schedule and sensor) is shared by every type. See docs/architecture.md.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from calpendo_assets.config import DataSource, SourceSettings, Window


@dataclass(frozen=True)
class Credentials:
    """A user name and password; the password never shows in repr or logs."""

    username: str
    password: str = field(repr=False)


@dataclass
class FetchResult:
    """One fetch of a window: its records and whether the window is complete."""

    bookings: list[dict]  # plain records, nested dicts
    skipped: dict[str, str] = field(default_factory=dict)  # record id -> reason
    complete: bool = True  # False: the window may be missing bookings, cancel nothing
    requests: int = 0  # logical requests made (HTTP, or file reads)
    strategy: str = "bulk"


class SourcePlugin:
    """A source type. Subclass it, set the class attributes, implement the methods, and
    list an instance in `calpendo_assets.sources.registry.PLUGINS`."""

    #: the config's ``type`` value.
    type: str
    #: pydantic model of the source's ``config`` object; subclasses `SourceSettings`.
    config_model: type["SourceSettings"]
    #: whether fetching needs CALPENDO_USERNAME/CALPENDO_PASSWORD.
    needs_credentials: bool = False

    def validate_config(self, raw: dict, context: dict | None = None) -> "SourceSettings":
        """The ``config`` object validated by `config_model` (ValidationError if not)."""
        return self.config_model.model_validate_json(json.dumps(raw), context=context or {})

    def fetch_entries(
        self, source: "DataSource", window: "Window", credentials: Credentials | None, logger: Any
    ) -> FetchResult:
        """Every booking of the window as a plain record, and whether that is all of them."""
        raise NotImplementedError

    def fingerprint(self, source: "DataSource", window: "Window", *args: Any) -> str:
        """A cheap digest of the window that changes when its bookings change (arguments as
        `fetch_entries`). By default the digest of the whole fetch: override it when a
        smaller request can tell."""
        return records_fingerprint(self.fetch_entries(source, window, *args).bookings)

    def probe(self, source: "DataSource", credentials: Credentials | None) -> str:
        """One cheap request proving the source is reachable (and the credentials work).

        Returns a short description for `calpendo-mwl check`; raises SourceError.
        """
        raise NotImplementedError


def get_path(record: dict, dotted: str, default: Any = None) -> Any:
    """``get_path(b, "resource.name")``; also finds a literal dotted key in un-normalised data."""
    node: Any = record
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return record.get(dotted, default) if isinstance(record, dict) else default
        node = node[part]
    return node


def records_fingerprint(records: list[dict]) -> str:
    """sha256 of records, order-independent: what a sensor compares between ticks."""
    canonical = sorted(
        json.dumps(r, sort_keys=True, separators=(",", ":"), default=str) for r in records
    )
    return hashlib.sha256("\n".join(canonical).encode("utf-8")).hexdigest()


def site_local(instant: dt.datetime) -> dt.datetime:
    """An aware window bound as site wall-clock time without a zone (what sources compare)."""
    return instant.replace(tzinfo=None)
