"""Query values: decoding a key in the query's character set, DA/TM values and ranges.

The query is decoded in its declared SpecificCharacterSet (pydicom decodes values on
access with the dataset's character set, sequence items inherit it); a query without
one whose bytes are valid UTF-8 is read as UTF-8, otherwise as Latin-1.

TM values may be ``HH``, ``HHMM``, ``HHMMSS`` or ``HHMMSS.ffffff`` (``HH:MM:SS``
tolerated); a value with reduced precision covers its whole unit (``1200`` as an
upper bound includes 12:00:59, as a single value it means 12:00:00-12:00:59). Old
``YYYY.MM.DD`` dates are accepted.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset
from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import RawDataElement

from mwl_service.query.errors import QueryError

SCS_TAG = 0x00080005  # SpecificCharacterSet


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
        and SCS_TAG not in ds
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


def values_or_error(ds: Dataset, tag: int, charset: str | list[str], keyword: str) -> list[str]:
    try:
        return _decoded_values(ds, tag, charset)
    except Exception as exc:  # noqa: BLE001 - an undecodable value is the query's fault
        raise QueryError(f"{keyword}: value cannot be decoded ({exc})") from exc


def declared_charset(ds: Dataset, inherited: str | list[str]) -> str | list[str]:
    """Python codec(s) for the dataset's SpecificCharacterSet, else the inherited ones."""
    if SCS_TAG not in ds:
        return inherited
    try:
        value = ds[SCS_TAG].value
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
class Range:
    """Inclusive bounds of a DA or TM key; None = open side."""

    lo: str | None
    hi: str | None
    single: bool


def parse_range(
    values: list[str], vr: str, keyword: str, *, ordered: bool = True
) -> Range | None:
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
        return Range(lo_of(text), hi_of(text), single=True)
    a, b = text.split("-")
    rng = Range(lo_of(a) if a else None, hi_of(b) if b else None, single=False)
    if ordered:
        check_order(rng, vr, keyword)
    return rng


def check_order(rng: Range, vr: str, keyword: str) -> None:
    if rng.lo is not None and rng.hi is not None and rng.lo > rng.hi:
        raise QueryError(
            f"{keyword}: the range starts after it ends"
            + (" (time ranges crossing midnight are not supported)" if vr == "TM" else "")
        )

