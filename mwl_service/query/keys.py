"""Query keys: which worklist attribute each key of an MWL identifier is, and the parse.

:func:`parse_query` turns a C-FIND identifier into a :class:`WorklistQuery`: the SQL
conditions of its matching keys and the return keys its answers carry.

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
  code and empty when it has none: never copied from the query.

Type 1 keys always carry a value: RequestedProcedureID falls back to the step ID and
PatientID to the accession number when the row has none.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom import Dataset
from pydicom.charset import default_encoding
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from sqlalchemy.sql.elements import ColumnElement

from mwl_service.query import sql
from mwl_service.query.errors import STATUS_IDENTIFIER_DOES_NOT_MATCH, QueryError
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


@dataclass(frozen=True)
class _Attr:
    """A worklist attribute: where its value comes from and how it matches."""

    keyword: str
    vr: str
    column: str | None  # WorklistItem column; None: derived or always empty
    matchable: bool = True
    fallback: str | None = None  # column used when `column` is empty (type 1 keys)
    multi_valued: bool = False  # the column may hold several values (A\B)
    code_prefix: str | None = None  # a code sequence: its columns' common prefix


def _catalogue(*attrs: _Attr) -> dict[int, _Attr]:
    out: dict[int, _Attr] = {}
    for a in attrs:
        tag = tag_for_keyword(a.keyword)
        assert tag is not None, a.keyword
        out[tag] = a
    return out


# Top level of the MWL identifier (PS3.4 Table K.6-1 plus a few harmless extras).
_TOP_LEVEL = _catalogue(
    _Attr("AccessionNumber", "SH", "accession_number"),
    _Attr("ReferringPhysicianName", "PN", "referring_physician_name"),
    _Attr("StudyDescription", "LO", "study_description"),
    _Attr("PatientName", "PN", "patient_name"),
    _Attr("PatientID", "LO", "patient_id", fallback="accession_number"),
    _Attr("IssuerOfPatientID", "LO", None, matchable=False),
    _Attr("PatientBirthDate", "DA", "patient_birth_date"),
    _Attr("PatientSex", "CS", "patient_sex"),
    _Attr("OtherPatientIDs", "LO", "other_patient_ids"),
    _Attr("PatientSize", "DS", "patient_size", matchable=False),
    _Attr("PatientWeight", "DS", "patient_weight", matchable=False),
    _Attr("MedicalAlerts", "LO", "medical_alerts", matchable=False),
    _Attr("Allergies", "LO", "allergies", matchable=False),
    _Attr("PregnancyStatus", "US", "pregnancy_status", matchable=False),
    _Attr("PatientComments", "LT", "patient_comments", matchable=False),
    _Attr("StudyInstanceUID", "UI", "study_instance_uid"),
    _Attr("RequestingPhysician", "PN", "requesting_physician", matchable=False),
    _Attr(
        "RequestedProcedureCodeSequence", "SQ", None, matchable=False,
        code_prefix="requested_procedure",
    ),
    _Attr("AdmissionID", "LO", "admission_id"),
    _Attr("RequestedProcedureDescription", "LO", "requested_procedure_description"),
    _Attr(
        "RequestedProcedureID",
        "SH",
        "requested_procedure_id",
        fallback="scheduled_procedure_step_id",
    ),
    _Attr("RequestedProcedurePriority", "SH", "requested_procedure_priority", matchable=False),
)

# Inside the ScheduledProcedureStepSequence item.
_SPS_ITEM = _catalogue(
    _Attr("Modality", "CS", "modality"),
    _Attr("RequestedContrastAgent", "LO", "requested_contrast_agent", matchable=False),
    _Attr("ScheduledStationAETitle", "AE", "scheduled_station_ae_title", multi_valued=True),
    _Attr("ScheduledProcedureStepStartDate", "DA", "scheduled_start_date"),
    _Attr("ScheduledProcedureStepStartTime", "TM", "scheduled_start_time"),
    _Attr("ScheduledProcedureStepEndDate", "DA", None, matchable=False),
    _Attr("ScheduledProcedureStepEndTime", "TM", None, matchable=False),
    _Attr("ScheduledPerformingPhysicianName", "PN", "performing_physician_name"),
    _Attr("ScheduledProcedureStepDescription", "LO", "scheduled_procedure_step_description"),
    _Attr(
        "ScheduledProtocolCodeSequence", "SQ", None, matchable=False,
        code_prefix="scheduled_protocol",
    ),
    _Attr("ScheduledStationName", "SH", "scheduled_station_name"),
    _Attr("PreMedication", "LO", "pre_medication", matchable=False),
    _Attr("ScheduledProcedureStepLocation", "SH", "scheduled_procedure_step_location"),
    _Attr("ScheduledProcedureStepID", "SH", "scheduled_procedure_step_id"),
    _Attr("ScheduledProcedureStepStatus", "CS", "step_status"),
    _Attr(
        "CommentsOnTheScheduledProcedureStep", "LT", "scheduled_procedure_step_comments",
        matchable=False,
    ),
)

# The item of a code sequence; column names are "<code_prefix>_<suffix>".
_CODE_ITEM = (
    (0x00080100, "CodeValue", "SH", "code_value"),
    (0x00080102, "CodingSchemeDesignator", "SH", "coding_scheme_designator"),
    (0x00080104, "CodeMeaning", "LO", "code_meaning"),
)

_START_DATE = 0x00400002
_START_TIME = 0x00400003
_END_DATE = 0x00400004
_END_TIME = 0x00400005

# Derived values need these columns.
END_COLUMNS = ("scheduled_start_utc", "site_timezone", "duration_minutes")


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
    derived: str | None = None  # "end_date" / "end_time"
    # For a requested sequence: the item's keys (None: zero-length sequence)
    item_keys: tuple[ReturnKey, ...] | None = None


@dataclass
class WorklistQuery:
    """A parsed MWL C-FIND identifier.

    ``conditions`` are SQL boolean expressions over ``WorklistItem`` (AND'ed);
    ``return_keys`` the top-level response keys in tag order, the
    ScheduledProcedureStepSequence among them with its ``item_keys``;
    ``columns`` the WorklistItem columns :func:`build_select` selects, in order.
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


def _code_item_keys(prefix: str, wanted: set[int] | None = None) -> tuple[ReturnKey, ...]:
    keys = [
        ReturnKey(tag, kw, vr, f"{prefix}_{suffix}")
        for tag, kw, vr, suffix in _CODE_ITEM
        if wanted is None or tag in wanted
    ]
    known = {tag for tag, *_ in _CODE_ITEM}
    keys += [_unknown_key(tag, None) for tag in sorted((wanted or set()) - known)]
    return tuple(sorted(keys, key=lambda k: k.tag))


def _return_key(tag: int, elem_vr: str | None, catalogue: dict[int, _Attr]) -> ReturnKey:
    attr = catalogue.get(tag)
    if attr is None:
        return _unknown_key(tag, elem_vr)
    if attr.code_prefix:
        return ReturnKey(
            tag, attr.keyword, "SQ", f"{attr.code_prefix}_code_value",
            item_keys=_code_item_keys(attr.code_prefix),
        )
    derived = {_END_DATE: "end_date", _END_TIME: "end_time"}.get(tag)
    return ReturnKey(tag, attr.keyword, attr.vr, attr.column, attr.fallback, derived)


def _unknown_key(tag: int, elem_vr: str | None) -> ReturnKey:
    vr = elem_vr or ""
    if not vr or vr == "UN" or len(vr) != 2:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = "UN"
    vr = vr.split(" or ")[0]
    return ReturnKey(tag, keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})", vr)


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


def _code_sequence_key(ds: Dataset, tag: int, attr: _Attr) -> ReturnKey:
    """A requested code sequence: the item keys the query names (all for an empty
    sequence or an empty item). Values given in the query are not matched."""
    items = _sequence_items(ds, tag, attr.keyword)
    wanted = set(_query_tags(items[0])) if items else set()
    assert attr.code_prefix
    return ReturnKey(
        tag, attr.keyword, "SQ", f"{attr.code_prefix}_code_value",
        item_keys=_code_item_keys(attr.code_prefix, wanted or None),
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
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError("limit must be a positive int or None")
    if offer_past_days is not None and offer_past_days < 0:
        raise ValueError("offer_past_days must be >= 0 or None")
    if not isinstance(identifier, Dataset):
        raise QueryError("the identifier is not a dataset", STATUS_IDENTIFIER_DOES_NOT_MATCH)

    charset = declared_charset(identifier, default_encoding)
    scs_requested = SCS_TAG in identifier
    scs_value: str | tuple[str, ...] = ""
    if scs_requested:
        value = identifier[SCS_TAG].value
        scs_value = value if isinstance(value, str) else tuple(str(v) for v in value or ())

    conditions: list[ColumnElement[bool]] = []
    matched: list[str] = []
    return_keys: list[ReturnKey] = []

    for tag in _query_tags(identifier):
        if tag == SPS_TAG:
            return_keys.append(_parse_sps(identifier, charset, conditions, matched))
            continue
        attr = _TOP_LEVEL.get(tag)
        if attr is not None and attr.code_prefix:
            return_keys.append(_code_sequence_key(identifier, tag, attr))
            continue
        return_keys.append(_return_key(tag, _elem_vr(identifier, tag), _TOP_LEVEL))
        if attr is not None and attr.matchable and attr.column is not None:
            values = values_or_error(identifier, tag, charset, attr.keyword)
            if _add_matching(attr, values, conditions):
                matched.append(attr.keyword)

    prefix = "ScheduledProcedureStepSequence>"
    status_matched = prefix + "ScheduledProcedureStepStatus" in matched
    if not status_matched:
        conditions.append(sql.status_condition(ACTIVE_STATUSES))
    if calling_station and prefix + "ScheduledStationAETitle" not in matched:
        conditions.append(sql.station_condition(calling_station))
    if offer_past_days is not None and prefix + "ScheduledProcedureStepStartDate" not in matched:
        now = now or dt.datetime.now(dt.timezone.utc)
        conditions.append(sql.started_since(now - dt.timedelta(days=offer_past_days)))

    columns = _needed_columns(return_keys)
    return WorklistQuery(
        conditions=conditions,
        return_keys=tuple(return_keys),
        columns=columns,
        query_character_set=charset,
        specific_character_set_requested=scs_requested,
        specific_character_set=scs_value,
        limit=limit,
        matched_keys=tuple(matched),
        active_only=not status_matched,
    )


def _add_matching(attr: _Attr, values: list[str], conditions: list[ColumnElement[bool]]) -> bool:
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
    prefix = "ScheduledProcedureStepSequence>"
    items = _sequence_items(identifier, SPS_TAG, "ScheduledProcedureStepSequence")
    item_tags = _query_tags(items[0]) if items else []
    if not item_tags:
        # A zero-length sequence or one empty item: universal, the whole step back.
        keys = tuple(_return_key(tag, None, _SPS_ITEM) for tag in sorted(_SPS_ITEM))
        return ReturnKey(SPS_TAG, "ScheduledProcedureStepSequence", "SQ", item_keys=keys)

    item = items[0]
    item_charset = declared_charset(item, charset)
    item_keys: list[ReturnKey] = []
    values_by_tag: dict[int, list[str]] = {}
    for tag in item_tags:
        attr = _SPS_ITEM.get(tag)
        if attr is not None and attr.code_prefix:
            item_keys.append(_code_sequence_key(item, tag, attr))
            continue
        item_keys.append(_return_key(tag, _elem_vr(item, tag), _SPS_ITEM))
        if attr is None or not attr.matchable:
            continue
        values_by_tag[tag] = values_or_error(item, tag, item_charset, attr.keyword)

    date_rng = parse_range(
        values_by_tag.pop(_START_DATE, []), "DA", "ScheduledProcedureStepStartDate"
    )
    # Within a combined date-time range the time part may run "backwards"
    # (2300-0700 over two days); only the combined range must be ordered.
    time_rng = parse_range(
        values_by_tag.pop(_START_TIME, []), "TM", "ScheduledProcedureStepStartTime",
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
        attr = _SPS_ITEM[tag]
        if _add_matching(attr, values, conditions):
            matched.append(prefix + attr.keyword)

    return ReturnKey(
        SPS_TAG, "ScheduledProcedureStepSequence", "SQ", item_keys=tuple(item_keys)
    )


def _needed_columns(keys: Sequence[ReturnKey]) -> tuple[str, ...]:
    cols: dict[str, None] = {}

    def visit(k: ReturnKey) -> None:
        if k.column:
            cols[k.column] = None
        if k.fallback:
            cols[k.fallback] = None
        if k.derived:
            for c in END_COLUMNS:
                cols[c] = None
        for sub in k.item_keys or ():
            visit(sub)

    for k in keys:
        visit(k)
    return tuple(cols)
