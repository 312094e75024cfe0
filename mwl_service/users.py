"""mwl-api accounts: add, list, disable, change a password, and check one at login.

Accounts live in the worklist database (``api_users``), so every mwl-api replica
sees the same ones. Passwords are hashed with argon2id (argon2-cffi's defaults) and
never stored, logged or echoed. There is no built-in account: the first one is made
with ``calpendo-mwl user add``. Disabling an account or changing its password deletes
its tokens in the same transaction, so every replica refuses them at once.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from mwl_service.schema import ROLES, ApiToken, ApiUser, utcnow

USERS = ApiUser.__table__
TOKENS = ApiToken.__table__

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")

# argon2id with argon2-cffi's default cost (RFC 9106's second recommendation).
hasher = PasswordHasher()


@functools.cache
def _dummy_hash(_hasher: PasswordHasher) -> str:
    """Verified against when the user does not exist, so an unknown name costs the
    same time as a wrong password (no user enumeration by timing)."""
    return _hasher.hash("no such user: a password nobody has")


class UserError(ValueError):
    """An account operation that cannot be done (the message says why, no secret)."""


@dataclass(frozen=True)
class User:
    id: int
    username: str
    role: str
    disabled: bool = False

    def may(self, role: str) -> bool:
        """Whether this account has `role` or a stronger one (read < write < admin)."""
        return ROLES.index(self.role) >= ROLES.index(role)


def check_username(name: str) -> str:
    if not _USERNAME.fullmatch(name or ""):
        raise UserError(
            "a user name is 1 to 64 characters: letters, digits and _ . @ -, "
            "starting with a letter or digit"
        )
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    return role


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise UserError(f"the password must have at most {MAX_PASSWORD_LENGTH} characters")
    return password


def _user(row) -> User:
    return User(row.id, row.username, row.role, bool(row.disabled))


def find_user(conn: Connection, username: str) -> User | None:
    row = conn.execute(select(USERS).where(USERS.c.username == username)).first()
    return None if row is None else _user(row)


def add_user(engine: Engine, username: str, role: str, password: str) -> User:
    check_username(username)
    check_role(role)
    digest = hasher.hash(check_password(password))
    now = utcnow()
    with engine.begin() as conn:
        if find_user(conn, username) is not None:
            raise UserError(f"user {username!r} exists already")
        conn.execute(insert(USERS).values(
            username=username, role=role, password_hash=digest, disabled=False,
            created_at=now, updated_at=now,
        ))
        user = find_user(conn, username)
    assert user is not None
    return user


def list_users(engine: Engine) -> list[dict]:
    """Every account (no hashes), with how many unexpired tokens it holds."""
    now = utcnow()
    live = (
        select(TOKENS.c.user_id, func.count().label("tokens"))
        .where(TOKENS.c.expires_at > now)
        .group_by(TOKENS.c.user_id)
        .subquery()
    )
    stmt = (
        select(USERS.c.username, USERS.c.role, USERS.c.disabled, USERS.c.created_at,
               USERS.c.updated_at, func.coalesce(live.c.tokens, 0).label("tokens"))
        .outerjoin(live, live.c.user_id == USERS.c.id)
        .order_by(USERS.c.username)
    )
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]


def _change(engine: Engine, username: str, values: dict) -> User:
    with engine.begin() as conn:
        user = find_user(conn, username)
        if user is None:
            raise UserError(f"no user {username!r}")
        conn.execute(
            update(USERS).where(USERS.c.id == user.id).values(**values, updated_at=utcnow())
        )
        conn.execute(delete(TOKENS).where(TOKENS.c.user_id == user.id))
        changed = find_user(conn, username)
    assert changed is not None
    return changed


def disable_user(engine: Engine, username: str) -> User:
    """Disable the account and delete its tokens: refused by every replica at once."""
    return _change(engine, username, {"disabled": True})


def set_password(engine: Engine, username: str, password: str) -> User:
    """A new password (its tokens are deleted: sessions log in again)."""
    return _change(engine, username, {"password_hash": hasher.hash(check_password(password))})


def authenticate(conn: Connection, username: str, password: str) -> User | None:
    """The enabled account with this name and password, else None (whichever part was
    wrong). A hash made with older argon2 parameters is upgraded on success."""
    row = conn.execute(select(USERS).where(USERS.c.username == username)).first()
    try:
        hasher.verify(row.password_hash if row is not None else _dummy_hash(hasher), password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None or row.disabled:
        return None
    if hasher.check_needs_rehash(row.password_hash):
        conn.execute(
            update(USERS).where(USERS.c.id == row.id)
            .values(password_hash=hasher.hash(password))
        )
    return _user(row)


def account_counts(conn: Connection) -> dict[str, int]:
    """Enabled accounts per role (for `calpendo-mwl check`)."""
    stmt = (
        select(USERS.c.role, func.count())
        .where(USERS.c.disabled.is_(False))
        .group_by(USERS.c.role)
    )
    return {role: int(n) for role, n in conn.execute(stmt)}
