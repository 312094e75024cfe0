"""Answer encoding: one C-FIND response identifier per worklist row.

Public API::

    row_to_dataset(row, query, *, implicit_vr=False) -> Dataset
    row_to_bytes(row, query, *, implicit_vr=False) -> bytes    (the same answer, encoded)

Responses contain exactly the requested keys (values or zero length). A requested
ScheduledProcedureStepSequence comes back with one item holding exactly the
requested item keys; a code sequence with one item when the row has a code, else
empty; Referenced Study Sequence with one item per UID pair of the row that the
query's item keys match; any other sequence empty. Timezone Offset From UTC is the
site zone's offset at the item's scheduled start.

Character sets: an answer to a query in a single-byte character set (``ISO_IR 100``
and the other ISO 8859 sets of PS3.3 C.12.1.1.2) is encoded in that set when every
value is representable in it, else in UTF-8 (``ISO_IR 192``): Latin-1-only consoles
get Latin-1. Otherwise answers are UTF-8, with SpecificCharacterSet ``ISO_IR 192``
when a text value is non-ASCII or the query carried a SpecificCharacterSet; a
pure-ASCII answer to a query without one has no SpecificCharacterSet (default
repertoire, friendliest for old modalities).

Speed: the response datasets hold pre-encoded raw elements (``RawDataElement`` with
encoded values, sequence items encoded in place) and are marked as originally
encoded in the association's transfer syntax, so pydicom writes them without
converting each element. ``implicit_vr`` selects that syntax (Explicit VR Little
Endian by default). :func:`row_to_bytes` joins the same pre-encoded elements into
the bytes pydicom would write for that dataset, with no ``Dataset`` at all: the
server's C-FIND fast path sends those bytes as they are.
"""

from __future__ import annotations

import datetime as dt
import functools
import struct
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset
from pydicom.charset import convert_encodings, default_encoding, python_encoding
from pydicom.dataelem import RawDataElement
from pydicom.tag import BaseTag

from mwl_service.query.attributes import UID_PAIR_INDEX
from mwl_service.query.model import ReturnKey, WorklistQuery
from mwl_service.query.values import SCS_TAG
from mwl_service.schema import WorklistItem
from mwl_service.vr import uid_pairs

__all__ = ["ANSWER_CHARSETS", "row_to_bytes", "row_to_dataset"]

_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST",
                       "TM", "UC", "UI", "UR", "UT"})
# Explicit VR encoding: these VRs have a 2-byte reserved field and a 4-byte length.
_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT",
                       "UV"})

# Single-byte character sets without code extensions an answer may be sent in: all
# are ASCII-compatible, so the default-repertoire VRs (AE, CS, DA, UI...) are the same
# bytes in them. (ISO_IR 13 is not: its 0x5C is the yen sign.)
ANSWER_CHARSETS = frozenset({
    "ISO_IR 100", "ISO_IR 101", "ISO_IR 109", "ISO_IR 110", "ISO_IR 126", "ISO_IR 127",
    "ISO_IR 138", "ISO_IR 144", "ISO_IR 148", "ISO_IR 166",
})
_UTF8 = "ISO_IR 192"

# A response is built from a plan compiled once per query: one tuple per requested
# key, in tag order, with everything that does not depend on the row precomputed
# (tag, VR, value source, padding, the encoded element header).

_K_EMPTY, _K_COLUMN, _K_END_DATE, _K_END_TIME, _K_SEQ, _K_US, _K_TZ_OFFSET, _K_PAIRS = range(8)
_DERIVED_KINDS = {"end_date": _K_END_DATE, "end_time": _K_END_TIME, "tz_offset": _K_TZ_OFFSET}

_ITEM_TAG = struct.pack("<HH", 0xFFFE, 0xE000)
_PACK_H = struct.Struct("<H").pack
_PACK_I = struct.Struct("<I").pack
_SCS_BASETAG = BaseTag(SCS_TAG)


@dataclass(frozen=True)
class _Plan:
    """Per transfer syntax: the top-level steps of an answer.

    A step is ``(tag, vr, kind, index, fallback, pad, text, header, long_length,
    item, present, match)``; ``header`` is the element's encoded tag (+VR, +reserved
    bytes), ``long_length`` whether its length field has 4 bytes; for a sequence
    ``item`` is the steps of its one item (None: always empty) and ``present`` the
    index of the column that must be non-empty for the item to be sent (-1: always
    sent); for a UID-pair sequence ``item`` is the steps of each pair's item and
    ``match`` the UIDs an item must have (``ReturnKey.item_values``).
    ``scs_at`` is where SpecificCharacterSet goes among the steps (tag order);
    ``codec`` the Python codec of the query's single-byte character set to try
    first (None: UTF-8), ``charset_term`` its DICOM name.
    """

    top: tuple[tuple[Any, ...], ...]
    scs_at: int
    codec: str | None
    charset_term: str


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
        item = None
        present = -1
        if k.derived == "uid_pairs":
            kind, idx = _K_PAIRS, index[k.column]  # type: ignore[index]
            item = _steps(k.item_keys or (), UID_PAIR_INDEX, implicit_vr)
        elif k.vr == "SQ":
            kind, idx = _K_SEQ, -1
            if k.item_keys is not None:
                item = _steps(k.item_keys, index, implicit_vr)
                present = index[k.column] if k.column else -1
        elif k.derived in _DERIVED_KINDS:
            kind, idx = _DERIVED_KINDS[k.derived], -1
        elif k.column and k.column in index:
            kind, idx = (_K_US if k.vr == "US" else _K_COLUMN), index[k.column]
        else:
            kind, idx = _K_EMPTY, -1
        fallback = index.get(k.fallback, -1) if k.fallback else -1
        header, long_length = _element_header(k.tag, k.vr, implicit_vr)
        steps.append((
            BaseTag(k.tag), k.vr, kind, idx, fallback, b"\x00" if k.vr == "UI" else b" ",
            k.vr in _TEXT_VRS, header, long_length, item, present, k.item_values,
        ))
    return tuple(steps)


def _plan(query: WorklistQuery, implicit_vr: bool) -> _Plan:
    plan = query.plans.get(implicit_vr)
    if plan is None:
        keys = query.return_keys
        term = query.specific_character_set
        codec = python_encoding[term] if term in ANSWER_CHARSETS else None
        plan = query.plans[implicit_vr] = _Plan(
            top=_steps(keys, query.index, implicit_vr),
            scs_at=sum(1 for k in keys if k.tag < SCS_TAG),
            codec=codec,
            charset_term=term if codec else _UTF8,
        )
    return plan


@functools.lru_cache(maxsize=64)
def _scs_element(term: str, implicit_vr: bool) -> bytes:
    """SpecificCharacterSet ``term``, fully encoded."""
    value = term.encode("ascii")
    if len(value) & 1:
        value += b" "
    header, long_length = _element_header(SCS_TAG, "CS", implicit_vr)
    return header + (_PACK_I if long_length else _PACK_H)(len(value)) + value


@functools.lru_cache(maxsize=64)
def _dataset_charset(term: str) -> list[str]:
    return convert_encodings(term)


@functools.lru_cache(maxsize=64)
def _zone(name: str) -> zoneinfo.ZoneInfo | dt.timezone:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return dt.timezone.utc


def _local(instant: dt.datetime, values: Sequence[Any], index: dict[str, int]) -> dt.datetime:
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=dt.timezone.utc)
    return instant.astimezone(_zone(values[index["site_timezone"]] or "UTC"))


def _derived(kind: int, values: Sequence[Any], index: dict[str, int]) -> str:
    """Scheduled end (start + duration) as site-local DA or TM, '' without a
    duration; or the site zone's offset from UTC at the scheduled start (+HHMM)."""
    start = values[index["scheduled_start_utc"]]
    if start is None:
        return ""
    if kind == _K_TZ_OFFSET:
        offset = _local(start, values, index).utcoffset() or dt.timedelta(0)
        minutes = round(offset.total_seconds() / 60)
        sign = "-" if minutes < 0 else "+"
        return f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    minutes = values[index["duration_minutes"]]
    if not minutes:
        return ""
    end = _local(start + dt.timedelta(minutes=int(minutes)), values, index)
    return end.strftime("%Y%m%d" if kind == _K_END_DATE else "%H%M%S")


def _pair_items(steps: tuple, text: str, match: tuple, codec: str) -> bytes:
    """The items of a UID-pair sequence: one per pair of ``text`` that ``match``
    (SOP Class UIDs, SOP Instance UIDs; empty: any) lets through."""
    classes, instances = match
    items = []
    for pair in uid_pairs(text or ""):
        if (classes and pair[0] not in classes) or (instances and pair[1] not in instances):
            continue
        body = _join(steps, _encode_values(steps, pair, UID_PAIR_INDEX, codec)[0])
        items.append(_ITEM_TAG + _PACK_I(len(body)) + body)
    return b"".join(items)


def _encode_values(
    steps: tuple, values: Sequence[Any], index: dict[str, int], codec: str
) -> tuple[list[bytes], bool]:
    """The encoded value of every step (a sequence: its item, or b"") and whether any
    text is non-ASCII. Raises UnicodeEncodeError when ``codec`` cannot hold a value."""
    out = []
    non_ascii = False
    for _tag, _vr, kind, idx, fallback, pad, is_text, _hdr, _long, item, present, match in steps:
        if kind == _K_COLUMN:
            v = values[idx]
            if not v and fallback >= 0:
                v = values[fallback]
            if v is None:
                out.append(b"")
                continue
        elif kind == _K_END_DATE or kind == _K_END_TIME or kind == _K_TZ_OFFSET:
            v = _derived(kind, values, index)
        elif kind == _K_PAIRS:
            out.append(_pair_items(item, values[idx], match, codec))
            continue
        elif kind == _K_SEQ:
            if item is None or (present >= 0 and not values[present]):
                out.append(b"")
                continue
            encoded, item_non_ascii = _encode_values(item, values, index, codec)
            body = _join(item, encoded)
            non_ascii = non_ascii or item_non_ascii
            out.append(_ITEM_TAG + _PACK_I(len(body)) + body)
            continue
        elif kind == _K_US:
            v = values[idx]
            out.append(b"" if v is None or v == "" else _PACK_H(int(v)))
            continue
        else:
            out.append(b"")
            continue
        b = (v if v.__class__ is str else str(v)).encode(codec)
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


def _encode_row(
    plan: _Plan, values: Sequence[Any], query: WorklistQuery
) -> tuple[list[bytes], str | None]:
    """The encoded value of every top-level step, and the SpecificCharacterSet term
    the answer needs (None: none, default repertoire). Shared by the dataset and the
    bytes form of an answer, so both carry the same bytes."""
    if plan.codec is not None:
        try:
            return _encode_values(plan.top, values, query.index, plan.codec)[0], plan.charset_term
        except UnicodeEncodeError:
            pass  # a value outside the query's character set: the whole answer in UTF-8
    encoded, non_ascii = _encode_values(plan.top, values, query.index, "utf-8")
    if non_ascii or query.specific_character_set_requested:
        return encoded, _UTF8
    return encoded, None


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

    ``row`` is a row of :func:`~mwl_service.query.build_select` (values in
    ``query.columns`` order) or a ``WorklistItem``. ``implicit_vr`` names the transfer
    syntax the dataset will be written in (Little Endian), which makes writing it
    cheap; any syntax is correct.
    """
    plan = _plan(query, implicit_vr)
    encoded, term = _encode_row(plan, _row_values(row, query), query)
    elements: dict[BaseTag, Any] = {}
    for step, b in zip(plan.top, encoded):
        tag = step[0]
        elements[tag] = _new_raw(
            RawDataElement, (tag, step[1], len(b), b, 0, implicit_vr, True, True, False)
        )
    if term is None:
        return _new_dataset(elements, implicit_vr, default_encoding)
    value = term.encode("ascii")
    elements[_SCS_BASETAG] = _new_raw(
        RawDataElement, (_SCS_BASETAG, "CS", len(value), value, 0, implicit_vr, True, True, False),
    )
    return _new_dataset(elements, implicit_vr, _dataset_charset(term))


def row_to_bytes(row: Any, query: WorklistQuery, *, implicit_vr: bool = False) -> bytes:
    """The same answer as :func:`row_to_dataset`, already encoded: exactly the bytes
    pydicom writes for that dataset in Implicit (``implicit_vr``) or Explicit VR
    Little Endian, without building a ``Dataset``.

    For the server's C-FIND fast path, which puts these bytes on the wire itself;
    an empty result (the query requested no keys) is ``b""``.
    """
    plan = _plan(query, implicit_vr)
    encoded, term = _encode_row(plan, _row_values(row, query), query)
    if term is None:
        return _join(plan.top, encoded)
    scs = _scs_element(term, implicit_vr)
    at = plan.scs_at
    if at == 0:  # the usual case: no requested key sorts before (0008,0005)
        return scs + _join(plan.top, encoded)
    return _join(plan.top[:at], encoded[:at]) + scs + _join(plan.top[at:], encoded[at:])
