"""One request in, one answer out, no sockets: REDCap's ``api/index.php`` in small.

As REDCap 15 does: only POST (else HTTP 501); the form-encoded ``token`` is checked
before anything else (missing, not alphanumeric or unknown: HTTP 403 "You do not have
permissions to use the API"); then ``content`` (unknown: HTTP 400 'The value of the
parameter "content" is not valid'). Error bodies come in the request's ``returnFormat``,
else its ``format``, else XML: ``{"error":"..."}``, ``ERROR: ...`` or
``<hash><error>...</error></hash>``. ``content=version`` answers plain text.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit
from xml.sax.saxutils import escape

from .export import ApiError, Params, export_records
from .project import Project
from .store import RecordStore

API_PATH = "/api/"
JSON_TYPE = "application/json; charset=utf-8"
NO_PERMISSION = "You do not have permissions to use the API"
# What a real REDCap answers that this simulator does not (an honest 400, not "not valid").
UNSIMULATED = frozenset({
    "arm", "attachment", "authkey", "dag", "event", "exportFieldNames", "fieldValidation",
    "file", "fileRepository", "fileinfo", "filesize", "formEventMapping", "generateNextRecordName",
    "instrument", "log", "participantList", "pdf", "project_settings", "project_xml",
    "repeatingFormsEvents", "report", "surveyAccessCode", "surveyLink", "surveyQueueLink",
    "surveyReturnCode", "user", "userDagMapping", "userRole", "userRoleMapping",
})


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, value: object) -> "Response":
        return cls(200, json.dumps(value, separators=(",", ":")).encode("utf-8"), JSON_TYPE)


def return_format(params: Params) -> str:
    """The format of error messages: ``returnFormat``, else ``format``, else xml."""
    fmt = params.get("format", "xml").lower()
    chosen = params.get("returnFormat").lower() or fmt
    return chosen if chosen in ("json", "csv") else "xml"


def error_response(status: int, message: str, fmt: str) -> Response:
    if fmt == "json":
        body = json.dumps({"error": message}, separators=(",", ":"))
        return Response(status, body.encode("utf-8"), JSON_TYPE)
    if fmt == "csv":
        return Response(status, f"ERROR: {message}".encode("utf-8"), "text/csv; charset=utf-8")
    body = f'<?xml version="1.0" encoding="UTF-8" ?><hash><error>{escape(message)}</error></hash>'
    return Response(status, body.encode("utf-8"), "text/xml; charset=utf-8")


def form_params(body: bytes, content_type: str | None) -> Params:
    """The POSTed fields; a body that is not form-encoded carries none (PHP's $_POST)."""
    kind = (content_type or "application/x-www-form-urlencoded").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return Params(())
    text = body.decode("utf-8", errors="replace")
    return Params(tuple(parse_qsl(text, keep_blank_values=True)))


class RedcapApi:
    """The API of one project with one token (API export rights only)."""

    def __init__(self, project: Project, store: RecordStore, token: str) -> None:
        self.project, self.store = project, store
        self._token = token.encode("utf-8")

    def authorised(self, params: Params) -> bool:
        supplied = params.get("token")
        return supplied.isascii() and supplied.isalnum() and hmac.compare_digest(
            supplied.encode("utf-8"), self._token)

    def answer(self, method: str, path: str, params: Params) -> Response:
        if urlsplit(path).path != API_PATH:
            return Response(404, b"Not Found\n", "text/plain; charset=utf-8")
        fmt = return_format(params)
        if method != "POST":
            return error_response(501, "The requested method is not implemented.", fmt)
        if not self.authorised(params):
            return error_response(403, NO_PERMISSION, fmt)
        try:
            return self._content(params)
        except ApiError as exc:
            return error_response(exc.status, exc.message, fmt)

    def _content(self, params: Params) -> Response:
        content = params.get("content")
        if content == "version":
            return Response(200, self.project.version.encode("utf-8"), "text/csv; charset=utf-8")
        if content in UNSIMULATED:
            raise ApiError(400, f"The simulator does not answer content={content}")
        if content not in ("record", "metadata", "project"):
            raise ApiError(400, 'The value of the parameter "content" is not valid')
        if "data" in params.names() or params.get("action") in ("import", "delete"):
            raise ApiError(403, "You do not have API Import/Update privileges")
        if params.get("format", "xml").lower() != "json":
            raise ApiError(400, f"The simulator answers content={content} as format=json only")
        if content == "project":
            return Response.json(self.project.info())
        if content == "metadata":
            return Response.json(self.project.metadata(params.array("fields")))
        return Response.json(export_records(self.project, self.store.rows(), params,
                                            self.store.modified()))
