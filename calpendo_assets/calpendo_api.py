"""Calpendo web API client: query grammar, response normalisation and the HTTP session.

Plain Python (no Dagster import) so it can be tested and benchmarked on its own.

Calpendo contract (vendor docs, see DESIGN.md "Calpendo API facts"):

* query API ``GET {base}/webdav/q/TYPE/EXPR[?paths=P1,P2]`` answering ``{"biskits": [...]}``;
  ``EXPR := BOOLOP/EXPR/.../CLOSE | PATH/RELATION/VALUE``;
* REST read ``GET {base}/webdav/b/TYPE/ID`` answering one biskit;
* HTTP Basic auth.

Policy: strict in what we send (every group explicitly CLOSEd, every URL segment
percent-encoded, ``Accept: application/json``), liberal in what we accept (fields nested
under ``properties`` or as flat dotted keys; values such as dates are passed through untouched
for the transform layer to parse).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence
from urllib.parse import quote, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from requests.auth import HTTPBasicAuth
from urllib3.util.retry import Retry

LOGGER_NAME = "calpendo_assets.calpendo_api"

BOOKING_TYPE = "Calpendo.Booking"
OPERATOR_TYPE = "MRIScan"
OPERATOR_PATH = "Operator"

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

# Relations documented by the vendor's query API page; anything else is a typo on our side.
RELATIONS = frozenset(
    {
        "EQ", "NE", "LT", "LE", "GT", "GE",
        "CONTAINS", "DOES_NOT_CONTAIN",
        "STARTS_WITH", "DOES_NOT_START_WITH",
        "ENDS_WITH", "DOES_NOT_END_WITH",
        "INCLUDES_ALL", "DOES_NOT_INCLUDE_ALL",
        "INCLUDES_ANY", "DOES_NOT_INCLUDE_ANY",
        "MEMBER_OF", "NOT_MEMBER_OF",
        "CONTAINS_MEMBER", "DOES_NOT_CONTAIN_MEMBER",
    }
)
NULL_VALUE = "__NULL__"
RETRY_STATUSES = (429, 500, 502, 503, 504)
STRATEGIES = ("bulk", "per_booking")
_SNIPPET_CHARS = 200


# --------------------------------------------------------------------------- settings/errors


@dataclass(frozen=True)
class HttpSettings:
    """HTTP behaviour of the client (from the data source's ``config``)."""

    timeout: float = 30.0  # seconds, applied to connect and to each read
    retries: int = 3  # urllib3 Retry total on 429/5xx and connection errors, GET only
    backoff_factor: float = 0.5
    max_workers: int = 5  # per-booking detail fetches in parallel

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


class CalpendoError(RuntimeError):
    """Base error. Messages name the URL (without credentials), never the user or password."""


class CalpendoAuthError(CalpendoError):
    """HTTP 401/403: the server refused the credentials."""


class CalpendoNotFoundError(CalpendoError):
    """HTTP 404 on a query: the biskit type does not exist on this server."""


class CalpendoResponseError(CalpendoError):
    """A 2xx answer that is not the JSON shape the contract promises (HTML page, bad JSON...)."""


# --------------------------------------------------------------------------- query grammar


def date_literal(value: dt.date | dt.datetime) -> str:
    """Calpendo date literal: ``20210906`` for a date, ``20140526T1200`` for a datetime.

    Calpendo compares against site-local wall time, so a datetime's wall-clock fields are used
    as they are: an aware datetime must already be converted to the site zone by the caller
    (its tzinfo is ignored, not converted). The documented literal has minute precision, so
    seconds are truncated.
    """
    # datetime is a subclass of date: test it first.
    if isinstance(value, dt.datetime):
        return value.strftime("%Y%m%dT%H%M")
    if isinstance(value, dt.date):
        return value.strftime("%Y%m%d")
    raise TypeError(f"date_literal needs a date or datetime, got {type(value).__name__}")


def _value_literal(value: Any) -> str:
    if value is None:
        return NULL_VALUE
    if isinstance(value, (dt.date, dt.datetime)):
        return date_literal(value)
    if isinstance(value, bool):  # before str(): Python's "True" is not what a server expects
        return "true" if value else "false"
    return str(value)


def _segment(text: str) -> str:
    # Each grammar token is one path segment: '/', spaces, '?', '#', '%' must all be escaped.
    return quote(text, safe="")


def cond(path: str, relation: str, value: Any) -> str:
    """One condition ``PATH/RELATION/VALUE`` with each segment percent-encoded.

    ``None`` becomes ``__NULL__``; dates become Calpendo date literals.
    """
    rel = relation.upper()
    if rel not in RELATIONS:
        raise ValueError(
            f"unknown Calpendo relation {relation!r}; expected one of {sorted(RELATIONS)}"
        )
    if not path:
        raise ValueError("condition path must not be empty")
    return "/".join((_segment(path), rel, _segment(_value_literal(value))))


def _group(boolop: str, exprs: tuple[str, ...]) -> str:
    if not exprs:
        raise ValueError(f"{boolop} needs at least one expression")
    if len(exprs) == 1:  # a one-member group means the member itself
        return exprs[0]
    # Always CLOSE explicitly: omitting it is only safe at the very end of a URL, and a
    # group that is later nested inside another would silently swallow its siblings.
    return "/".join((boolop, *exprs, "CLOSE"))


def and_(*exprs: str) -> str:
    """``AND/e1/e2/.../CLOSE``; a single expression is returned unchanged."""
    return _group("AND", exprs)


def or_(*exprs: str) -> str:
    """``OR/e1/e2/.../CLOSE``; a single expression is returned unchanged; none -> ValueError."""
    return _group("OR", exprs)


def _as_statuses(statuses: str | Iterable[str] | None) -> list[str]:
    # Accept one status or many, any case; upper-case (Calpendo enums) and de-duplicate.
    if statuses is None:
        return []
    if isinstance(statuses, str):
        statuses = [statuses]
    return list(dict.fromkeys(s.strip().upper() for s in statuses if s and s.strip()))


def window_expression(
    start: dt.date | dt.datetime,
    end: dt.date | dt.datetime,
    statuses: str | Sequence[str] | None,
) -> str:
    """Bookings starting in ``[start, end)`` whose status is one of ``statuses``.

    The status alternatives form a CLOSEd OR group inside the AND, so the filter is ANDed
    with the window. No statuses means no status condition.
    """
    parts = [cond("dateRange.start", "GE", start), cond("dateRange.start", "LT", end)]
    wanted = _as_statuses(statuses)
    if wanted:
        parts.append(or_(*(cond("status", "EQ", s) for s in wanted)))
    return and_(*parts)


# --------------------------------------------------------------------------- normalisation


def _merge(target: dict, key: str, value: Any) -> None:
    """Set ``target[key]``; dicts are merged so nested and dotted forms of one object combine."""
    current = target.get(key)
    if isinstance(current, dict):
        if isinstance(value, dict):
            for sub_key, sub_value in _nest(value).items():
                _merge(current, sub_key, sub_value)
        # else: a scalar (null, display string) never replaces the structured form.
        return
    target[key] = _nest(value)


def _set_dotted(target: dict, dotted: str, value: Any) -> None:
    head, _, rest = dotted.partition(".")
    if not rest:
        _merge(target, head, value)
        return
    child = target.get(head)
    if not isinstance(child, dict):
        # A scalar (e.g. a display string) yields to the structured form of the same object.
        child = target[head] = {}
    _set_dotted(child, rest, value)


def _nest(value: Any) -> Any:
    """Copy ``value`` as nested dicts: dotted keys expanded, ``properties`` hoisted.

    Applied recursively because referenced objects (``resource``, ``project``...) may be
    serialised as biskits themselves: ``{"id", "biskitType", "properties": {...}}``.
    """
    if isinstance(value, list):
        return [_nest(item) for item in value]
    if not isinstance(value, dict):
        return value
    out: dict = {}
    properties = value.get("properties")
    if isinstance(properties, dict):
        for key, sub in properties.items():
            _set_dotted(out, str(key), sub)
    # Envelope keys after properties, so the biskit's own id/biskitType win.
    for key, sub in value.items():
        if not (key == "properties" and isinstance(sub, dict)):
            _set_dotted(out, str(key), sub)
    return out


def normalise_biskit(raw: dict) -> dict:
    """A biskit as one nested dict: ``{"id", "biskitType", "title", "resource": {"name"}, ...}``.

    Accepts fields under ``properties`` (nested or flat dotted keys) and flat dotted keys at
    the top level, in any mix. Top-level ``id``/``biskitType`` win over same-named properties.
    """
    if not isinstance(raw, dict):
        raise TypeError(f"a biskit must be a JSON object, got {type(raw).__name__}")
    return _nest(raw)


def get_path(record: dict, dotted: str, default: Any = None) -> Any:
    """``get_path(b, "resource.name")``; also finds a literal dotted key in un-normalised data."""
    node: Any = record
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return record.get(dotted, default) if isinstance(record, dict) else default
        node = node[part]
    return node


def operator_name(value: Any) -> str | None:
    """Display name of an ``Operator`` property: a string, or an object's ``name`` then
    ``formattedName``. Blank or unknown shapes give None."""
    if isinstance(value, dict):
        value = value.get("name") or value.get("formattedName")
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


# --------------------------------------------------------------------------- client


@dataclass
class FetchResult:
    bookings: list[dict]  # normalised biskits
    skipped: dict[str, str] = field(default_factory=dict)  # booking id -> reason
    complete: bool = True  # False when the window may be missing bookings
    requests: int = 0  # logical HTTP requests (transparent urllib3 retries not counted)
    strategy: str = "bulk"


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
    return "?paths=" + ",".join(_segment(p) for p in dict.fromkeys(paths))


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
        retry = Retry(
            total=self.settings.retries,
            backoff_factor=self.settings.backoff_factor,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET"}),
            respect_retry_after_header=True,
            # Hand back the last 5xx instead of raising, so our error can name the status.
            raise_on_status=False,
        )
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

    def _snippet(self, text: str, limit: int = _SNIPPET_CHARS) -> str:
        """Start of a text for an error message, with credentials blanked out."""
        snippet = " ".join(text.split())[:limit]
        for secret in (self._password, self._username):
            if secret:
                snippet = snippet.replace(secret, "***")
        return snippet

    def _get_json(self, url: str) -> Any | None:
        """GET ``url`` and decode JSON. Returns None on 404; raises CalpendoError otherwise."""
        with self._count_lock:
            self.request_count += 1
        try:
            response = self._session.get(url, timeout=self.settings.timeout)
        except requests.RequestException as exc:
            # Covers connection errors, timeouts and RetryError once urllib3 gave up.
            raise CalpendoError(
                f"request to {url} failed ({self.settings.retries} retries allowed): "
                f"{type(exc).__name__}: {self._snippet(str(exc), limit=400)}"
            ) from exc
        status = response.status_code
        if status in (401, 403):
            raise CalpendoAuthError(f"Calpendo refused the credentials (HTTP {status}) for {url}")
        if status == 404:
            return None
        if status >= 400:
            raise CalpendoError(
                f"Calpendo answered HTTP {status} for {url}: {self._snippet(response.text)}"
            )
        return self._decode(url, response)

    def _decode(self, url: str, response: requests.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:  # requests' JSONDecodeError subclasses ValueError
            text = response.text
            kind = "an HTML page" if text.lstrip()[:1] == "<" else "malformed JSON"
            raise CalpendoResponseError(
                f"Calpendo returned {kind} instead of JSON for {url} "
                f"(HTTP {response.status_code}): {self._snippet(text)!r}"
            ) from exc

    # -- API ------------------------------------------------------------------------------

    def query_url(self, type_name: str, expression: str, paths: Sequence[str] | None = None) -> str:
        """The URL ``query`` would request (expression segments are already encoded)."""
        return f"{self.api_root}/q/{_segment(type_name)}/{expression}{_paths_query(paths)}"

    def query(
        self, type_name: str, expression: str, paths: Sequence[str] | None = None
    ) -> list[dict]:
        """Run one query and return normalised biskits.

        404 (no such biskit type on this server) -> CalpendoNotFoundError.
        """
        url = self.query_url(type_name, expression, paths)
        payload = self._get_json(url)
        if payload is None:
            raise CalpendoNotFoundError(
                f"Calpendo answered HTTP 404 for {url} (is {type_name!r} a biskit type here?)"
            )
        biskits = payload.get("biskits") if isinstance(payload, dict) else None
        if not isinstance(biskits, list) or not all(isinstance(b, dict) for b in biskits):
            raise CalpendoResponseError(
                f"Calpendo answer for {url} has no 'biskits' list of objects: "
                f"{self._snippet(json.dumps(payload, default=str))!r}"
            )
        return [normalise_biskit(b) for b in biskits]

    def get(self, type_name: str, biskit_id: Any) -> dict | None:
        """One biskit by id (``webdav/b/TYPE/ID``), normalised; None when the server says 404."""
        url = f"{self.api_root}/b/{_segment(type_name)}/{_segment(str(biskit_id))}"
        payload = self._get_json(url)
        if payload is None:
            return None
        # Liberal: a detail answer wrapped like a query result is unwrapped.
        if isinstance(payload, dict) and isinstance(payload.get("biskits"), list):
            if len(payload["biskits"]) == 1:
                payload = payload["biskits"][0]
        if not isinstance(payload, dict) or isinstance(payload.get("biskits"), list):
            raise CalpendoResponseError(
                f"Calpendo answer for {url} is not one biskit object: "
                f"{self._snippet(json.dumps(payload, default=str))!r}"
            )
        return normalise_biskit(payload)

    def list_window(
        self,
        start: dt.date | dt.datetime,
        end: dt.date | dt.datetime,
        statuses: str | Sequence[str] | None,
        paths: Sequence[str] | None = None,
        type_name: str = BOOKING_TYPE,
    ) -> list[dict]:
        """Bookings of ``type_name`` starting in ``[start, end)`` with one of ``statuses``."""
        return self.query(type_name, window_expression(start, end, statuses), paths)

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

    def operators(
        self,
        start: dt.date | dt.datetime,
        end: dt.date | dt.datetime,
        statuses: str | Sequence[str] | None,
    ) -> dict[str, str]:
        """``{booking id: operator display name}`` for MRIScan bookings in the window.

        One query on the subtype. A server without that subtype (404) yields {} and a warning.
        """
        try:
            scans = self.list_window(
                start, end, statuses, paths=("id", OPERATOR_PATH), type_name=OPERATOR_TYPE
            )
        except CalpendoNotFoundError as exc:
            self.log.warning(f"No operators: {exc}")
            return {}
        names = {}
        for scan in scans:
            name = operator_name(get_path(scan, OPERATOR_PATH))
            if name is not None and scan.get("id") is not None:
                names[str(scan["id"])] = name
        return names

    def list_bookings(
        self,
        start: dt.date | dt.datetime,
        end: dt.date | dt.datetime,
        statuses: str | Sequence[str] | None,
        strategy: str = "bulk",
        extra_paths: Sequence[str] = (),
    ) -> FetchResult:
        """Step 1 of a fetch: the window query.

        ``bulk``: one query returning every field the sync needs.
        ``per_booking``: one query returning only the ids (details come in step 2).
        """
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown fetch strategy {strategy!r}; expected one of {STRATEGIES}")
        paths = (*BOOKING_PATHS, *extra_paths) if strategy == "bulk" else ("id",)
        before = self.request_count
        bookings, skipped = _split_missing_ids(self.list_window(start, end, statuses, paths=paths))
        return FetchResult(bookings, skipped, not skipped, self.request_count - before, strategy)

    def complete_bookings(
        self,
        listing: FetchResult,
        start: dt.date | dt.datetime,
        end: dt.date | dt.datetime,
        statuses: str | Sequence[str] | None,
    ) -> FetchResult:
        """Step 2 of a fetch: per-booking details (that strategy only) and the operators.

        ``booking["Operator"]`` becomes a display string. The operator query is
        skipped when the window holds no bookings.
        """
        before = self.request_count
        bookings, skipped = listing.bookings, dict(listing.skipped)
        if listing.strategy == "per_booking":
            bookings, not_found = self.get_details([b["id"] for b in bookings])
            skipped.update(not_found)
        else:
            bookings = [dict(b) for b in bookings]  # the listing stays as fetched
        ops = self.operators(start, end, statuses) if bookings else {}
        for booking in bookings:
            _attach_operator(booking, ops)
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
        start: dt.date | dt.datetime,
        end: dt.date | dt.datetime,
        statuses: str | Sequence[str] | None,
    ) -> str:
        """sha256 of the window's essential content: one small query, order-independent."""
        biskits = self.list_window(start, end, statuses, paths=FINGERPRINT_PATHS)
        canonical = sorted(
            json.dumps(b, sort_keys=True, separators=(",", ":"), default=str) for b in biskits
        )
        return hashlib.sha256("\n".join(canonical).encode("utf-8")).hexdigest()


def _split_missing_ids(biskits: list[dict]) -> tuple[list[dict], dict[str, str]]:
    """Biskits without an id cannot be synced or reconciled: skip them (window incomplete)."""
    kept, skipped = [], {}
    for index, biskit in enumerate(biskits):
        if biskit.get("id") in (None, ""):
            skipped[f"#{index}"] = "biskit without an id in the query answer"
        else:
            kept.append(biskit)
    return kept, skipped


def _attach_operator(booking: dict, operators: dict[str, str]) -> None:
    # The subtype query wins; otherwise keep an Operator the detail answer already carried.
    name = operators.get(str(booking["id"])) or operator_name(booking.get(OPERATOR_PATH))
    if name is None:
        booking.pop(OPERATOR_PATH, None)
    else:
        booking[OPERATOR_PATH] = name
