"""Calpendo's web API over HTTP: one pooled session, Basic auth, retries, and errors.

Contract (vendor docs): query API ``GET {base}/webdav/q/TYPE/EXPR[?paths=P1,P2]``
answering ``{"biskits": [...]}``; REST read ``GET {base}/webdav/b/TYPE/ID`` answering one
biskit; HTTP Basic auth. Plain Python (no Dagster import). What a fetch asks for is
`fetch`'s business; this module only gets answers.

Errors are `calpendo_assets.core.errors` classes with ``transient`` set. Their
messages name the URL (never credentials), status, content type, size and where an
answer went wrong, never the answer's text: it holds participant names.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Annotated, Any

import requests
from pydantic import BaseModel, ConfigDict, Field
from requests.adapters import HTTPAdapter
from requests.auth import HTTPBasicAuth
from urllib3.exceptions import InvalidHeader
from urllib3.util import parse_url
from urllib3.util.retry import Retry

from calpendo_assets.core.errors import (
    AuthRefusedError,
    BadAnswerError,
    NotFoundError,
    SourceError,
    SourceUnavailableError,
)
from calpendo_assets.core.types import Count, NonNegative, Positive
from calpendo_assets.sources.calpendo.biskits import detail_biskit, query_biskits
from calpendo_assets.sources.calpendo.query import segment

RETRY_STATUSES = (429, 500, 502, 503, 504)
DEFAULT_MAX_RETRY_AFTER = 30.0


class HttpSettings(BaseModel):
    """HTTP behaviour of the client (from the data source's ``config``); pydantic
    refuses out-of-range values at construction, naming the field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout: Positive = 30.0  # seconds, applied to connect and to each read
    retries: Count = 3  # urllib3 Retry total on 429/5xx and connection errors, GET only
    backoff_factor: NonNegative = 0.5
    max_workers: Annotated[int, Field(ge=1)] = 5  # per-booking detail fetches in parallel
    # Longest Retry-After (seconds) we wait; a longer one fails the fetch at once.
    max_retry_after: NonNegative = DEFAULT_MAX_RETRY_AFTER


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


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``https://user:pw@host/x`` as a credential-free URL and the credentials."""
    parsed = parse_url(url)
    if parsed.auth is None:
        return url, None, None
    user, _, password = parsed.auth.partition(":")
    return parsed._replace(auth=None).url, user or None, password or None


def api_root(base_url: str) -> str:
    """``{base}/webdav``: ".../calpendo", ".../calpendo/" and ".../calpendo/webdav" alike."""
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


def _decode(url: str, response: requests.Response) -> Any:
    try:
        return json.loads(response.content)
    except ValueError as exc:
        if response.content.lstrip()[:1] == b"<":
            what = "an HTML page instead of JSON"
        elif isinstance(exc, json.JSONDecodeError):
            where = f"line {exc.lineno} column {exc.colno}, byte {exc.pos}"
            what = f"malformed JSON ({exc.msg}: {where})"
        else:
            what = "an answer that is not UTF-8 JSON"
        described = _describe(response)
        raise BadAnswerError(f"Calpendo returned {what} for {url} ({described})") from None


class CalpendoHttp:
    """Thread-safe access to one Calpendo server over a pooled ``requests.Session``."""

    def __init__(
        self, base_url: str, username: str, password: str, settings: HttpSettings = HttpSettings()
    ) -> None:
        clean_url, url_user, url_password = split_credentials(base_url)
        # Credentials embedded in the URL are only a fallback, and never kept in any URL we show.
        self._username = username or url_user or ""
        self._password = password or url_password or ""
        self.api_root = api_root(clean_url)
        self.settings = settings
        self._retry = self._make_retry()
        self._session = self._make_session()
        self._count_lock = threading.Lock()
        self.request_count = 0

    def _make_retry(self) -> _CappedRetry:
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
        return retry

    def _make_session(self) -> requests.Session:
        pool = max(self.settings.max_workers, 10)
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=pool, max_retries=self._retry)
        session = requests.Session()
        session.auth = HTTPBasicAuth(self._username, self._password)
        session.headers.update({"Accept": "application/json"})
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> "CalpendoHttp":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _mask(self, text: str) -> str:
        """The password blanked out of a library's error text, in case it echoes one.

        The URLs we request carry no credentials, so this is a second line of defence;
        very short passwords are left alone rather than blanking letters of host names.
        """
        if len(self._password) >= 4:
            text = text.replace(self._password, "***")
        return text

    def _send(self, url: str) -> requests.Response:
        with self._count_lock:
            self.request_count += 1
        try:
            return self._session.get(url, timeout=self.settings.timeout)
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

    def get_json(self, url: str) -> Any | None:
        """GET ``url`` and decode JSON. Returns None on 404; raises SourceError otherwise."""
        response = self._send(url)
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
        return _decode(url, response)

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
        payload = self.get_json(url)
        if payload is None:
            raise NotFoundError(
                f"Calpendo answered HTTP 404 for {url} (is {type_name!r} a biskit type here?)"
            )
        return query_biskits(payload, url)

    def get(self, type_name: str, biskit_id: Any) -> dict | None:
        """One biskit by id (``webdav/b/TYPE/ID``), normalised; None when the server says 404."""
        url = f"{self.api_root}/b/{segment(type_name)}/{segment(str(biskit_id))}"
        payload = self.get_json(url)
        return None if payload is None else detail_biskit(payload, url)
