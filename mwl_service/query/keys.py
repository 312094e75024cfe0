"""Query keys: the parse of an MWL identifier, key by key.

:func:`parse_query` turns a C-FIND identifier into a
:class:`~mwl_service.query.model.WorklistQuery`: the SQL conditions of its matching
keys and the return keys its answers carry (which attribute each key names:
:mod:`mwl_service.query.attributes`).

* Universal matching: an absent key, a zero-length value, a value of only ``*``,
  or a bare ``-`` range: no condition; the key is still returned.
* Sequence matching inside ScheduledProcedureStepSequence (zero or one item). A
  zero-length sequence, or one empty item (DCMTK's ``wlistqry1.dump``, many
  modalities), is universal matching of the whole step: the answer carries every
  attribute of the step (PS3.4 C.2.2.2.6).
* Step status: with no explicit ScheduledProcedureStepStatus (absent, empty, ``*``)
  only SCHEDULED and IN PROGRESS steps are offered; COMPLETED and DISCONTINUED rows
  come back only for a query that asks for that status.
* Steps that started more than ``offer_past_days`` ago are not offered unless the
  query has a Scheduled Procedure Step Start Date.
* ``calling_station``: when the query leaves Scheduled Station AE Title universal,
  only the steps of that station (``mwl-service --station-from-calling-aet``).
* Keys that are return keys only in PS3.4 Table K.6-1 (weight, allergies, codes...)
  and keys the worklist has no data for are returned, a value given for them is
  ignored. Private keys are dropped from the response.
* Code sequences (Scheduled Protocol Code Sequence inside the step, Requested
  Procedure Code Sequence at top level) come back with one item when the row has a
  code and empty when it has none: never copied from the query. Their item holds
  the requested item keys (all four, Coding Scheme Version included, for a
  zero-length sequence or an empty item).
* Referenced Study Sequence is a matching key (sequence matching, PS3.4
  C.2.2.2.6): a zero-length sequence or an empty item matches every row and
  returns all its items whole; item keys with values (List of UID Matching)
  match the rows with an item that has all of them, and only such items come back.
* Timezone Offset From UTC is answered from the site zone at the item's own
  scheduled start; a value given for it is ignored.

Type 1 keys always carry a value: RequestedProcedureID falls back to the step ID and
PatientID to the accession number when the row has none.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from pydicom import Dataset
from pydicom.charset import default_encoding
from sqlalchemy.sql.elements import ColumnElement

from mwl_service.query import sql
from mwl_service.query.attributes import (
    REFERENCED_SOP_CLASS,
    REFERENCED_SOP_INSTANCE,
    SPS_ITEM,
    START_DATE,
    START_TIME,
    TOP_LEVEL,
    Attribute,
    code_item_keys,
    needed_columns,
    return_key,
    uid_pair_item_keys,
)
from mwl_service.query.errors import STATUS_IDENTIFIER_DOES_NOT_MATCH, QueryError
from mwl_service.query.model import ReturnKey, WorklistQuery
from mwl_service.query.values import (
    SCS_TAG,
    check_order,
    declared_charset,
    parse_range,
    values_or_error,
)
from mwl_service.schema import IN_PROGRESS, SCHEDULED

# Offered as work when the query does not ask for a step status.
# COMPLETED and DISCONTINUED steps only answer a query that asks for them.
ACTIVE_STATUSES = (SCHEDULED, IN_PROGRESS)

SPS_TAG = 0x00400100  # ScheduledProcedureStepSequence
_SPS_PREFIX = "ScheduledProcedureStepSequence>"  # how matched item keys are named


def _elem_vr(ds: Dataset, tag: int) -> str | None:
    raw = ds.get_item(tag)
    return getattr(raw, "VR", None)


def _query_tags(ds: Dataset) -> list[int]:
    """The dataset's keys in tag order, without character set, group lengths,
    command/meta groups and private keys."""
    tags = []
    for tag in sorted(int(t) for t in ds.keys()):
        group, element = tag >> 16, tag & 0xFFFF
        if tag == SCS_TAG or element == 0 or group in (0x0000, 0x0002) or group & 1:
            continue
        tags.append(tag)
    return tags


def _sequence_items(ds: Dataset, tag: int, keyword: str) -> list[Dataset]:
    """The items of a sequence key ([] for a zero-length one); QueryError unless it is
    a sequence of zero or one dataset."""
    try:
        seq = ds[tag].value
    except Exception as exc:  # noqa: BLE001
        raise QueryError(
            f"{keyword} cannot be decoded ({exc})", STATUS_IDENTIFIER_DOES_NOT_MATCH
        ) from exc
    if seq is None or seq == "" or seq == b"":
        seq = []
    if isinstance(seq, (str, bytes)) or not isinstance(seq, Sequence):
        raise QueryError(f"{keyword} must be a sequence", STATUS_IDENTIFIER_DOES_NOT_MATCH)
    if len(seq) > 1:
        raise QueryError(
            f"{keyword} must have zero or one item, not {len(seq)}",
            STATUS_IDENTIFIER_DOES_NOT_MATCH,
        )
    if seq and not isinstance(seq[0], Dataset):
        raise QueryError(f"{keyword} item is not a dataset", STATUS_IDENTIFIER_DOES_NOT_MATCH)
    return list(seq)


def _code_sequence_key(ds: Dataset, tag: int, attr: Attribute) -> ReturnKey:
    """A requested code sequence: the item keys the query names (all for an empty
    sequence or an empty item). Values given in the query are not matched."""
    items = _sequence_items(ds, tag, attr.keyword)
    wanted = set(_query_tags(items[0])) if items else set()
    assert attr.code_prefix
    return ReturnKey(
        tag, attr.keyword, "SQ", f"{attr.code_prefix}_code_value",
        item_keys=code_item_keys(attr.code_prefix, wanted or None),
    )


def _uid_pair_sequence_key(
    ds: Dataset,
    tag: int,
    attr: Attribute,
    charset: str | list[str],
    conditions: list[ColumnElement[bool]],
    matched: list[str],
) -> ReturnKey:
    """A requested sequence of UID pairs: its requested item keys (both for a
    zero-length sequence or an empty item), its condition when an item key has
    values, and those values, which the answer's items must have too."""
    items = _sequence_items(ds, tag, attr.keyword)
    item = items[0] if items else None
    wanted = set(_query_tags(item)) if item is not None else set()
    item_charset = declared_charset(item, charset) if item is not None else charset

    def uids(key: int, keyword: str) -> tuple[str, ...]:
        if key not in wanted:
            return ()
        values = values_or_error(item, key, item_charset, keyword)
        return () if any(set(v) == {"*"} for v in values) else tuple(values)

    classes = uids(REFERENCED_SOP_CLASS, "ReferencedSOPClassUID")
    instances = uids(REFERENCED_SOP_INSTANCE, "ReferencedSOPInstanceUID")
    assert attr.column
    cond = sql.uid_pair_condition(attr.column, classes, instances)
    if cond is not None:
        conditions.append(cond)
        matched.append(attr.keyword)
    return ReturnKey(
        tag, attr.keyword, "SQ", attr.column, item_keys=uid_pair_item_keys(wanted or None),
        derived="uid_pairs", item_values=(classes, instances),
    )


def parse_query(
    identifier: Dataset,
    *,
    limit: int | None = None,
    calling_station: str | None = None,
    offer_past_days: float | None = None,
    now: dt.datetime | None = None,
) -> WorklistQuery:
    """Parse a Modality Worklist C-FIND identifier into SQL conditions and return keys.

    ``calling_station``: when given and the query leaves Scheduled Station AE Title
    universal, only steps whose station AE titles include it match.
    ``offer_past_days``: when given and the query has no Scheduled Procedure Step
    Start Date, steps that started more than that many days before ``now`` (default:
    the current time) are not offered.

    Raises :class:`QueryError` for identifiers the matcher cannot serve: a
    ScheduledProcedureStepSequence that is not a sequence of zero or one item
    (status 0xA900), or an unparsable/empty date, time or range (0xC000).
    """
    _check_options(limit, offer_past_days)
    if not isinstance(identifier, Dataset):
        raise QueryError("the identifier is not a dataset", STATUS_IDENTIFIER_DOES_NOT_MATCH)

    charset = declared_charset(identifier, default_encoding)
    conditions: list[ColumnElement[bool]] = []
    matched: list[str] = []
    return_keys = [
        _top_level_key(identifier, tag, charset, conditions, matched)
        for tag in _query_tags(identifier)
    ]
    status_matched = _SPS_PREFIX + "ScheduledProcedureStepStatus" in matched
    conditions += _implied_conditions(
        matched, calling_station=calling_station, offer_past_days=offer_past_days, now=now
    )
    return WorklistQuery(
        conditions=conditions,
        return_keys=tuple(return_keys),
        columns=needed_columns(return_keys),
        query_character_set=charset,
        specific_character_set_requested=SCS_TAG in identifier,
        specific_character_set=_character_set_sent(identifier),
        limit=limit,
        matched_keys=tuple(matched),
        active_only=not status_matched,
    )


def _check_options(limit: int | None, offer_past_days: float | None) -> None:
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError("limit must be a positive int or None")
    if offer_past_days is not None and offer_past_days < 0:
        raise ValueError("offer_past_days must be >= 0 or None")


def _character_set_sent(identifier: Dataset) -> str | tuple[str, ...]:
    """The query's SpecificCharacterSet value(s) as sent; "" when absent."""
    if SCS_TAG not in identifier:
        return ""
    value = identifier[SCS_TAG].value
    return value if isinstance(value, str) else tuple(str(v) for v in value or ())


def _top_level_key(
    identifier: Dataset,
    tag: int,
    charset: str | list[str],
    conditions: list[ColumnElement[bool]],
    matched: list[str],
) -> ReturnKey:
    """The return key of one top-level query key; its condition, if it matches, is
    appended to ``conditions`` and its keyword to ``matched``."""
    if tag == SPS_TAG:
        return _parse_sps(identifier, charset, conditions, matched)
    attr = TOP_LEVEL.get(tag)
    if attr is not None and attr.code_prefix:
        return _code_sequence_key(identifier, tag, attr)
    if attr is not None and attr.uid_pairs:
        return _uid_pair_sequence_key(identifier, tag, attr, charset, conditions, matched)
    key = return_key(tag, _elem_vr(identifier, tag), TOP_LEVEL)
    if attr is not None and attr.matchable and attr.column is not None:
        values = values_or_error(identifier, tag, charset, attr.keyword)
        if _add_matching(attr, values, conditions):
            matched.append(attr.keyword)
    return key


def _implied_conditions(
    matched: list[str],
    *,
    calling_station: str | None,
    offer_past_days: float | None,
    now: dt.datetime | None,
) -> list[ColumnElement[bool]]:
    """What the service adds to a query that leaves a key universal: active steps only
    (no step status), the calling station's (no station), recent ones (no date)."""
    def universal(keyword: str) -> bool:
        return _SPS_PREFIX + keyword not in matched

    conditions = []
    if universal("ScheduledProcedureStepStatus"):
        conditions.append(sql.status_condition(ACTIVE_STATUSES))
    if calling_station and universal("ScheduledStationAETitle"):
        conditions.append(sql.station_condition(calling_station))
    if offer_past_days is not None and universal("ScheduledProcedureStepStartDate"):
        now = now or dt.datetime.now(dt.timezone.utc)
        conditions.append(sql.started_since(now - dt.timedelta(days=offer_past_days)))
    return conditions


def _add_matching(
    attr: Attribute, values: list[str], conditions: list[ColumnElement[bool]]
) -> bool:
    """Append the condition of a matching key's values; False when they are universal."""
    if not values or attr.column is None:
        return False
    if attr.vr in ("DA", "TM"):
        rng = parse_range(values, attr.vr, attr.keyword)
        cond = None if rng is None else sql.range_condition(sql.column(attr.column), rng)
    else:
        cond = sql.string_condition(
            attr.column, attr.vr, values, multi_valued=attr.multi_valued
        )
    if cond is None:
        return False
    conditions.append(cond)
    return True


def _parse_sps(
    identifier: Dataset,
    charset: str | list[str],
    conditions: list[ColumnElement[bool]],
    matched: list[str],
) -> ReturnKey:
    prefix = _SPS_PREFIX
    items = _sequence_items(identifier, SPS_TAG, "ScheduledProcedureStepSequence")
    item_tags = _query_tags(items[0]) if items else []
    if not item_tags:
        # A zero-length sequence or one empty item: universal, the whole step back.
        keys = tuple(return_key(tag, None, SPS_ITEM) for tag in sorted(SPS_ITEM))
        return ReturnKey(SPS_TAG, "ScheduledProcedureStepSequence", "SQ", item_keys=keys)

    item = items[0]
    item_charset = declared_charset(item, charset)
    item_keys: list[ReturnKey] = []
    values_by_tag: dict[int, list[str]] = {}
    for tag in item_tags:
        attr = SPS_ITEM.get(tag)
        if attr is not None and attr.code_prefix:
            item_keys.append(_code_sequence_key(item, tag, attr))
            continue
        item_keys.append(return_key(tag, _elem_vr(item, tag), SPS_ITEM))
        if attr is None or not attr.matchable:
            continue
        values_by_tag[tag] = values_or_error(item, tag, item_charset, attr.keyword)

    date_rng = parse_range(
        values_by_tag.pop(START_DATE, []), "DA", "ScheduledProcedureStepStartDate"
    )
    # Within a combined date-time range the time part may run "backwards"
    # (2300-0700 over two days); only the combined range must be ordered.
    time_rng = parse_range(
        values_by_tag.pop(START_TIME, []), "TM", "ScheduledProcedureStepStartTime",
        ordered=False,
    )
    if date_rng is not None and time_rng is not None:
        conditions.append(sql.datetime_condition(date_rng, time_rng))
        matched += [prefix + "ScheduledProcedureStepStartDate",
                    prefix + "ScheduledProcedureStepStartTime"]
    elif date_rng is not None:
        conditions.append(sql.range_condition(sql.column("scheduled_start_date"), date_rng))
        matched.append(prefix + "ScheduledProcedureStepStartDate")
    elif time_rng is not None:
        check_order(time_rng, "TM", "ScheduledProcedureStepStartTime")
        conditions.append(sql.range_condition(sql.column("scheduled_start_time"), time_rng))
        matched.append(prefix + "ScheduledProcedureStepStartTime")

    for tag, values in values_by_tag.items():
        attr = SPS_ITEM[tag]
        if _add_matching(attr, values, conditions):
            matched.append(prefix + attr.keyword)

    return ReturnKey(
        SPS_TAG, "ScheduledProcedureStepSequence", "SQ", item_keys=tuple(item_keys)
    )
