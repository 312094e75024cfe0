"""Calpendo's query grammar: ``webdav/q/TYPE/EXPR`` expressions, strict in what we send.

``EXPR := BOOLOP/EXPR/.../CLOSE | PATH/RELATION/VALUE``. Every group is CLOSEd
explicitly and every segment percent-encoded; ``__NULL__`` is the null value and dates
are Calpendo literals (``20140526T1200``, ``20210906``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import quote

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
# How status values are spelled in a query (config.status_case).
STATUS_CASES: dict[str, Callable[[str], str]] = {
    "upper": str.upper,
    "lower": str.lower,
    "as_given": lambda s: s,
}

Day = dt.date | dt.datetime  # window bounds: site-local dates or wall-clock datetimes


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


def segment(text: str) -> str:
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
    return "/".join((segment(path), rel, segment(_value_literal(value))))


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


def unique_folded(values: Iterable[str]) -> tuple[str, ...]:
    """Values without case-insensitive repeats, first spelling kept."""
    seen: dict[str, str] = {}
    for value in values:
        seen.setdefault(value.casefold(), value)
    return tuple(seen.values())


def as_statuses(statuses: str | Iterable[str] | None, case: str = "upper") -> list[str]:
    """One status or many, de-duplicated, in the case the server compares in.

    Calpendo's enums are upper-case and most servers compare case-insensitively; a
    site whose server compares case-sensitively sets ``config.status_case``.
    """
    if statuses is None:
        return []
    if isinstance(statuses, str):
        statuses = [statuses]
    fold = STATUS_CASES[case]
    return list(dict.fromkeys(fold(s.strip()) for s in statuses if s and s.strip()))


def window_expression(
    start: dt.date | dt.datetime,
    end: dt.date | dt.datetime,
    statuses: str | Sequence[str] | None,
    case: str = "upper",
) -> str:
    """Bookings starting in ``[start, end)`` whose status is one of ``statuses``.

    The status alternatives form a CLOSEd OR group inside the AND, so the filter is ANDed
    with the window. No statuses means no status condition.
    """
    parts = [cond("dateRange.start", "GE", start), cond("dateRange.start", "LT", end)]
    wanted = as_statuses(statuses, case)
    if wanted:
        parts.append(or_(*(cond("status", "EQ", s) for s in wanted)))
    return and_(*parts)


@dataclass(frozen=True)
class WindowQuery:
    """The window of one fetch as Calpendo compares it: bookings starting in
    ``[start, end)`` (site-local) whose status is one of ``statuses``, spelled in
    ``case``. Built once per fetch; every request of the fetch uses its `expression`."""

    start: Day
    end: Day
    statuses: str | Sequence[str] | None = None
    case: str = "upper"

    @cached_property
    def expression(self) -> str:
        return window_expression(self.start, self.end, self.statuses, self.case)
