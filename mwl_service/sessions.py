"""mwl-api bearer tokens and the login rate limit, both kept in the worklist database.

A token is 32 random bytes (URL-safe text) handed to the client once; the database
keeps only its SHA-256 with an expiry. Any number of mwl-api replicas accept it, and
deleting the row (logout, a disabled account, a new password) revokes it everywhere at
once; a leaked database holds no usable token.

Refused logins are counted per client address in the database too, so the limit holds
however many replicas a client spreads its attempts over.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from sqlalchemy import delete, func, insert, select
from sqlalchemy.engine import Connection

from mwl_service.schema import ApiToken, ApiUser, LoginFailure, utcnow
from mwl_service.users import User

TOKENS = ApiToken.__table__
USERS = ApiUser.__table__
FAILURES = LoginFailure.__table__

DEFAULT_TOKEN_TTL = dt.timedelta(hours=8)  # a technologist's shift
DEFAULT_MAX_FAILURES = 10  # refused logins per client address ...
DEFAULT_FAILURE_WINDOW = dt.timedelta(minutes=5)  # ... within this long


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_token(
    conn: Connection, user: User, ttl: dt.timedelta = DEFAULT_TOKEN_TTL,
    now: dt.datetime | None = None,
) -> str:
    """A new token for `user`, valid for `ttl`; expired tokens are swept meanwhile."""
    now = now or utcnow()
    conn.execute(delete(TOKENS).where(TOKENS.c.expires_at <= now))
    token = secrets.token_urlsafe(32)
    conn.execute(insert(TOKENS).values(
        token_hash=_digest(token), user_id=user.id, created_at=now, expires_at=now + ttl,
    ))
    return token


def resolve_token(conn: Connection, token: str, now: dt.datetime | None = None) -> User | None:
    """The enabled account an unexpired `token` belongs to, else None."""
    if not token or len(token) > 256:
        return None
    stmt = (
        select(USERS.c.id, USERS.c.username, USERS.c.role, USERS.c.disabled)
        .join(TOKENS, TOKENS.c.user_id == USERS.c.id)
        .where(
            TOKENS.c.token_hash == _digest(token),
            TOKENS.c.expires_at > (now or utcnow()),
            USERS.c.disabled.is_(False),
        )
    )
    row = conn.execute(stmt).first()
    return None if row is None else User(row.id, row.username, row.role, bool(row.disabled))


def revoke_token(conn: Connection, token: str) -> None:
    conn.execute(delete(TOKENS).where(TOKENS.c.token_hash == _digest(token)))


def login_blocked_for(
    conn: Connection,
    client: str,
    now: dt.datetime | None = None,
    max_failures: int = DEFAULT_MAX_FAILURES,
    window: dt.timedelta = DEFAULT_FAILURE_WINDOW,
) -> float:
    """Seconds until `client` may try to log in again (0: now)."""
    now = now or utcnow()
    stmt = select(func.count(), func.min(FAILURES.c.failed_at)).where(
        FAILURES.c.client == client[:64], FAILURES.c.failed_at > now - window
    )
    count, oldest = conn.execute(stmt).one()
    if count < max_failures or oldest is None:
        return 0.0
    return max(1.0, (oldest + window - now).total_seconds())


def record_failure(
    conn: Connection, client: str, now: dt.datetime | None = None,
    window: dt.timedelta = DEFAULT_FAILURE_WINDOW,
) -> None:
    """Count a refused login of `client`; failures older than `window` are swept."""
    now = now or utcnow()
    conn.execute(delete(FAILURES).where(FAILURES.c.failed_at <= now - window))
    conn.execute(insert(FAILURES).values(client=client[:64], failed_at=now))
