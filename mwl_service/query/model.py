"""The parsed C-FIND query: what the SQL builders select and the encoder answers with.

Plain data: :func:`mwl_service.query.keys.parse_query` fills it, :mod:`sql` turns it
into a SELECT, :mod:`mwl_service.encode` into answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydicom.charset import default_encoding
from sqlalchemy.sql.elements import ColumnElement


@dataclass(frozen=True)
class ReturnKey:
    """One requested key of the response: the value source and how to encode it."""

    tag: int
    keyword: str
    vr: str
    # Value source, None: zero length (unless derived). For a sequence with
    # item_keys: the column that must be non-empty for its item to be sent
    # (None: always one item).
    column: str | None = None
    fallback: str | None = None
    # Computed from the row: "end_date", "end_time", "tz_offset"; "uid_pairs": a
    # sequence with one item per UID pair of ``column`` (Referenced Study Sequence).
    derived: str | None = None
    # For a requested sequence: the item's keys (None: zero-length sequence)
    item_keys: tuple[ReturnKey, ...] | None = None
    # For a UID-pair sequence: the SOP Class UIDs and SOP Instance UIDs an item must
    # have to be returned (() = any), as the query's item keys ask.
    item_values: tuple[tuple[str, ...], tuple[str, ...]] | None = None


@dataclass
class WorklistQuery:
    """A parsed MWL C-FIND identifier.

    ``conditions`` are SQL boolean expressions over ``WorklistItem`` (AND'ed);
    ``return_keys`` the top-level response keys in tag order, the
    ScheduledProcedureStepSequence among them with its ``item_keys``;
    ``columns`` the WorklistItem columns :func:`~mwl_service.query.sql.build_select`
    selects, in order.
    """

    conditions: list[ColumnElement[bool]] = field(default_factory=list)
    return_keys: tuple[ReturnKey, ...] = ()
    columns: tuple[str, ...] = ()
    query_character_set: str | list[str] = default_encoding  # Python codec(s)
    specific_character_set_requested: bool = False
    # The query's SpecificCharacterSet value(s) as sent ("" when absent).
    specific_character_set: str | tuple[str, ...] = ""
    limit: int | None = None
    # Keywords matched with a real condition ("Sequence>Item" for item keys): for logs.
    matched_keys: tuple[str, ...] = ()
    # True when no explicit step status was asked for (finished steps excluded).
    active_only: bool = True

    def __post_init__(self) -> None:
        self.index = {name: i for i, name in enumerate(self.columns)}
        # Encoding plans per transfer syntax, compiled by mwl_service.encode.
        self.plans: dict[Any, Any] = {}
