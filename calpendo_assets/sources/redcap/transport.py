"""REDCap API transport: one form-encoded POST per call, answers checked, errors sorted.

REDCap answers errors as ``{"error": "..."}`` (JSON when ``returnFormat=json``, which
every request here sends) with HTTP 400 (bad parameters) or 403 (token unknown or
without API rights). Those become `AuthRefusedError` (401/403) or `BadAnswerError`
(other 4xx, or an answer that is not the promised JSON); connection errors, timeouts,
429 and 5xx become `SourceUnavailableError`, which is transient. Messages name the URL,
the HTTP status and REDCap's own error text, never the token (it travels in the body,
and is blanked out of any text quoted) and never an answer's records.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass
from typing import Any, Sequence
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from calpendo_assets.core.errors import (AuthRefusedError, BadAnswerError,
                                            SourceUnavailableError)
from calpendo_assets.sources.redcap.request import RecordRequest, answer_fingerprint

LOGGER_NAME = "calpendo_assets.sources.redcap"
_XML_ERROR = re.compile(r"<error>(.*?)</error>", re.DOTALL)


@dataclass(frozen=True)
class RedcapHttp:
    """HTTP behaviour: seconds per connect and per read; retries of connection errors,
    read timeouts and 502/503/504 (exports are read-only, so a POST may be repeated)."""

    timeout: float = 30.0
    retries: int = 2
    backoff_factor: float = 0.5

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise ValueError(f"RedcapHttp.timeout must be > 0, got {self.timeout!r}")
        if self.retries < 0 or self.backoff_factor < 0:
            raise ValueError("RedcapHttp.retries and backoff_factor must be >= 0")


def describe(response: requests.Response) -> str:
    """Status, content type and size: what a message may say about an answer."""
    kind = response.headers.get("Content-Type") or "no content type"
    return f"HTTP {response.status_code}, {kind}, {len(response.content)} bytes"


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number")


class RedcapClient:
    """One project's API (``url`` ends in ``/api/``) with its token; thread-safe."""

    def __init__(self, url: str, token: str, http: RedcapHttp = RedcapHttp(),
                 logger: Any = None) -> None:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the REDCap API URL must be http(s)://host/.../api/")
        if parts.username or parts.password:
            raise ValueError("the REDCap API URL must not carry credentials; the token "
                             "comes from its environment variable")
        if not token:
            raise AuthRefusedError(f"no REDCap API token for {url}")
        self.url, self._token, self.http = url.strip(), token, http
        self.log = logger or logging.getLogger(LOGGER_NAME)
        self._session = self._make_session()
        self._count_lock = threading.Lock()
        self.request_count = 0

    def _make_session(self) -> requests.Session:
        retry = Retry(total=self.http.retries, connect=self.http.retries,
                      read=self.http.retries, status=self.http.retries,
                      status_forcelist=(502, 503, 504), allowed_methods=frozenset({"POST"}),
                      backoff_factor=self.http.backoff_factor, raise_on_status=False,
                      respect_retry_after_header=False)  # never sleep as long as a server asks
        session = requests.Session()
        adapter = HTTPAdapter(max_retries=retry)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers.update({"Accept": "application/json"})
        return session

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> "RedcapClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RedcapClient({self.url!r})"

    # -- HTTP core -----------------------------------------------------------------------

    def _mask(self, text: str) -> str:
        return text.replace(self._token, "***") if len(self._token) >= 4 else text

    def _error_text(self, response: requests.Response) -> str:
        """REDCap's own error message, if the answer has one (masked, one line, short)."""
        body = response.content.decode("utf-8", errors="replace")
        try:
            payload = json.loads(body)
            text = payload.get("error") if isinstance(payload, dict) else None
        except ValueError:
            match = _XML_ERROR.search(body)
            text = match.group(1) if match else body[7:] if body.startswith("ERROR: ") else None
        if not isinstance(text, str) or not text.strip():
            return ""
        return ": " + self._mask(" ".join(text.split()))[:300]

    def post(self, params: Sequence[tuple[str, str]]) -> requests.Response:
        """POST ``params`` plus the token; a 2xx answer, else a SourceError."""
        with self._count_lock:
            self.request_count += 1
        try:
            response = self._session.post(self.url, data=[("token", self._token), *params],
                                          timeout=self.http.timeout, allow_redirects=False)
        except requests.RequestException as exc:
            cause = getattr(exc.args[0], "reason", None) if exc.args else None
            raise SourceUnavailableError(
                f"request to REDCap at {self.url} failed ({self.http.retries} retries "
                f"allowed): {type(cause or exc).__name__}: {self._mask(str(cause or exc))[:400]}"
            ) from None
        status = response.status_code
        if status in (401, 403):
            raise AuthRefusedError(f"REDCap at {self.url} refused the API token (HTTP {status})"
                                   f"{self._error_text(response)}")
        if status == 429 or status >= 500:
            raise SourceUnavailableError(f"REDCap answered {describe(response)} for {self.url}")
        if status == 404:
            raise BadAnswerError(f"REDCap answered HTTP 404 for {self.url}: is that the API "
                                 "endpoint (ending in /api/)?")
        if 300 <= status < 400:  # following would turn the POST into a GET without the token
            raise BadAnswerError(f"REDCap answered a redirect ({describe(response)}) for "
                                 f"{self.url}: configure the URL it redirects to")
        if status >= 400:
            raise BadAnswerError(f"REDCap answered HTTP {status} for {self.url}"
                                 f"{self._error_text(response) or ' (' + describe(response) + ')'}")
        return response

    def post_json(self, params: Sequence[tuple[str, str]]) -> Any:
        response = self.post(params)
        try:
            payload = json.loads(response.content)
        except ValueError:
            what = ("an HTML page (a login page or a proxy's?)"
                    if response.content.lstrip()[:1] == b"<" else "an answer that is not JSON")
            raise BadAnswerError(f"REDCap returned {what} for {self.url} "
                                 f"({describe(response)})") from None
        if isinstance(payload, dict) and "error" in payload:
            raise BadAnswerError(f"REDCap answered an error with HTTP {response.status_code} "
                                 f"for {self.url}{self._error_text(response)}")
        return payload

    # -- API ------------------------------------------------------------------------------

    def version(self) -> str:
        """``content=version``: REDCap's version number, as plain text."""
        text = self.post([("content", "version"), ("returnFormat", "json")]).text.strip()
        if not re.fullmatch(r"\d+(\.\d+){1,3}", text):
            raise BadAnswerError(f"REDCap answered content=version at {self.url} with "
                                 f"something that is not a version number ({len(text)} chars)")
        return text

    def project(self) -> dict[str, Any]:
        """``content=project``: the project's attributes (id, title, longitudinal, ...)."""
        payload = self.post_json([("content", "project"), ("format", "json"),
                                  ("returnFormat", "json")])
        if not isinstance(payload, dict):
            raise BadAnswerError(f"REDCap answered content=project at {self.url} with "
                                 f"{_kind(payload)}, not an object")
        return payload

    def export_records(self, request: RecordRequest) -> list[dict[str, Any]]:
        """The flat rows of one ``content=record`` request, checked to be JSON objects."""
        rows = self.post_json(request.form())
        if not isinstance(rows, list):
            raise BadAnswerError(f"REDCap answered content=record at {self.url} with "
                                 f"{_kind(rows)}, not a list of rows")
        for index, row in enumerate(rows):
            if not isinstance(row, dict):
                raise BadAnswerError(f"REDCap answer for {self.url}: row {index} is "
                                     f"{_kind(row)}, not an object ({len(rows)} rows)")
        self.log.debug(f"REDCap record export: {len(rows)} rows from {self.url}")
        return rows

    def fingerprint(self, request: RecordRequest) -> str:
        """The same export as a sync's, hashed (see `answer_fingerprint`)."""
        return answer_fingerprint(request, self.export_records(request))

    def probe(self) -> str:
        """``content=version`` and ``content=project``: a line for ``calpendo-mwl check``."""
        version, info = self.version(), self.project()
        shape = "longitudinal" if str(info.get("is_longitudinal")) == "1" else "classic"
        repeats = str(info.get("has_repeating_instruments_or_events")) == "1"
        return (f"REDCap {version} at {self.url}: project {info.get('project_id', '?')}, "
                f"{shape}{', with repeating instruments' if repeats else ''}")

