"""One window's fetch from Calpendo: which requests, in which order, and what they add up to.

Step 1 (`WindowFetch.listing`) is the window query: every field a sync needs in one
bulk query with ``?paths=``, or only the ids (``per_booking``). Step 2
(`WindowFetch.complete`) fetches each booking's details (that strategy only), drops
answers without the fields every booking has (the fetch is then incomplete), and
adds the operator and site custom properties from one query per booking subtype.
The window, statuses and their spelling are one `WindowQuery`, built once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from calpendo_assets.core.errors import NotFoundError
from calpendo_assets.core.records import get_path, records_fingerprint, set_dotted
from calpendo_assets.sources.base import FetchResult
from calpendo_assets.sources.calpendo.biskits import operator_name, split_unreadable
from calpendo_assets.sources.calpendo.http import CalpendoHttp
from calpendo_assets.sources.calpendo.query import WindowQuery

LOGGER_NAME = "calpendo_assets.sources.calpendo"

BOOKING_TYPE = "Calpendo.Booking"
OPERATOR_TYPE = "MRIScan"  # site-specific: config.operator_type
OPERATOR_PATH = "Operator"  # site-specific: config.operator_property
STRATEGIES = ("bulk", "per_booking")

# Every field a sync needs, fetched in one bulk query with ?paths=.
BOOKING_PATHS: tuple[str, ...] = (
    "id",
    "biskitType",
    "title",
    "status",
    "formattedName",
    "dateRange.start",
    "dateRange.finish",
    "resource.name",
    "resource.id",
    "resource.formattedName",
    "project.name",
    "project.formattedName",
    "durationInMinutes",
    "created",
    "modified",
    "booker.name",
    "owner.name",
    "cancelled",
    "cancellationReason",
)

# What a sensor needs to notice that the window changed; small so polling stays cheap.
FINGERPRINT_PATHS: tuple[str, ...] = (
    "id",
    "modified",
    "status",
    "dateRange.start",
    "dateRange.finish",
    "title",
    "resource.name",
)


@dataclass(frozen=True)
class FetchPlan:
    """What the fetch of one source asks for beyond the window (from its config)."""

    strategy: str = "bulk"
    extra_paths: tuple[str, ...] = ()  # mapped paths beyond BOOKING_PATHS
    operator: tuple[str, str] | None = (OPERATOR_TYPE, OPERATOR_PATH)  # (subtype, property)
    subtypes: Mapping[str, Sequence[str]] = field(default_factory=dict)  # subtype -> own paths


def get_details(
    http: CalpendoHttp, ids: Sequence[Any], log: Any = None
) -> tuple[list[dict], dict[str, str]]:
    """Fetch ``webdav/b/Calpendo.Booking/{id}`` for each id, ``max_workers`` at a time.

    Keeps input order (duplicates fetched once). A 404 skips that booking with a warning;
    any other error cancels the pending fetches and is raised.
    """
    log = log or logging.getLogger(LOGGER_NAME)
    unique = list(dict.fromkeys(ids))
    if not unique:
        return [], {}
    workers = min(http.settings.max_workers, len(unique))
    with ThreadPoolExecutor(workers, thread_name_prefix="calpendo-detail") as pool:
        futures = [pool.submit(http.get, BOOKING_TYPE, i) for i in unique]
        try:
            results = [f.result() for f in futures]
        except BaseException:
            for future in futures:  # do not keep fetching for a sync that already failed
                future.cancel()
            raise
    details, skipped = [], {}
    for booking_id, biskit in zip(unique, results):
        if biskit is None:
            reason = "HTTP 404 on detail fetch (deleted since it was listed?)"
            skipped[str(booking_id)] = reason
            log.warning(f"Calpendo booking {booking_id} skipped: {reason}")
        else:
            details.append(biskit)
    return details, skipped


def _attach_operator(booking: dict, operators: dict[str, str], prop: str) -> None:
    # The subtype query wins; otherwise keep an operator the detail answer already carried.
    name = operators.get(str(booking["id"])) or operator_name(booking.get(prop))
    if name is None:
        booking.pop(prop, None)
    else:
        booking[prop] = name


class WindowFetch:
    """The requests of one window's fetch over one HTTP session; every query asks
    for the same window (`query`)."""

    def __init__(self, http: CalpendoHttp, query: WindowQuery, logger: Any = None) -> None:
        self.http = http
        self.query = query
        self.log = logger or logging.getLogger(LOGGER_NAME)

    def bookings(
        self, paths: Sequence[str] | None = None, type_name: str = BOOKING_TYPE
    ) -> list[dict]:
        """The window's bookings of ``type_name`` with ``paths``."""
        return self.http.query(type_name, self.query.expression, paths)

    def listing(self, strategy: str = "bulk", extra_paths: Sequence[str] = ()) -> FetchResult:
        """Step 1 of a fetch: the window query.

        ``bulk``: one query returning every field the sync needs.
        ``per_booking``: one query returning only the ids (details come in step 2).
        """
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown fetch strategy {strategy!r}; expected one of {STRATEGIES}")
        paths = (*BOOKING_PATHS, *extra_paths) if strategy == "bulk" else ("id",)
        before = self.http.request_count
        bookings, skipped = [], {}
        for index, biskit in enumerate(self.bookings(paths)):
            if biskit.get("id") in (None, ""):
                skipped[f"#{index}"] = "biskit without an id in the answer"
            else:
                bookings.append(biskit)
        requests = self.http.request_count - before
        return FetchResult(bookings, skipped, not skipped, requests, strategy)

    def subtype_values(self, type_name: str, paths: Sequence[str]) -> dict[str, dict]:
        """``{booking id: subtype biskit}`` with ``paths`` for the window's bookings of the
        subtype ``type_name`` (properties that exist on that subtype only).

        One query on the subtype. A server without that subtype (404) yields {} and a warning.
        """
        try:
            scans = self.bookings(("id", *paths), type_name)
        except NotFoundError as exc:
            self.log.warning(f"No {type_name} properties ({', '.join(paths)}): {exc}")
            return {}
        return {str(scan["id"]): scan for scan in scans if scan.get("id") is not None}

    def operators(
        self, type_name: str = OPERATOR_TYPE, prop: str = OPERATOR_PATH
    ) -> dict[str, str]:
        """``{booking id: operator display name}`` for bookings of subtype ``type_name``."""
        names = {}
        for booking_id, scan in self.subtype_values(type_name, (prop,)).items():
            name = operator_name(get_path(scan, prop))
            if name is not None:
                names[booking_id] = name
        return names

    def complete(self, listing: FetchResult, plan: FetchPlan = FetchPlan()) -> FetchResult:
        """Step 2 of a fetch: per-booking details (that strategy only) and the operators.

        The booking's property of the operator becomes a display string; each subtype
        of ``plan.subtypes`` adds its own paths to its bookings. These queries are
        skipped when the window holds no bookings. Bookings whose answer lacks the
        fields every booking has are skipped, which makes the fetch incomplete.
        """
        before = self.http.request_count
        bookings, skipped = self._readable(listing)
        if bookings and plan.operator is not None:
            type_name, prop = plan.operator
            operators = self.operators(type_name, prop)
            for booking in bookings:
                _attach_operator(booking, operators, prop)
        for type_name, paths in plan.subtypes.items() if bookings else ():
            self._attach_subtype(bookings, type_name, paths)
        result = FetchResult(
            bookings=bookings,
            skipped=skipped,
            complete=listing.complete and not skipped,
            requests=listing.requests + self.http.request_count - before,
            strategy=listing.strategy,
        )
        self.log.info(
            f"Calpendo {result.strategy} fetch: {len(bookings)} bookings, {len(skipped)} skipped, "
            f"{result.requests} requests"
        )
        return result

    def _readable(self, listing: FetchResult) -> tuple[list[dict], dict[str, str]]:
        """The listing's bookings with every field (details fetched for ``per_booking``),
        and what was skipped: ids a detail request did not find, unreadable answers."""
        skipped = dict(listing.skipped)
        if listing.strategy == "per_booking":
            ids = [b["id"] for b in listing.bookings]
            bookings, not_found = get_details(self.http, ids, self.log)
            skipped.update(not_found)
        else:
            bookings = [dict(b) for b in listing.bookings]  # the listing stays as fetched
        bookings, unreadable = split_unreadable(bookings)
        skipped.update(unreadable)
        if unreadable:
            self.log.warning(
                f"Calpendo answer lacks required fields for {len(unreadable)} bookings "
                f"(e.g. booking {next(iter(unreadable))}: {next(iter(unreadable.values()))}); "
                "the fetch counts as incomplete and cancels nothing"
            )
        return bookings, skipped

    def _attach_subtype(self, bookings: list[dict], type_name: str, paths: Sequence[str]) -> None:
        values = self.subtype_values(type_name, paths)
        for booking in bookings:
            scan = values.get(str(booking["id"]))
            for path in paths if scan is not None else ():
                value = get_path(scan, path)
                if value is not None:
                    set_dotted(booking, path, value)

    def fingerprint(self) -> str:
        """sha256 of the window's essential content: one small query, order-independent."""
        return records_fingerprint(self.bookings(FINGERPRINT_PATHS))

    def run(self, plan: FetchPlan) -> FetchResult:
        """The whole fetch: `listing`, then `complete`."""
        return self.complete(self.listing(plan.strategy, plan.extra_paths), plan)
