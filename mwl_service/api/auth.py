"""Who is asking: bearer tokens, roles, and logging in (with its rate limit).

Every ``/api/v1`` endpoint but ``health`` and ``login`` needs ``Authorization:
Bearer TOKEN``: none or a bad one is 401, a role too weak is 403. The page keeps the
same token in an HttpOnly cookie (`mwl_service.api.page`); the API reads the header
only, so a browser's cookie never authorises an API call by itself (no CSRF there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Engine

from mwl_service import sessions, users
from mwl_service.api.errors import ApiError, unauthorized
from mwl_service.api.settings import ApiSettings
from mwl_service.users import User

router = APIRouter(prefix="/api/v1", tags=["accounts"])


def engine_of(request: Request) -> Engine:
    return request.app.state.engine


def settings_of(request: Request) -> ApiSettings:
    return request.app.state.settings


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def bearer_token(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def current_user(request: Request) -> User:
    token = bearer_token(request)
    if not token:
        raise unauthorized()
    with engine_of(request).connect() as conn:
        user = sessions.resolve_token(conn, token)
    if user is None:
        raise unauthorized("the bearer token is not valid (expired, revoked or unknown)")
    return user


def requires(role: str) -> Callable[..., User]:
    """A dependency: the caller's account, which must have `role` (or a stronger one)."""

    def check(user: Annotated[User, Depends(current_user)]) -> User:
        if not user.may(role):
            raise ApiError(
                403, f"this needs the {role!r} role; {user.username!r} has {user.role!r}"
            )
        return user

    return check


Reader = Annotated[User, Depends(requires("read"))]
Writer = Annotated[User, Depends(requires("write"))]
Admin = Annotated[User, Depends(requires("admin"))]


class LoginRefused(Exception):
    """Wrong user name or password, or a disabled account: one answer for all."""


class LoginThrottled(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__("too many refused logins from this address")
        self.retry_after = retry_after


def log_in(engine: Engine, settings: ApiSettings, client: str, username: str, password: str) -> str:
    """A new token, or LoginRefused / LoginThrottled (the client's refusals are counted
    in the database, so the limit holds across replicas)."""
    with engine.begin() as conn:
        wait = sessions.login_blocked_for(
            conn, client, max_failures=settings.max_login_failures,
            window=settings.login_failure_window,
        )
        if wait:
            raise LoginThrottled(wait)
        user = users.authenticate(conn, username, password)
        if user is not None:
            return sessions.issue_token(conn, user, settings.token_ttl)
        sessions.record_failure(conn, client, window=settings.login_failure_window)
    raise LoginRefused()


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(max_length=64)
    password: str = Field(max_length=users.MAX_PASSWORD_LENGTH)


class TokenAnswer(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="seconds until the token expires")


@router.post("/login", response_model=TokenAnswer, summary="Log in: a bearer token")
def login(body: Credentials, request: Request) -> TokenAnswer:
    settings = settings_of(request)
    try:
        token = log_in(engine_of(request), settings, client_address(request),
                       body.username, body.password)
    except LoginThrottled as exc:
        raise ApiError(429, str(exc), headers={"Retry-After": str(int(exc.retry_after))}) from None
    except LoginRefused:
        raise unauthorized("wrong user name or password") from None
    return TokenAnswer(access_token=token, expires_in=int(settings.token_ttl.total_seconds()))


@router.post("/logout", status_code=204, summary="Revoke the token of this request")
def logout(request: Request, _user: Reader) -> Response:
    with engine_of(request).begin() as conn:
        sessions.revoke_token(conn, bearer_token(request))
    return Response(status_code=204)


@router.get("/me", summary="The account of this token")
def me(user: Reader) -> dict:
    return {"username": user.username, "role": user.role}


@router.get("/users", summary="Every account (admin)")
def list_accounts(request: Request, _user: Admin) -> dict:
    rows = users.list_users(engine_of(request))
    return {"items": [
        {"username": r["username"], "role": r["role"], "disabled": bool(r["disabled"]),
         "tokens": int(r["tokens"])} for r in rows
    ]}
