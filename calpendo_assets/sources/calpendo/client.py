"""Calpendo web API client: the pooled HTTP session, retries and answer checks.

Contract (vendor docs): query API ``GET {base}/webdav/q/TYPE/EXPR[?paths=P1,P2]``
answering ``{"biskits": [...]}``; REST read ``GET {base}/webdav/b/TYPE/ID`` answering one
biskit; HTTP Basic auth. Plain Python (no Dagster import).

Errors are `calpendo_assets.sources.errors` classes with ``transient`` set. Their
messages name the URL (never credentials), status, content type, size and where an
answer went wrong, never the answer's text: it holds participant names.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any, Sequence
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from requests.auth import HTTPBasicAuth
from urllib3.exceptions import InvalidHeader
from urllib3.util.retry import Retry

from calpendo_assets.sources.base import FetchResult, get_path, records_fingerprint
from calpendo_assets.sources.calpendo.biskits import normalise_biskit, operator_name, set_dotted
from calpendo_assets.sources.calpendo.query import segment, window_expression
from calpendo_assets.sources.errors import (
    AuthRefusedError,
    BadAnswerError,
    NotFoundError,
    SourceError,
    SourceUnavailableError,
)

LOGGER_NAME = "calpendo_assets.sources.calpendo"

BOOKING_TYPE = "Calpendo.Booking"
OPERATOR_TYPE = "MRIScan"  # site-specific: config.operator_type
OPERATOR_PATH = "Operator"  # site-specific: config.operator_property

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

# Without these a booking cannot be placed or scoped: an answer lacking them is
# unreadable, not a booking that left the window (its row must not be cancelled).
REQUIRED_PATHS: tuple[tuple[str, ...], ...] = (
    ("status",),
    ("resource.name",),
    ("dateRange.start", "formattedName"),
)

RETRY_STATUSES = (429, 500, 502, 503, 504)
STRATEGIES = ("bulk", "per_booking")
DEFAULT_MAX_RETRY_AFTER = 30.0

Day = dt.date | dt.datetime  # window bounds: site-local dates or wall-clock datetimes
Statuses = str | Sequence[str] | None


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class HttpSettings:
    """HTTP behaviour of the client (from the data source's ``config``)."""

    timeout: float = 30.0  # seconds, applied to connect and to each read
    retries: int = 3  # urllib3 Retry total on 429/5xx and connection errors, GET only
    backoff_factor: float = 0.5
    max_workers: int = 5  # per-booking detail fetches in parallel
    # Longest Retry-After (seconds) we wait; a longer one fails the fetch at once.
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER

    def __post_init__(self) -> None:
        # Fail at construction, naming the field, rather than deep inside urllib3.
        if not self.timeout > 0:
            raise ValueError(f"HttpSettings.timeout must be > 0, got {self.timeout!r}")
        if self.retries < 0:
            raise ValueError(f"HttpSettings.retries must be >= 0, got {self.retries!r}")
        if self.backoff_factor < 0:
            raise ValueError(
                f"HttpSettings.backoff_factor must be >= 0, got {self.backoff_factor!r}"
            )
        if self.max_workers < 1:
            raise ValueError(f"HttpSettings.max_workers must be >= 1, got {self.max_workers!r}")
        if self.max_retry_after < 0:
            raise ValueError(
                f"HttpSettings.max_retry_after must be >= 0, got {self.max_retry_after!r}"
            )


class RetryAfterTooLong(SourceUnavailableError):
    """The server asked us to wait longer than ``max_retry_after``."""

    # Not worth a Dagster step retry: one 15 s later would ignore the server's own
    # Retry-After and hold the source's pool; the next scheduled run tries again.
    transient = False


class _CappedRetry(Retry):
    """urllib3's Retry, but a Retry-After beyond the cap fails instead of sleeping."""

    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER

    def new(self, **kw: Any) -> "_CappedRetry":
        retry = super().new(**kw)
        retry.max_retry_after = self.max_retry_after
        return retry

    def refusal(self, status: int, response: Any) -> RetryAfterTooLong | None:
        """The error for an answer whose Retry-After is beyond the cap, else None."""
        try:
            wait = self.get_retry_after(response)
        except InvalidHeader:
            return None
        if wait is None or wait <= self.max_retry_after:
            return None
        return RetryAfterTooLong(
            f"HTTP {status} with Retry-After {wait:g} s, more than "
            f"config.max_retry_after ({self.max_retry_after:g} s); not waiting"
        )

    def sleep_for_retry(self, response=None) -> bool:
        refusal = self.refusal(response.status, response) if response is not None else None
        if refusal is not None:
            raise refusal
        return super().sleep_for_retry(response)


# --------------------------------------------------------------------------- helpers


def _strip_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """Split ``https://user:pw@host/x`` into a credential-free URL and the credentials."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    clean = urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment))
    return clean, user or None, password or None


def _api_root(base_url: str) -> str:
    # Accept ".../calpendo", ".../calpendo/" and ".../calpendo/webdav" alike.
    root = base_url.strip().rstrip("/")
    if not root.endswith("/webdav"):
        root += "/webdav"
    return root


def _paths_query(paths: Sequence[str] | None) -> str:
    if not paths:
        return ""
    # Commas are legal in a query string and are what the vendor documents; keep them literal.
    return "?paths=" + ",".join(segment(p) for p in dict.fromkeys(paths))


def _describe(response: requests.Response) -> str:
    """Status, content type and size of an answer: what an error may say about it."""
    kind = response.headers.get("Content-Type") or "no content type"
    return f"HTTP {response.status_code}, {kind}, {len(response.content)} bytes"


def _json_kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


_BOOKING_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _id_problem(value: Any) -> str | None:
    """Why `value` is no booking id (a number, or a short token), else None; a missing
    id is not a problem here (such a biskit is skipped)."""
    if value in (None, ""):
        return None
    if isinstance(value, str):
        return None if _BOOKING_ID.fullmatch(value) else "is text that is not a booking id"
    if isinstance(value, int) and not isinstance(value, bool):
        return None
    if isinstance(value, float):
        return "is not a whole number"
    return f"is {_json_kind(value)}, not a number"


def _has(record: dict, path: str) -> bool:
    return get_path(record, path) not in (None, "")


def missing_fields(biskit: dict) -> list[str]:
    """The `REQUIRED_PATHS` a biskit lacks (each alternative group counts once)."""
    return [" or ".join(alts) for alts in REQUIRED_PATHS if not any(_has(biskit, p) for p in alts)]


def split_unreadable(biskits: list[dict]) -> tuple[list[dict], dict[str, str]]:
    """Biskits without an id or without the fields a booking always has are skipped.

    Skipped bookings make the fetch incomplete: nothing is cancelled on their account.
    """
    kept, skipped = [], {}
    for index, biskit in enumerate(biskits):
        if biskit.get("id") in (None, ""):
            skipped[f"#{index}"] = "biskit without an id in the answer"
            continue
        missing = missing_fields(biskit)
        if missing:
            skipped[str(biskit["id"])] = f"answer lacks {', '.join(missing)}"
        else:
            kept.append(biskit)
    return kept, skipped


# --------------------------------------------------------------------------- client


class CalpendoClient:
    """Thread-safe client over one pooled ``requests.Session`` with Basic auth and retries."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        settings: HttpSettings = HttpSettings(),
        logger: Any = None,
    ) -> None:
        clean_url, url_user, url_password = _strip_userinfo(base_url)
        # Credentials embedded in the URL are only a fallback, and never kept in any URL we show.
        self._username = username or url_user or ""
        self._password = password or url_password or ""
        self.api_root = _api_root(clean_url)
        self.settings = settings
        self.log = logger or logging.getLogger(LOGGER_NAME)
        self._session = self._make_session()
        self._count_lock = threading.Lock()
        self.request_count = 0

    def _make_session(self) -> requests.Session:
        retry = _CappedRetry(
            total=self.settings.retries,
            backoff_factor=self.settings.backoff_factor,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET"}),
            respect_retry_after_header=True,
            # Hand back the last 5xx instead of raising, so our error can name the status.
            raise_on_status=False,
        )
        retry.max_retry_after = self.settings.max_retry_after
        self._retry = retry
        pool = max(self.settings.max_workers, 10)
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=pool, max_retries=retry)
        session = requests.Session()
        session.auth = HTTPBasicAuth(self._username, self._password)
        session.headers.update({"Accept": "application/json"})
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    # -- context management -------------------------------------------------------------

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> "CalpendoClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- HTTP core -----------------------------------------------------------------------

    def _mask(self, text: str) -> str:
        """The password blanked out of a library's error text, in case it echoes one.

        The URLs we request carry no credentials, so this is a second line of defence;
        very short passwords are left alone rather than blanking letters of host names.
        """
        if len(self._password) >= 4:
            text = text.replace(self._password, "***")
        return text

    def _get_json(self, url: str) -> Any | None:
        """GET ``url`` and decode JSON. Returns None on 404; raises SourceError otherwise."""
        with self._count_lock:
            self.request_count += 1
        try:
            response = self._session.get(url, timeout=self.settings.timeout)
        except SourceError as exc:
            raise type(exc)(f"Calpendo at {url}: {exc}") from None
        except requests.RequestException as exc:
            # Connection errors, timeouts and RetryError once urllib3 gave up. The text is
            # the library's (host, port, reason), never an answer body.
            # urllib3's MaxRetryError repeats the URL; its reason is what went wrong.
            cause = getattr(exc.args[0], "reason", None) if exc.args else None
            raise SourceUnavailableError(
                f"request to {url} failed ({self.settings.retries} retries allowed): "
                f"{type(cause or exc).__name__}: {self._mask(str(cause or exc))[:400]}"
            ) from None
        status = response.status_code
        if status in (401, 403):
            raise AuthRefusedError(f"Calpendo refused the credentials (HTTP {status}) for {url}")
        if status == 404:
            return None
        if status == 429 or status >= 500:
            # Also when urllib3 had no retries left to consult the header (retries: 0).
            refusal = self._retry.refusal(status, response)
            if refusal is not None:
                raise RetryAfterTooLong(f"Calpendo at {url}: {refusal}") from None
            raise SourceUnavailableError(f"Calpendo answered {_describe(response)} for {url}")
        if status >= 400:
            raise BadAnswerError(f"Calpendo answered {_describe(response)} for {url}")
        return self._decode(url, response)

    def _decode(self, url: str, response: requests.Response) -> Any:
        try:
            return json.loads(response.content)
        except ValueError as exc:
            body = response.content.lstrip()[:1]
            if body == b"<":
                what = "an HTML page instead of JSON"
            elif isinstance(exc, json.JSONDecodeError):
                what = (
                    f"malformed JSON ({exc.msg}: line {exc.lineno} column {exc.colno}, "
                    f"byte {exc.pos})"
                )
            else:
                what = "an answer that is not UTF-8 JSON"
            raise BadAnswerError(
                f"Calpendo returned {what} for {url} ({_describe(response)})"
            ) from None

    # -- API ------------------------------------------------------------------------------

    def query_url(self, type_name: str, expression: str, paths: Sequence[str] | None = None) -> str:
        """The URL ``query`` would request (expression segments are already encoded)."""
        return f"{self.api_root}/q/{segment(type_name)}/{expression}{_paths_query(paths)}"

    def query(
        self, type_name: str, expression: str, paths: Sequence[str] | None = None
    ) -> list[dict]:
        """Run one query and return normalised biskits.

        404 (no such biskit type on this server) -> NotFoundError.
        """
        url = self.query_url(type_name, expression, paths)
        payload = self._get_json(url)
        if payload is None:
            raise NotFoundError(
                f"Calpendo answered HTTP 404 for {url} (is {type_name!r} a biskit type here?)"
            )
        if not isinstance(payload, dict) or "biskits" not in payload:
            raise BadAnswerError(
                f"Calpendo answer for {url} is {_json_kind(payload)} without a 'biskits' key"
            )
        biskits = payload["biskits"]
        if not isinstance(biskits, list):
            raise BadAnswerError(
                f"Calpendo answer for {url}: 'biskits' is {_json_kind(biskits)}, not a list"
            )
        for index, biskit in enumerate(biskits):
            if not isinstance(biskit, dict):
                raise BadAnswerError(
                    f"Calpendo answer for {url}: biskits[{index}] is {_json_kind(biskit)}, "
                    f"not an object ({len(biskits)} biskits)"
                )
        normalised = [normalise_biskit(b) for b in biskits]
        for index, biskit in enumerate(normalised):
            problem = _id_problem(biskit.get("id"))
            if problem:
                # Ids are quoted in warnings and Dagster metadata: never text that may be a name.
                raise BadAnswerError(
                    f"Calpendo answer for {url}: biskits[{index}].id {problem} "
                    f"({len(biskits)} biskits)"
                )
        return normalised

    def get(self, type_name: str, biskit_id: Any) -> dict | None:
        """One biskit by id (``webdav/b/TYPE/ID``), normalised; None when the server says 404."""
        url = f"{self.api_root}/b/{segment(type_name)}/{segment(str(biskit_id))}"
        payload = self._get_json(url)
        if payload is None:
            return None
        # Liberal: a detail answer wrapped like a query result is unwrapped.
        if isinstance(payload, dict) and isinstance(payload.get("biskits"), list):
            if len(payload["biskits"]) == 1:
                payload = payload["biskits"][0]
        if not isinstance(payload, dict) or isinstance(payload.get("biskits"), list):
            raise BadAnswerError(
                f"Calpendo answer for {url} is {_json_kind(payload)}, not one biskit object"
            )
        return normalise_biskit(payload)

    def list_window(
        self,
        start: Day, end: Day, statuses: Statuses,
        paths: Sequence[str] | None = None,
        type_name: str = BOOKING_TYPE,
        status_case: str = "upper",
    ) -> list[dict]:
        """Bookings of ``type_name`` starting in ``[start, end)`` with one of ``statuses``."""
        expression = window_expression(start, end, statuses, status_case)
        return self.query(type_name, expression, paths)

    def get_details(self, ids: Sequence[Any]) -> tuple[list[dict], dict[str, str]]:
        """Fetch ``webdav/b/Calpendo.Booking/{id}`` for each id, ``max_workers`` at a time.

        Keeps input order (duplicates fetched once). A 404 skips that booking with a warning;
        any other error cancels the pending fetches and is raised.
        """
        unique = list(dict.fromkeys(ids))
        if not unique:
            return [], {}
        workers = min(self.settings.max_workers, len(unique))
        with ThreadPoolExecutor(workers, thread_name_prefix="calpendo-detail") as pool:
            futures = [pool.submit(self.get, BOOKING_TYPE, i) for i in unique]
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
                self.log.warning(f"Calpendo booking {booking_id} skipped: {reason}")
            else:
                details.append(biskit)
        return details, skipped

    def subtype_values(
        self,
        start: Day, end: Day, statuses: Statuses,
        type_name: str,
        paths: Sequence[str],
        status_case: str = "upper",
    ) -> dict[str, dict]:
        """``{booking id: subtype biskit}`` with ``paths`` for the window's bookings of the
        subtype ``type_name`` (properties that exist on that subtype only).

        One query on the subtype. A server without that subtype (404) yields {} and a warning.
        """
        try:
            scans = self.list_window(
                start, end, statuses, paths=("id", *paths), type_name=type_name,
                status_case=status_case,
            )
        except NotFoundError as exc:
            self.log.warning(f"No {type_name} properties ({', '.join(paths)}): {exc}")
            return {}
        return {str(scan["id"]): scan for scan in scans if scan.get("id") is not None}

    def operators(
        self,
        start: Day, end: Day, statuses: Statuses,
        type_name: str = OPERATOR_TYPE,
        prop: str = OPERATOR_PATH,
        status_case: str = "upper",
    ) -> dict[str, str]:
        """``{booking id: operator display name}`` for bookings of subtype ``type_name``."""
        scans = self.subtype_values(start, end, statuses, type_name, (prop,), status_case)
        names = {}
        for booking_id, scan in scans.items():
            name = operator_name(get_path(scan, prop))
            if name is not None:
                names[booking_id] = name
        return names

    def list_bookings(
        self,
        start: Day, end: Day, statuses: Statuses,
        strategy: str = "bulk",
        extra_paths: Sequence[str] = (),
        status_case: str = "upper",
    ) -> FetchResult:
        """Step 1 of a fetch: the window query.

        ``bulk``: one query returning every field the sync needs.
        ``per_booking``: one query returning only the ids (details come in step 2).
        """
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown fetch strategy {strategy!r}; expected one of {STRATEGIES}")
        paths = (*BOOKING_PATHS, *extra_paths) if strategy == "bulk" else ("id",)
        before = self.request_count
        listed = self.list_window(start, end, statuses, paths=paths, status_case=status_case)
        bookings, skipped = [], {}
        for index, biskit in enumerate(listed):
            if biskit.get("id") in (None, ""):
                skipped[f"#{index}"] = "biskit without an id in the answer"
            else:
                bookings.append(biskit)
        return FetchResult(bookings, skipped, not skipped, self.request_count - before, strategy)

    def complete_bookings(
        self,
        listing: FetchResult,
        start: Day, end: Day, statuses: Statuses,
        operator: tuple[str, str] | None = (OPERATOR_TYPE, OPERATOR_PATH),
        status_case: str = "upper",
        subtypes: Mapping[str, Sequence[str]] | None = None,
    ) -> FetchResult:
        """Step 2 of a fetch: per-booking details (that strategy only) and the operators.

        ``operator`` is (subtype, property) of the operator, None for none; the
        booking's property of that name becomes a display string. ``subtypes`` maps a
        subtype to paths that exist on it only (site custom properties): one query per
        subtype adds them to its bookings. These queries are skipped when the window
        holds no bookings. Bookings whose answer lacks the fields every booking has are
        skipped, which makes the fetch incomplete.
        """
        before = self.request_count
        bookings, skipped = listing.bookings, dict(listing.skipped)
        if listing.strategy == "per_booking":
            bookings, not_found = self.get_details([b["id"] for b in bookings])
            skipped.update(not_found)
        else:
            bookings = [dict(b) for b in bookings]  # the listing stays as fetched
        bookings, unreadable = split_unreadable(bookings)
        skipped.update(unreadable)
        if unreadable:
            self.log.warning(
                f"Calpendo answer lacks required fields for {len(unreadable)} bookings "
                f"(e.g. booking {next(iter(unreadable))}: {next(iter(unreadable.values()))}); "
                "the fetch counts as incomplete and cancels nothing"
            )
        if operator is not None:
            type_name, prop = operator
            ops = (
                self.operators(start, end, statuses, type_name, prop, status_case)
                if bookings
                else {}
            )
            for booking in bookings:
                _attach_operator(booking, ops, prop)
        for type_name, paths in (subtypes or {}).items() if bookings else ():
            values = self.subtype_values(start, end, statuses, type_name, paths, status_case)
            for booking in bookings:
                scan = values.get(str(booking["id"]))
                for path in paths if scan is not None else ():
                    value = get_path(scan, path)
                    if value is not None:
                        set_dotted(booking, path, value)
        result = FetchResult(
            bookings=bookings,
            skipped=skipped,
            complete=listing.complete and not skipped,
            requests=listing.requests + self.request_count - before,
            strategy=listing.strategy,
        )
        self.log.info(
            f"Calpendo {result.strategy} fetch: {len(bookings)} bookings, {len(skipped)} skipped, "
            f"{result.requests} requests"
        )
        return result

    def fingerprint(
        self,
        start: Day, end: Day, statuses: Statuses,
        status_case: str = "upper",
    ) -> str:
        """sha256 of the window's essential content: one small query, order-independent."""
        biskits = self.list_window(
            start, end, statuses, paths=FINGERPRINT_PATHS, status_case=status_case
        )
        return records_fingerprint(biskits)


def _attach_operator(booking: dict, operators: dict[str, str], prop: str) -> None:
    # The subtype query wins; otherwise keep an operator the detail answer already carried.
    name = operators.get(str(booking["id"])) or operator_name(booking.get(prop))
    if name is None:
        booking.pop(prop, None)
    else:
        booking[prop] = name
