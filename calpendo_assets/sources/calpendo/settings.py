"""The ``config`` object of a ``type: "calpendo"`` source."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from calpendo_assets.core.credentials import PASSWORD_ENV, USERNAME_ENV
from calpendo_assets.core.settings import SourceSettings
from calpendo_assets.core.types import Count, Names, NonNegative, Positive, Text, server_url
from calpendo_assets.sources.calpendo.fetch import OPERATOR_PATH, OPERATOR_TYPE
from calpendo_assets.sources.calpendo.http import DEFAULT_MAX_RETRY_AFTER, HttpSettings
from calpendo_assets.sources.calpendo.query import STATUS_CASES, unique_folded

URL_ENV = "CALPENDO_API_URL"


def _statuses(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise ValueError("must name at least one status")
    # Compared case-insensitively; kept as spelled for status_case "as_given".
    return unique_folded(value)


class CalpendoSettings(SourceSettings):
    """Settings of a Calpendo source: the server, the query and the HTTP behaviour."""

    base_url: str | None = Field(
        None,
        validate_default=True,
        description=f"the Calpendo server; absent: env {URL_ENV} (the config wins)",
    )
    status_filter: Annotated[Names, AfterValidator(_statuses)] = Field(
        ("APPROVED",), description="booking statuses that are scheduled (any case)"
    )
    status_case: Literal[tuple(STATUS_CASES)] = Field(  # type: ignore[valid-type]
        "upper", description="case the server compares status values in"
    )
    lookback_multiplier: Positive | None = Field(
        None,
        description="Pylantir's look-back (sync_interval x multiplier); accepted and not "
        "used: past_days/future_days give the window in whole days",
    )
    fetch_strategy: Literal["bulk", "per_booking"] = Field(
        "bulk", description="bulk: one query with ?paths=; per_booking: ids, then each booking"
    )
    timeout: Positive = Field(30, description="seconds per connect and per read")
    retries: Count = Field(3, description="retries of a GET on errors, 429 and 5xx")
    backoff_factor: NonNegative = Field(0.5, description="seconds, doubled per retry")
    max_workers: Annotated[int, Field(ge=1)] = Field(5, description="parallel detail fetches")
    max_retry_after: NonNegative = Field(
        DEFAULT_MAX_RETRY_AFTER,
        description="longest Retry-After (seconds) honoured; a longer one fails the fetch",
    )
    operator_type: Text | None = Field(
        OPERATOR_TYPE, description="booking subtype carrying the operator; null: none"
    )
    operator_property: Text = Field(
        OPERATOR_PATH, description="property of that subtype holding the operator"
    )
    subtype_properties: dict[Text, Names] = Field(
        default_factory=dict,
        description="booking subtype -> its own properties (site custom fields such as "
        "weight) the mapping reads: one query per subtype fetches them",
    )

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None, info: ValidationInfo) -> str:
        return server_url(value, info.context, URL_ENV,
                          f"use {USERNAME_ENV}/{PASSWORD_ENV}").rstrip("/")

    def scheduled_statuses(self) -> tuple[str, ...]:
        return tuple(s.upper() for s in self.status_filter)

    def http(self, retries: int | None = None) -> HttpSettings:
        """The HTTP behaviour these settings give; `retries` overrides ``retries``."""
        return HttpSettings(
            timeout=self.timeout,
            retries=self.retries if retries is None else retries,
            backoff_factor=self.backoff_factor,
            max_workers=self.max_workers,
            max_retry_after=self.max_retry_after,
        )

    def notes(self) -> tuple[str, ...]:
        if self.lookback_multiplier is None:
            return ()
        return (
            "config.lookback_multiplier is accepted and not used: the sync fetches whole "
            f"days (past_days={self.past_days}, future_days={self.future_days}), which "
            "already covers any look-back",
        )
