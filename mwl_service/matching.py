"""C-FIND matching for the Modality Worklist Information Model (DICOM PS3.4 Annex K).

A pure translation from a query identifier (a pydicom ``Dataset``) to a SQL
``SELECT`` over :class:`mwl_service.schema.WorklistItem` plus the response datasets
built from the selected rows. Nothing here knows about associations or pynetdicom
events; the server's C-FIND handler only wires :func:`find_worklist` up (the same
split as pynetdicom's ``apps/qrscp``, which keeps matching in ``db.py``).

Public API::

    QueryError            bad query; ``.status`` is the C-FIND failure status
    WorklistQuery         the parsed query (SQL conditions + requested return keys)
    parse_query(identifier, *, limit=None) -> WorklistQuery
    build_select(query) -> sqlalchemy Select
    row_to_dataset(row, query, *, implicit_vr=False) -> Dataset
    row_to_bytes(row, query, *, implicit_vr=False) -> bytes    (the same answer, encoded)
    find_worklist(conn_or_engine, identifier, *, limit=None, implicit_vr=False)
        -> Iterator[Dataset]
    find_worklist_encoded(conn_or_engine, identifier, *, limit=None, implicit_vr=False)
        -> Iterator[bytes]

Matching (PS3.4 C.2.2.2), all of it in SQL:

* Universal matching: an absent key, a zero-length value, a value of only ``*``,
  or a bare ``-`` range: no condition; the key is still returned.
* Single value matching; several backslash-separated values are OR'ed (List of UID
  matching for UI, the same idea for the other string VRs).
* Wildcards ``*`` and ``?`` for the string VRs that allow them (AE, CS, LO, LT, PN,
  SH, ST, UC, UT), never for DA, TM or UI. SQLite gets ``GLOB`` (case-sensitive,
  ``[`` escaped), PostgreSQL gets ``LIKE ... ESCAPE '!'`` (``%``, ``_`` and ``!``
  escaped): a literal ``_`` or ``%`` in a value is never a wildcard.
* Case: exact for every VR except PN, which matches case-insensitively for the ASCII
  letters A-Z on both back ends (PS3.4 C.2.2.2.1 allows it for PN; technologists
  type names in any case). Accents stay significant: ``Muller`` does not match
  ``Müller``; ``M?ller`` does. DCMTK wlmscpfs is case-sensitive for PN too, so this
  is the one deliberate difference.
* DA and TM range matching ``A-B``, ``-B``, ``A-`` and single values. TM values may be
  ``HH``, ``HHMM``, ``HHMMSS`` or ``HHMMSS.ffffff`` (``HH:MM:SS`` tolerated); a value
  with reduced precision covers its whole unit (``1200`` as an upper bound includes
  12:00:59, as a single value it means 12:00:00-12:00:59). Old ``YYYY.MM.DD`` dates
  are accepted. A range whose start lies after its end is a QueryError (PS3.4 does
  not support time ranges crossing midnight; use a date+time range).
* Scheduled Procedure Step Start Date and Time given together are one combined
  date-time range (PS3.4 C.2.2.2.5): date ``20260101-20260102`` with time
  ``1000-1200`` is 2026-01-01 10:00:00 up to 2026-01-02 12:00:59. A single value is a
  one-value range; an open side of the date range leaves that side unbounded.
  Matched on the site-local columns ``scheduled_start_date``/``scheduled_start_time``.
* Sequence matching inside ScheduledProcedureStepSequence (zero or one item; a
  zero-length sequence asks for the whole sequence back).
* Step status: with no explicit ScheduledProcedureStepStatus (absent, empty, ``*``)
  only SCHEDULED and IN PROGRESS steps are offered; COMPLETED and DISCONTINUED rows
  (finished steps, cancelled bookings) come back only for a query that asks for
  that status (single value or a wildcard that matches it).
* Keys the worklist has no data for (e.g. IssuerOfPatientID, code sequences) are
  returned zero-length and never fail the query; a value given for them is ignored.
  Private keys are dropped from the response.

Responses contain exactly the requested keys (values or zero length; requested
sequences are returned with one item holding exactly the requested item keys).
Type 1 keys always carry a value: RequestedProcedureID falls back to the step ID and
PatientID to the accession number when the row has none.

Character sets: the query is decoded in its declared SpecificCharacterSet (pydicom
decodes values on access with the dataset's character set, sequence items inherit
it); a query without one whose bytes are valid UTF-8 is read as UTF-8, otherwise as
Latin-1. Responses are always encoded in UTF-8: SpecificCharacterSet ``ISO_IR 192``
is added to a response when one of its text values is non-ASCII, or when the query
itself carried SpecificCharacterSet; a pure-ASCII answer to a query without it has
no SpecificCharacterSet (default repertoire, friendliest for old modalities).

Speed: the response datasets hold pre-encoded raw elements (``RawDataElement`` with
UTF-8 values, the sequence item encoded in place) and are marked as originally
encoded in the association's transfer syntax, so pydicom writes them without
converting each element. ``implicit_vr`` selects that syntax (Explicit VR Little
Endian by default, the one the server prefers); a dataset written with another
syntax is still correct, pydicom then converts the elements first. Reading a value
from a response (``ds.PatientName``) works as usual. :func:`row_to_bytes` joins the
same pre-encoded elements into the bytes pydicom would write for that dataset, with
no ``Dataset`` at all: the server's C-FIND fast path sends those bytes as they are.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import struct
import zoneinfo
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom import Dataset
from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.tag import BaseTag
from sqlalchemy import Boolean, Select, String, and_, literal, or_, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.sql.visitors import InternalTraversal

from mwl_service.schema import IN_PROGRESS, SCHEDULED, WorklistItem

__all__ = [
    "ACTIVE_STATUSES",
    "STATUS_IDENTIFIER_DOES_NOT_MATCH",
    "STATUS_UNABLE_TO_PROCESS",
    "QueryError",
    "ReturnKey",
    "WorklistQuery",
    "build_select",
    "find_worklist",
    "find_worklist_encoded",
    "parse_query",
    "row_to_bytes",
    "row_to_dataset",
]

# C-FIND failure statuses (PS3.4 C.4.1.1.4)
STATUS_IDENTIFIER_DOES_NOT_MATCH = 0xA900  # Identifier does not match SOP Class
STATUS_UNABLE_TO_PROCESS = 0xC000  # Unable to process

# Offered as work when the query does not ask for a step status.
# COMPLETED and DISCONTINUED steps only answer a query that asks for them.
ACTIVE_STATUSES = (SCHEDULED, IN_PROGRESS)


class QueryError(ValueError):
    """A C-FIND identifier the matcher refuses; ``status`` is the failure status."""

    def __init__(self, message: str, status: int = STATUS_UNABLE_TO_PROCESS) -> None:
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------- key catalogue


@dataclass(frozen=True)
class _Attr:
    """A worklist attribute: where its value comes from and how it matches."""

    keyword: str
    vr: str
    column: str | None  # WorklistItem column; None: derived or always empty
    matchable: bool = True
    fallback: str | None = None  # column used when `column` is empty (type 1 keys)


def _catalogue(*attrs: _Attr) -> dict[int, _Attr]:
    out: dict[int, _Attr] = {}
    for a in attrs:
        tag = tag_for_keyword(a.keyword)
        assert tag is not None, a.keyword
        out[tag] = a
    return out


_SPS_TAG = 0x00400100  # ScheduledProcedureStepSequence
_SCS_TAG = 0x00080005  # SpecificCharacterSet

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
    _Attr("StudyInstanceUID", "UI", "study_instance_uid"),
    _Attr("AdmissionID", "LO", "admission_id"),
    _Attr("RequestedProcedureDescription", "LO", "requested_procedure_description"),
    _Attr(
        "RequestedProcedureID",
        "SH",
        "requested_procedure_id",
        fallback="scheduled_procedure_step_id",
    ),
)

# Inside the ScheduledProcedureStepSequence item.
_SPS_ITEM = _catalogue(
    _Attr("Modality", "CS", "modality"),
    _Attr("ScheduledStationAETitle", "AE", "scheduled_station_ae_title"),
    _Attr("ScheduledProcedureStepStartDate", "DA", "scheduled_start_date"),
    _Attr("ScheduledProcedureStepStartTime", "TM", "scheduled_start_time"),
    _Attr("ScheduledProcedureStepEndDate", "DA", None, matchable=False),
    _Attr("ScheduledProcedureStepEndTime", "TM", None, matchable=False),
    _Attr("ScheduledPerformingPhysicianName", "PN", "performing_physician_name"),
    _Attr("ScheduledProcedureStepDescription", "LO", "scheduled_procedure_step_description"),
    _Attr("ScheduledStationName", "SH", "scheduled_station_name"),
    _Attr("ScheduledProcedureStepLocation", "SH", "scheduled_procedure_step_location"),
    _Attr("ScheduledProcedureStepID", "SH", "scheduled_procedure_step_id"),
    _Attr("ScheduledProcedureStepStatus", "CS", "step_status"),
)
_START_DATE = 0x00400002
_START_TIME = 0x00400003
_END_DATE = 0x00400004
_END_TIME = 0x00400005

# Derived values need these columns.
_END_COLUMNS = ("scheduled_start_utc", "site_timezone", "duration_minutes")

_WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"})
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST",
                       "TM", "UC", "UI", "UR", "UT"})
# Explicit VR encoding: these VRs have a 2-byte reserved field and a 4-byte length.
_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT",
                       "UV"})


# ---------------------------------------------------------------- the parsed query


@dataclass(frozen=True)
class ReturnKey:
    """One requested key of the response: the value source and how to encode it."""

    tag: int
    keyword: str
    vr: str
    column: str | None = None  # value source, None: zero length (unless derived)
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
    limit: int | None = None
    # Keywords matched with a real condition ("Sequence>Item" for item keys): for logs.
    matched_keys: tuple[str, ...] = ()
    # True when no explicit step status was asked for (finished steps excluded).
    active_only: bool = True

    def __post_init__(self) -> None:
        self._index = {name: i for i, name in enumerate(self.columns)}
        self._plans: dict[bool, _Plan] = {}

    def _plan(self, implicit_vr: bool) -> _Plan:
        plan = self._plans.get(implicit_vr)
        if plan is None:
            plan = self._plans[implicit_vr] = _compile_plan(
                self.return_keys, self._index, implicit_vr
            )
        return plan


# ---------------------------------------------------------------- SQL helpers

_ASCII_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ASCII_LOWER_TABLE = str.maketrans(_ASCII_UPPER, _ASCII_UPPER.lower())


class _ascii_lower(FunctionElement):
    """Lower-case A-Z only: SQLite ``lower()`` (ASCII-only without ICU), elsewhere
    ``translate()``, so PN case folding is identical on both back ends."""

    type = String()
    name = "ascii_lower"
    inherit_cache = True


@compiles(_ascii_lower)
def _ascii_lower_default(element, compiler, **kw):  # sqlite and others
    return f"lower({compiler.process(element.clauses, **kw)})"


@compiles(_ascii_lower, "postgresql")
def _ascii_lower_pg(element, compiler, **kw):
    return (
        f"translate({compiler.process(element.clauses, **kw)}, "
        f"'{_ASCII_UPPER}', '{_ASCII_UPPER.lower()}')"
    )


class _no_index(FunctionElement):
    """The column, kept out of SQLite's index choice (unary ``+``; a no-op elsewhere).

    Used for the default step-status filter: without statistics SQLite would
    otherwise pick the status+date index (status matches nearly every row) over the
    selective patient/station/date indexes.
    """

    type = String()
    name = "no_index"
    inherit_cache = True


@compiles(_no_index)
def _no_index_default(element, compiler, **kw):
    return compiler.process(element.clauses, **kw)


@compiles(_no_index, "sqlite")
def _no_index_sqlite(element, compiler, **kw):
    return f"+{compiler.process(element.clauses, **kw)}"


class _WildcardMatch(ColumnElement[bool]):
    """``expr`` matches a DICOM wildcard pattern, case-sensitively on every back end.

    Carries the pattern translated both ways as bound parameters and renders the one
    its dialect needs: SQLite ``GLOB`` (its ``LIKE`` ignores ASCII case), otherwise
    ``LIKE ... ESCAPE '!'`` (PostgreSQL ``LIKE`` is case-sensitive).
    """

    __visit_name__ = "dicom_wildcard_match"
    type = Boolean()
    inherit_cache = True
    _is_implicitly_boolean = True  # a comparison: no "= 1" around it on SQLite
    _traverse_internals = [
        ("expr", InternalTraversal.dp_clauseelement),
        ("like_pattern", InternalTraversal.dp_clauseelement),
        ("glob_pattern", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, expr: ColumnElement[Any], pattern: str) -> None:
        self.expr = expr
        self.like_pattern = literal(_like_pattern(pattern), String())
        self.glob_pattern = literal(_glob_pattern(pattern), String())


@compiles(_WildcardMatch)
def _wildcard_like(element, compiler, **kw):
    return (
        f"({compiler.process(element.expr, **kw)} LIKE "
        f"{compiler.process(element.like_pattern, **kw)} ESCAPE '!')"
    )


@compiles(_WildcardMatch, "sqlite")
def _wildcard_glob(element, compiler, **kw):
    return (
        f"({compiler.process(element.expr, **kw)} GLOB "
        f"{compiler.process(element.glob_pattern, **kw)})"
    )


def _like_pattern(pattern: str) -> str:
    out = []
    for ch in pattern:
        if ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        elif ch in "%_!":
            out.append("!" + ch)
        else:
            out.append(ch)
    return "".join(out)


def _glob_pattern(pattern: str) -> str:
    # DICOM `*`/`?` are GLOB's; only `[` opens a character class and needs escaping.
    return pattern.replace("[", "[[]")


def _column(name: str) -> ColumnElement[Any]:
    return WorklistItem.__table__.c[name]


# ---------------------------------------------------------------- value parsing


def _decoded_values(ds: Dataset, tag: int, charset: str | list[str]) -> list[str]:
    """The element's values as stripped strings; [] when zero length."""
    raw = ds.get_item(tag)
    if raw is None:
        return []
    value: Any
    if (
        isinstance(raw, RawDataElement)
        and raw.value
        and raw.VR not in ("SQ", "UN")
        and not raw.value.isascii()
        and charset == default_encoding
        and _SCS_TAG not in ds
    ):
        # No declared character set but non-ASCII bytes: UTF-8 if it decodes.
        try:
            value = raw.value.decode("utf-8").split("\\")
        except UnicodeDecodeError:
            value = ds[tag].value
    else:
        value = ds[tag].value
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        value = [value]
    out = []
    for v in value:
        if isinstance(v, bytes):
            v = v.decode("latin-1")
        s = str(v).strip(" \x00")
        if s:
            out.append(s)
    return out


def _values_or_error(ds: Dataset, tag: int, charset: str | list[str], keyword: str) -> list[str]:
    try:
        return _decoded_values(ds, tag, charset)
    except Exception as exc:  # noqa: BLE001 - an undecodable value is the query's fault
        raise QueryError(f"{keyword}: value cannot be decoded ({exc})") from exc


def _declared_charset(ds: Dataset, inherited: str | list[str]) -> str | list[str]:
    """Python codec(s) for the dataset's SpecificCharacterSet, else the inherited ones."""
    if _SCS_TAG not in ds:
        return inherited
    try:
        value = ds[_SCS_TAG].value
        return convert_encodings(value) if value else inherited
    except Exception as exc:  # noqa: BLE001
        raise QueryError(f"SpecificCharacterSet: {exc}") from exc


_DA_RE = re.compile(r"(\d{4})\.?(\d{2})\.?(\d{2})")
_TM_RE = re.compile(r"(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d{1,6}))?)?)?")


def _parse_date(text: str, keyword: str) -> str:
    m = _DA_RE.fullmatch(text)
    if m and ("." not in text or text.count(".") == 2):
        try:
            dt.date(int(m[1]), int(m[2]), int(m[3]))
        except ValueError:
            pass
        else:
            return m[1] + m[2] + m[3]
    raise QueryError(f"{keyword}: {text!r} is not a valid date (YYYYMMDD)")


def _parse_time(text: str, keyword: str) -> tuple[str, str]:
    """(first HHMMSS covered, last HHMMSS covered) by a TM of any precision."""
    m = _TM_RE.fullmatch(text)
    if m:
        hh, mm, ss = m[1], m[2], m[3]
        if int(hh) <= 23 and (mm is None or int(mm) <= 59) and (ss is None or int(ss) <= 60):
            ss_hi = "59" if ss is None or ss == "60" else ss
            return hh + (mm or "00") + (ss or "00"), hh + (mm or "59") + ss_hi
    raise QueryError(f"{keyword}: {text!r} is not a valid time (HHMMSS)")


@dataclass(frozen=True)
class _Range:
    """Inclusive bounds of a DA or TM key; None = open side."""

    lo: str | None
    hi: str | None
    single: bool


def _parse_range(
    values: list[str], vr: str, keyword: str, *, ordered: bool = True
) -> _Range | None:
    """None for universal matching; ``ordered``: refuse a range that ends before it starts."""
    if not values:
        return None
    if len(values) > 1:
        raise QueryError(f"{keyword}: multiple values are not supported for {vr} matching")
    text = values[0].replace(" ", "")
    if text == "*" or text == "-":
        return None
    if text.count("-") > 1:
        raise QueryError(f"{keyword}: {text!r} is not a valid {vr} range")

    def lo_of(part: str) -> str:
        return _parse_date(part, keyword) if vr == "DA" else _parse_time(part, keyword)[0]

    def hi_of(part: str) -> str:
        return _parse_date(part, keyword) if vr == "DA" else _parse_time(part, keyword)[1]

    if "-" not in text:
        return _Range(lo_of(text), hi_of(text), single=True)
    a, b = text.split("-")
    rng = _Range(lo_of(a) if a else None, hi_of(b) if b else None, single=False)
    if ordered:
        _check_order(rng, vr, keyword)
    return rng


def _check_order(rng: _Range, vr: str, keyword: str) -> None:
    if rng.lo is not None and rng.hi is not None and rng.lo > rng.hi:
        raise QueryError(
            f"{keyword}: the range starts after it ends"
            + (" (time ranges crossing midnight are not supported)" if vr == "TM" else "")
        )


# ---------------------------------------------------------------- conditions


def _string_condition(attr: _Attr, values: list[str]) -> ColumnElement[bool] | None:
    col = _column(attr.column)  # type: ignore[arg-type]
    if any(set(v) == {"*"} for v in values):
        return None
    wildcard_ok = attr.vr in _WILDCARD_VRS
    case_fold = attr.vr == "PN"
    target = _ascii_lower(col) if case_fold else col
    exact: list[str] = []
    clauses: list[ColumnElement[bool]] = []
    for v in values:
        if attr.vr == "PN":
            v = v.rstrip("^= ")  # trailing empty components are insignificant
            if not v:
                return None  # "^^" is as universal as an empty name
        if case_fold:
            v = v.translate(_ASCII_LOWER_TABLE)
        if wildcard_ok and ("*" in v or "?" in v):
            clauses.append(_WildcardMatch(target, v))
        else:
            exact.append(v)
    if len(exact) == 1:
        clauses.append(target == exact[0])
    elif exact:
        clauses.append(target.in_(exact))
    return clauses[0] if len(clauses) == 1 else or_(*clauses)


def _range_condition(col: ColumnElement[Any], rng: _Range) -> ColumnElement[bool]:
    if rng.single and rng.lo == rng.hi:
        return col == rng.lo
    parts: list[ColumnElement[bool]] = []
    if rng.lo is not None:
        parts.append(col >= rng.lo)
    else:
        parts.append(col != "")  # an empty value is not "before" anything
    if rng.hi is not None:
        parts.append(col <= rng.hi)
    return and_(*parts)


def _datetime_condition(date: _Range, time: _Range) -> ColumnElement[bool]:
    """One combined date-time range over (scheduled_start_date, scheduled_start_time)."""
    d, t = _column("scheduled_start_date"), _column("scheduled_start_time")
    lo = None if date.lo is None else (date.lo, time.lo or "000000")
    hi = None if date.hi is None else (date.hi, time.hi or "235959")
    if lo and hi and lo > hi:
        raise QueryError("ScheduledProcedureStepStartDate/Time: the range starts after it ends")
    parts: list[ColumnElement[bool]] = []
    if lo:
        parts.append(d >= lo[0])  # the index-friendly bound
        if lo[1] != "000000":
            parts.append(or_(d > lo[0], t >= lo[1]))
    if hi:
        parts.append(d <= hi[0])
        if hi[1] < "235959":
            parts.append(or_(d < hi[0], t <= hi[1]))
    return and_(*parts)


# ---------------------------------------------------------------- parse_query


def _return_key(tag: int, elem_vr: str | None, catalogue: dict[int, _Attr]) -> ReturnKey:
    attr = catalogue.get(tag)
    if attr is not None:
        derived = {_END_DATE: "end_date", _END_TIME: "end_time"}.get(tag)
        return ReturnKey(tag, attr.keyword, attr.vr, attr.column, attr.fallback, derived)
    vr = elem_vr or ""
    if not vr or vr == "UN" or len(vr) != 2:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = "UN"
    vr = vr.split(" or ")[0]
    return ReturnKey(tag, keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})", vr,
                     item_keys=() if vr == "SQ" else None)


def _elem_vr(ds: Dataset, tag: int) -> str | None:
    raw = ds.get_item(tag)
    return getattr(raw, "VR", None)


def parse_query(identifier: Dataset, *, limit: int | None = None) -> WorklistQuery:
    """Parse a Modality Worklist C-FIND identifier into SQL conditions and return keys.

    Raises :class:`QueryError` for identifiers the matcher cannot serve: a
    ScheduledProcedureStepSequence that is not a sequence of zero or one item
    (status 0xA900), or an unparsable/empty date, time or range (0xC000).
    """
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError("limit must be a positive int or None")
    if not isinstance(identifier, Dataset):
        raise QueryError("the identifier is not a dataset", STATUS_IDENTIFIER_DOES_NOT_MATCH)

    charset = _declared_charset(identifier, default_encoding)
    scs_requested = _SCS_TAG in identifier

    conditions: list[ColumnElement[bool]] = []
    matched: list[str] = []
    return_keys: list[ReturnKey] = []

    def add_matching(attr: _Attr, values: list[str]) -> None:
        if not values or attr.column is None:
            return
        if attr.vr in ("DA", "TM"):
            rng = _parse_range(values, attr.vr, attr.keyword)
            cond = None if rng is None else _range_condition(_column(attr.column), rng)
        else:
            cond = _string_condition(attr, values)
        if cond is not None:
            conditions.append(cond)
            matched.append(attr.keyword)

    for tag in sorted(int(t) for t in identifier.keys()):
        group, element = tag >> 16, tag & 0xFFFF
        if tag == _SCS_TAG or element == 0 or group in (0x0000, 0x0002) or group & 1:
            continue  # character set, group lengths, command/meta, private keys
        if tag == _SPS_TAG:
            return_keys.append(_parse_sps(identifier, charset, conditions, matched))
            continue
        return_keys.append(_return_key(tag, _elem_vr(identifier, tag), _TOP_LEVEL))
        attr = _TOP_LEVEL.get(tag)
        if attr is not None and attr.matchable:
            add_matching(attr, _values_or_error(identifier, tag, charset, attr.keyword))

    status_matched = "ScheduledProcedureStepSequence>ScheduledProcedureStepStatus" in matched
    if not status_matched:
        conditions.append(_no_index(_column("step_status")).in_(ACTIVE_STATUSES))

    columns = _needed_columns(return_keys)
    return WorklistQuery(
        conditions=conditions,
        return_keys=tuple(return_keys),
        columns=columns,
        query_character_set=charset,
        specific_character_set_requested=scs_requested,
        limit=limit,
        matched_keys=tuple(matched),
        active_only=not status_matched,
    )


def _parse_sps(
    identifier: Dataset,
    charset: str | list[str],
    conditions: list[ColumnElement[bool]],
    matched: list[str],
) -> ReturnKey:
    prefix = "ScheduledProcedureStepSequence>"
    try:
        seq = identifier[_SPS_TAG].value
    except Exception as exc:  # noqa: BLE001
        raise QueryError(
            f"ScheduledProcedureStepSequence cannot be decoded ({exc})",
            STATUS_IDENTIFIER_DOES_NOT_MATCH,
        ) from exc
    if seq is None or seq == "" or seq == b"":
        seq = []
    if isinstance(seq, (str, bytes)) or not isinstance(seq, Sequence):
        raise QueryError(
            "ScheduledProcedureStepSequence must be a sequence", STATUS_IDENTIFIER_DOES_NOT_MATCH
        )
    if len(seq) > 1:
        raise QueryError(
            f"ScheduledProcedureStepSequence must have zero or one item, not {len(seq)}",
            STATUS_IDENTIFIER_DOES_NOT_MATCH,
        )
    if not seq:
        # Zero-length sequence: universal, return the whole item.
        items = tuple(_return_key(tag, None, _SPS_ITEM) for tag in sorted(_SPS_ITEM))
        return ReturnKey(_SPS_TAG, "ScheduledProcedureStepSequence", "SQ", item_keys=items)

    item = seq[0]
    if not isinstance(item, Dataset):
        raise QueryError(
            "ScheduledProcedureStepSequence item is not a dataset",
            STATUS_IDENTIFIER_DOES_NOT_MATCH,
        )
    item_charset = _declared_charset(item, charset)
    item_keys: list[ReturnKey] = []
    values_by_tag: dict[int, list[str]] = {}
    for tag in sorted(int(t) for t in item.keys()):
        group, element = tag >> 16, tag & 0xFFFF
        if tag == _SCS_TAG or element == 0 or group & 1:
            continue
        item_keys.append(_return_key(tag, _elem_vr(item, tag), _SPS_ITEM))
        attr = _SPS_ITEM.get(tag)
        if attr is None or not attr.matchable:
            continue
        values_by_tag[tag] = _values_or_error(item, tag, item_charset, attr.keyword)

    date_rng = _parse_range(
        values_by_tag.pop(_START_DATE, []), "DA", "ScheduledProcedureStepStartDate"
    )
    # Within a combined date-time range the time part may run "backwards"
    # (2300-0700 over two days); only the combined range must be ordered.
    time_rng = _parse_range(
        values_by_tag.pop(_START_TIME, []), "TM", "ScheduledProcedureStepStartTime",
        ordered=False,
    )
    if date_rng is not None and time_rng is not None:
        conditions.append(_datetime_condition(date_rng, time_rng))
        matched += [prefix + "ScheduledProcedureStepStartDate",
                    prefix + "ScheduledProcedureStepStartTime"]
    elif date_rng is not None:
        conditions.append(_range_condition(_column("scheduled_start_date"), date_rng))
        matched.append(prefix + "ScheduledProcedureStepStartDate")
    elif time_rng is not None:
        _check_order(time_rng, "TM", "ScheduledProcedureStepStartTime")
        conditions.append(_range_condition(_column("scheduled_start_time"), time_rng))
        matched.append(prefix + "ScheduledProcedureStepStartTime")

    for tag, values in values_by_tag.items():
        attr = _SPS_ITEM[tag]
        if not values:
            continue
        cond = _string_condition(attr, values)
        if cond is not None:
            conditions.append(cond)
            matched.append(prefix + attr.keyword)

    return ReturnKey(
        _SPS_TAG, "ScheduledProcedureStepSequence", "SQ", item_keys=tuple(item_keys)
    )


def _needed_columns(keys: Sequence[ReturnKey]) -> tuple[str, ...]:
    cols: dict[str, None] = {}

    def visit(k: ReturnKey) -> None:
        if k.column:
            cols[k.column] = None
        if k.fallback:
            cols[k.fallback] = None
        if k.derived:
            for c in _END_COLUMNS:
                cols[c] = None
        for sub in k.item_keys or ():
            visit(sub)

    for k in keys:
        visit(k)
    return tuple(cols)


# ---------------------------------------------------------------- build_select


def build_select(query: WorklistQuery) -> Select[Any]:
    """SELECT the query's columns (in ``query.columns`` order) over the worklist.

    Ordered by scheduled start then id; LIMIT when the query has one.
    """
    table = WorklistItem.__table__
    cols = [table.c[name] for name in query.columns] or [table.c.id]
    stmt = select(*cols).where(*query.conditions).order_by(
        table.c.scheduled_start_utc, table.c.id
    )
    if query.limit is not None:
        stmt = stmt.limit(query.limit)
    return stmt


# ---------------------------------------------------------------- response datasets

# A response is built from a plan compiled once per query: one tuple per requested
# key, in tag order, with everything that does not depend on the row precomputed
# (tag, VR, value source, padding, the encoded element header inside the item).

_K_EMPTY, _K_COLUMN, _K_END_DATE, _K_END_TIME, _K_SEQ = range(5)

_ITEM_TAG = struct.pack("<HH", 0xFFFE, 0xE000)
_PACK_H = struct.Struct("<H").pack
_PACK_I = struct.Struct("<I").pack
_UTF8_CHARSET = convert_encodings("ISO_IR 192")
_SCS_BASETAG = BaseTag(_SCS_TAG)
_SCS_BYTES = b"ISO_IR 192"


@dataclass(frozen=True)
class _Plan:
    """Per transfer syntax: the top-level steps and the SPS item's steps.

    A step is ``(tag, vr, kind, index, fallback, pad, text, header, long_length)``;
    ``header`` is the element's encoded tag (+VR, +reserved bytes), ``long_length``
    whether its length field has 4 bytes. ``sps_at`` is the position of the
    ScheduledProcedureStepSequence among the top steps (-1: not requested);
    ``scs_at`` where SpecificCharacterSet goes among them (tag order) when an answer
    needs it, and ``scs_element`` that element fully encoded.
    """

    top: tuple[tuple[Any, ...], ...]
    item: tuple[tuple[Any, ...], ...] | None  # None: no SPS item requested
    sps_at: int
    scs_at: int
    scs_element: bytes


def _element_header(tag: int, vr: str, implicit_vr: bool) -> tuple[bytes, bool]:
    """The encoded tag (+VR, +reserved bytes) of an element, and whether its length
    field has 4 bytes (Little Endian; PS3.5 7.1.2 and 7.1.3)."""
    group, element = tag >> 16, tag & 0xFFFF
    if implicit_vr:
        return struct.pack("<HH", group, element), True
    if vr in _LONG_VRS:
        return struct.pack("<HH2sH", group, element, vr.encode(), 0), True
    return struct.pack("<HH2s", group, element, vr.encode()), False


def _steps(keys: Sequence[ReturnKey], index: dict[str, int], implicit_vr: bool) -> tuple:
    steps = []
    for k in keys:
        if k.vr == "SQ":
            kind, idx = _K_SEQ, -1
        elif k.derived == "end_date":
            kind, idx = _K_END_DATE, -1
        elif k.derived == "end_time":
            kind, idx = _K_END_TIME, -1
        elif k.column and k.column in index:
            kind, idx = _K_COLUMN, index[k.column]
        else:
            kind, idx = _K_EMPTY, -1
        fallback = index.get(k.fallback, -1) if k.fallback else -1
        header, long_length = _element_header(k.tag, k.vr, implicit_vr)
        steps.append((
            BaseTag(k.tag), k.vr, kind, idx, fallback, b"\x00" if k.vr == "UI" else b" ",
            k.vr in _TEXT_VRS, header, long_length,
        ))
    return tuple(steps)


def _compile_plan(keys: Sequence[ReturnKey], index: dict[str, int], implicit_vr: bool) -> _Plan:
    top = _steps(keys, index, implicit_vr)
    tags = [k.tag for k in keys]
    sps_at = -1
    item = None
    if _SPS_TAG in tags:
        sps = keys[tags.index(_SPS_TAG)]
        if sps.item_keys is not None:
            sps_at = tags.index(_SPS_TAG)
            item = _steps(sps.item_keys, index, implicit_vr)
    header, long_length = _element_header(_SCS_TAG, "CS", implicit_vr)
    scs_element = header + (_PACK_I if long_length else _PACK_H)(len(_SCS_BYTES)) + _SCS_BYTES
    scs_at = sum(1 for t in tags if t < _SCS_TAG)
    return _Plan(top, item, sps_at, scs_at, scs_element)


@functools.lru_cache(maxsize=64)
def _zone(name: str) -> zoneinfo.ZoneInfo | dt.timezone:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return dt.timezone.utc


def _derived_end(kind: int, values: Sequence[Any], index: dict[str, int]) -> str:
    """Scheduled end (start + duration) as site-local DA or TM; '' without a duration."""
    start = values[index["scheduled_start_utc"]]
    minutes = values[index["duration_minutes"]]
    if start is None or not minutes:
        return ""
    if start.tzinfo is None:
        start = start.replace(tzinfo=dt.timezone.utc)
    end = (start + dt.timedelta(minutes=int(minutes))).astimezone(
        _zone(values[index["site_timezone"]] or "UTC")
    )
    return end.strftime("%Y%m%d" if kind == _K_END_DATE else "%H%M%S")


def _encode_values(
    steps: tuple, values: Sequence[Any], index: dict[str, int]
) -> tuple[list[bytes], bool]:
    """The encoded value of every step (SQ steps: b"") and whether any text is non-ASCII."""
    out = []
    non_ascii = False
    for _tag, _vr, kind, idx, fallback, pad, is_text, _hdr, _long in steps:
        if kind == _K_COLUMN:
            v = values[idx]
            if not v and fallback >= 0:
                v = values[fallback]
            if v is None:
                out.append(b"")
                continue
        elif kind == _K_END_DATE or kind == _K_END_TIME:
            v = _derived_end(kind, values, index)
        else:
            out.append(b"")
            continue
        b = (v if v.__class__ is str else str(v)).encode("utf-8")
        if len(b) & 1:
            b += pad
        if is_text and not non_ascii and not b.isascii():
            non_ascii = True
        out.append(b)
    return out, non_ascii


def _join(steps: tuple, encoded: Sequence[bytes]) -> bytes:
    """The elements of ``steps`` with their encoded values: header, length, value."""
    parts = []
    for step, b in zip(steps, encoded):
        parts.append(step[7])  # header
        parts.append(_PACK_I(len(b)) if step[8] else _PACK_H(len(b)))
        parts.append(b)
    return b"".join(parts)


def _encode_item(steps: tuple, values: Sequence[Any], index: dict[str, int]) -> tuple[bytes, bool]:
    """The SPS item (item tag, length, its elements) and whether any text is non-ASCII."""
    encoded, non_ascii = _encode_values(steps, values, index)
    body = _join(steps, encoded)
    return _ITEM_TAG + _PACK_I(len(body)) + body, non_ascii


def _encode_row(plan: _Plan, values: Sequence[Any], index: dict[str, int]) -> tuple[list[bytes], bool]:
    """The encoded value of every top-level step, the SPS item encoded in place of the
    sequence's value; and whether any text is non-ASCII. Shared by the dataset and the
    bytes form of an answer, so both carry the same bytes."""
    encoded, non_ascii = _encode_values(plan.top, values, index)
    if plan.sps_at >= 0:
        encoded[plan.sps_at], item_non_ascii = _encode_item(plan.item, values, index)
        non_ascii = non_ascii or item_non_ascii
    return encoded, non_ascii


def _row_values(row: Any, query: WorklistQuery) -> Sequence[Any]:
    if isinstance(row, WorklistItem):
        return tuple(getattr(row, c) for c in query.columns)
    return row


# A Dataset built from a prepared attribute state: Dataset.__init__ routes each of its
# ~15 attribute assignments through Dataset.__setattr__ (a keyword lookup each),
# which costs more than all the elements of a worklist answer together.
_TEMPLATE_STATE = dict(Dataset().__dict__)
_MUTABLE_STATE = tuple(k for k, v in _TEMPLATE_STATE.items() if isinstance(v, (dict, list, set)))


def _new_dataset(elements: dict[BaseTag, Any], implicit_vr: bool, charset: Any) -> Dataset:
    ds = object.__new__(Dataset)
    state = dict(_TEMPLATE_STATE)
    for name in _MUTABLE_STATE:
        state[name] = _TEMPLATE_STATE[name].copy()
    state["_dict"] = elements
    # Mark as originally encoded in the target syntax so pydicom writes the raw
    # elements as they are (what Dataset.set_original_encoding does).
    state["_read_implicit"] = implicit_vr
    state["_read_little"] = True
    state["_read_charset"] = charset
    object.__setattr__(ds, "__dict__", state)
    return ds


_new_raw = tuple.__new__  # RawDataElement is a NamedTuple; skip its keyword-arg wrapper


def row_to_dataset(row: Any, query: WorklistQuery, *, implicit_vr: bool = False) -> Dataset:
    """The C-FIND response identifier for one row: exactly the requested keys.

    ``row`` is a row of :func:`build_select` (values in ``query.columns`` order) or a
    ``WorklistItem``. ``implicit_vr`` names the transfer syntax the dataset will be
    written in (Little Endian), which makes writing it cheap; any syntax is correct.
    """
    plan = query._plan(implicit_vr)
    encoded, non_ascii = _encode_row(plan, _row_values(row, query), query._index)
    elements: dict[BaseTag, Any] = {}
    for step, b in zip(plan.top, encoded):
        tag = step[0]
        elements[tag] = _new_raw(
            RawDataElement, (tag, step[1], len(b), b, 0, implicit_vr, True, True, False)
        )
    if non_ascii or query.specific_character_set_requested:
        elements[_SCS_BASETAG] = _new_raw(
            RawDataElement,
            (_SCS_BASETAG, "CS", len(_SCS_BYTES), _SCS_BYTES, 0, implicit_vr, True, True, False),
        )
        charset: Any = _UTF8_CHARSET
    else:
        charset = default_encoding
    return _new_dataset(elements, implicit_vr, charset)


def row_to_bytes(row: Any, query: WorklistQuery, *, implicit_vr: bool = False) -> bytes:
    """The same answer as :func:`row_to_dataset`, already encoded: exactly the bytes
    pydicom writes for that dataset in Implicit (``implicit_vr``) or Explicit VR
    Little Endian, without building a ``Dataset``.

    For the server's C-FIND fast path, which puts these bytes on the wire itself;
    an empty result (the query requested no keys) is ``b""``.
    """
    plan = query._plan(implicit_vr)
    encoded, non_ascii = _encode_row(plan, _row_values(row, query), query._index)
    if not (non_ascii or query.specific_character_set_requested):
        return _join(plan.top, encoded)
    at = plan.scs_at
    if at == 0:  # the usual case: no requested key sorts before (0008,0005)
        return plan.scs_element + _join(plan.top, encoded)
    return _join(plan.top[:at], encoded[:at]) + plan.scs_element + _join(
        plan.top[at:], encoded[at:]
    )


# ---------------------------------------------------------------- find_worklist


def find_worklist(
    conn_or_engine: Connection | Engine,
    identifier: Dataset,
    *,
    limit: int | None = None,
    implicit_vr: bool = False,
) -> Iterator[Dataset]:
    """Parse ``identifier`` (raising :class:`QueryError` at once), then lazily yield
    one response dataset per matching row, streaming rows from the database.

    Given an Engine, a connection is opened for the iteration and closed when it
    ends (or when the iterator is closed); a Connection is used as it is.
    """
    return _find(conn_or_engine, identifier, limit, implicit_vr, row_to_dataset)


def find_worklist_encoded(
    conn_or_engine: Connection | Engine,
    identifier: Dataset,
    *,
    limit: int | None = None,
    implicit_vr: bool = False,
) -> Iterator[bytes]:
    """As :func:`find_worklist`, but yields each answer encoded (:func:`row_to_bytes`)
    in Implicit (``implicit_vr``) or Explicit VR Little Endian."""
    return _find(conn_or_engine, identifier, limit, implicit_vr, row_to_bytes)


def _find(
    conn_or_engine: Connection | Engine,
    identifier: Dataset,
    limit: int | None,
    implicit_vr: bool,
    convert: Any,
) -> Iterator[Any]:
    query = parse_query(identifier, limit=limit)
    stmt = build_select(query).execution_options(stream_results=True, yield_per=500)
    return _iterate(conn_or_engine, stmt, query, implicit_vr, convert)


def _iterate(
    conn_or_engine: Connection | Engine,
    stmt: Select[Any],
    query: WorklistQuery,
    implicit_vr: bool,
    convert: Any,
) -> Iterator[Any]:
    if isinstance(conn_or_engine, Engine):
        with conn_or_engine.connect() as conn:
            yield from _rows(conn, stmt, query, implicit_vr, convert)
    else:
        yield from _rows(conn_or_engine, stmt, query, implicit_vr, convert)


def _rows(
    conn: Connection, stmt: Select[Any], query: WorklistQuery, implicit_vr: bool, convert: Any
) -> Iterator[Any]:
    result = conn.execute(stmt)
    try:
        for row in result:
            yield convert(row, query, implicit_vr=implicit_vr)
    finally:
        result.close()
