"""The page at ``/``: today's worklist per station, the "not on the worklist" list,
and for ``write`` accounts a walk-in form and a cancel button per manual item.

Rendered on the server with plain HTML forms, so it reads and works without
JavaScript; ``/static/page.js`` only adds conveniences (the date form submits on
change, the list filters as you type, a confirmation before cancelling, a quiet
refresh). Nothing comes from the internet. The login form gives the same opaque
bearer token as ``POST /api/v1/login``, kept in an HttpOnly, SameSite=Strict cookie;
every form that changes something also carries a token derived from it (CSRF).
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from mwl_service import manual, sessions
from mwl_service.api.auth import (
    LoginRefused,
    LoginThrottled,
    client_address,
    engine_of,
    log_in,
    settings_of,
)
from mwl_service.api.errors import ApiError
from mwl_service.api.page_data import page_context
from mwl_service.api.worklist import parse_day
from mwl_service.manual import ItemConflict, ItemNotFound
from mwl_service.manual_fields import check_new_item
from mwl_service.users import User

router = APIRouter(include_in_schema=False)
COOKIE = "mwl_session"
TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
WALK_IN_FIELDS = ("patient_id", "patient_name", "scheduled_start", "scheduled_station_ae_title",
                  "modality", "study_description")


def csrf_token(session: str) -> str:
    return hmac.new(session.encode(), b"mwl-api page form", hashlib.sha256).hexdigest()[:32]


def page_user(request: Request) -> tuple[User | None, str]:
    token = request.cookies.get(COOKIE, "")
    if not token:
        return None, ""
    with engine_of(request).connect() as conn:
        return sessions.resolve_token(conn, token), token


def html(name: str, status: int = 200, **context) -> HTMLResponse:
    return HTMLResponse(TEMPLATES.get_template(name).render(**context), status_code=status)


async def form_of(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body (the page's forms)."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


def _back(date: str = "", **message: str) -> RedirectResponse:
    query = urlencode({k: v for k, v in {"date": date, **message}.items() if v})
    return RedirectResponse("/" + (f"?{query}" if query else ""), status_code=303)


@router.get("/", response_class=HTMLResponse)
def page(request: Request, date: str | None = None, q: str | None = None) -> HTMLResponse:
    user, token = page_user(request)
    if user is None:
        return html("login.html", error="")
    try:
        day = parse_day(date, request)
    except ApiError:
        day = settings_of(request).today()
    context = page_context(request, user, day, (q or "").strip())
    return html("page.html", csrf=csrf_token(token), form={}, problems={},
                added=request.query_params.get("added", ""),
                cancelled=request.query_params.get("cancelled", ""), **context)


@router.post("/login")
async def page_login(request: Request) -> Response:
    form = await form_of(request)
    try:
        token = log_in(engine_of(request), settings_of(request), client_address(request),
                       form.get("username", ""), form.get("password", ""))
    except LoginThrottled:
        return html("login.html", 429, error="Too many refused logins: wait a few minutes.")
    except LoginRefused:
        return html("login.html", 401, error="Wrong user name or password.")
    response = _back()
    response.set_cookie(
        COOKIE, token, max_age=int(settings_of(request).token_ttl.total_seconds()),
        httponly=True, samesite="strict", secure=request.url.scheme == "https",
    )
    return response


async def _checked_form(request: Request) -> tuple[User, dict[str, str]]:
    user, token = page_user(request)
    form = await form_of(request)
    if user is None:
        raise ApiError(401, "log in first")
    if not hmac.compare_digest(form.get("csrf", ""), csrf_token(token)):
        raise ApiError(403, "the form is out of date: reload the page")
    return user, form


@router.post("/logout")
async def page_logout(request: Request) -> Response:
    _user, _form = await _checked_form(request)
    with engine_of(request).begin() as conn:
        sessions.revoke_token(conn, request.cookies.get(COOKIE, ""))
    response = _back()
    response.delete_cookie(COOKIE)
    return response


@router.post("/walk-ins")
async def page_walk_in(request: Request) -> Response:
    user, form = await _checked_form(request)
    if not user.may("write"):
        raise ApiError(403, "adding a walk-in needs the 'write' role")
    given = {k: form.get(k, "").strip() for k in WALK_IN_FIELDS if form.get(k, "").strip()}
    values, problems = check_new_item(given, settings_of(request).tz)
    if problems:
        day = parse_day(None, request)
        context = page_context(request, user, day, "")
        return html("page.html", 422, csrf=form.get("csrf", ""), form=given, problems=problems,
                    added="", cancelled="", **context)
    row = manual.create_item(engine_of(request), values, user.username)
    date = f"{row['scheduled_start_date'][:4]}-{row['scheduled_start_date'][4:6]}-" \
           f"{row['scheduled_start_date'][6:]}"
    return _back(date, added=row["accession_number"])


@router.post("/items/{accession_number}/cancel")
async def page_cancel(accession_number: str, request: Request) -> Response:
    user, form = await _checked_form(request)
    if not user.may("write"):
        raise ApiError(403, "cancelling needs the 'write' role")
    try:
        manual.discontinue_item(engine_of(request), accession_number,
                                form.get("reason", "").strip(), user.username)
    except manual.InvalidValue as exc:
        raise ApiError(422, f"the {exc}") from None
    except (ItemNotFound, ItemConflict) as exc:
        raise ApiError(404 if isinstance(exc, ItemNotFound) else 409, str(exc)) from None
    return _back(form.get("date", ""), cancelled=accession_number)
