"""Errors as JSON bodies: ``{"detail": ...}``, plus ``errors`` naming each bad field.

Clients never see a stack trace, and the logs never see a submitted value: a 422
names fields and problems to the client only, a 500 is logged by type and place.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from mwl_service.manual import InvalidValue, ItemConflict, ItemNotFound


class ApiError(Exception):
    """An error answer: HTTP `status`, a `detail` text and extra JSON members."""

    def __init__(self, status: int, detail: str, headers: dict | None = None, **extra: Any):
        super().__init__(detail)
        self.status, self.detail, self.headers, self.extra = status, detail, headers, extra


def invalid_fields(problems: dict[str, str]) -> ApiError:
    """422 naming every bad field (and its problem)."""
    errors = [{"field": f, "problem": p} for f, p in problems.items()]
    return ApiError(422, f"invalid fields: {', '.join(problems)}", errors=errors)


def unauthorized(detail: str = "a valid bearer token is required") -> ApiError:
    return ApiError(401, detail, headers={"WWW-Authenticate": "Bearer"})


def _json(status: int, detail: str, headers: dict | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=status, headers=headers)


def _field_of(loc: tuple, kind: str = "") -> str:
    if kind == "json_invalid":  # its loc holds the character position, not a field
        return "body"
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
    return _json(exc.status, exc.detail, exc.headers, **exc.extra)


async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return _json(exc.status_code, str(exc.detail), getattr(exc, "headers", None))


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    # The problem texts only: pydantic's "input" would echo submitted values.
    problems: dict[str, str] = {}
    for error in exc.errors():
        field = _field_of(tuple(error.get("loc", ())), error.get("type", ""))
        problems.setdefault(field, str(error.get("msg", "")))
    raised = invalid_fields(problems)
    return _json(raised.status, raised.detail, **raised.extra)


async def _not_found(_request: Request, exc: ItemNotFound) -> JSONResponse:
    return _json(404, str(exc))


async def _invalid_value(_request: Request, exc: InvalidValue) -> JSONResponse:
    raised = invalid_fields({exc.field: exc.problem})
    return _json(raised.status, raised.detail, **raised.extra)


async def _conflict(_request: Request, exc: ItemConflict) -> JSONResponse:
    return _json(409, str(exc), **({"source": exc.source} if exc.source else {}))


async def _database_down(_request: Request, exc: DBAPIError) -> JSONResponse:
    if isinstance(exc, OperationalError) or exc.connection_invalidated:
        return _json(503, "the worklist database is unavailable", {"Retry-After": "5"})
    raise exc  # any other database error is a 500 (AccessLog answers and logs it)


async def _bad_value(_request: Request, _exc: DataError) -> JSONResponse:
    # A value the database cannot store or compare (PostgreSQL: a NUL character, a
    # number out of range): the client's, so 422; its message may quote the value.
    return _json(422, "a value holds a character or number the database cannot take")


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ItemNotFound, _not_found)
    app.add_exception_handler(ItemConflict, _conflict)
    app.add_exception_handler(InvalidValue, _invalid_value)
    app.add_exception_handler(DBAPIError, _database_down)
    app.add_exception_handler(DataError, _bad_value)
