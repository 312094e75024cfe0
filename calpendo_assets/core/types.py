"""Value types of the config file: strict pydantic building blocks every source type uses.

Each names what it accepts (``Text``: non-empty after stripping; ``Names``: one string
or a list, de-duplicated; ``AETitle``: a valid DICOM AE ...), so a model field is one
annotation and its error message comes from here.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
)

from mwl_service.schema import MAX_STATION_AE_TITLES
from mwl_service.vr import vr_problem


def _vr_value(vr: str, what: str):
    def check(value: str) -> str:
        problem = vr_problem(vr, value)
        if problem:
            raise ValueError(f"{value!r} is not a valid {vr} value ({what}): {problem}")
        return value

    return check


def _ae_title(value: str) -> str:
    # A backslash would split the value when several titles are joined (DICOM multi-value).
    if "\\" in value or re.search(r"[\x00-\x1f\x7f]", value):
        raise ValueError(f"{value!r} is not a valid AE value: backslash or control character")
    return _vr_value("AE", "an AE title")(value)


def _station_count(value: str | list[str]) -> str | list[str]:
    if isinstance(value, list) and len(value) > MAX_STATION_AE_TITLES:
        raise ValueError(f"{len(value)} AE titles (max {MAX_STATION_AE_TITLES} per resource)")
    return value


def time_zone(value: str) -> str:
    """An IANA zone name, else ValueError (the config's `timezone`, mwl-api's --timezone)."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return value


def _names(value: str | list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([value] if isinstance(value, str) else value))


def unique_resources(mapping: dict[str, Any]) -> dict[str, Any]:
    """`mapping` unchanged, or ValueError when two keys differ only in case."""
    seen: dict[str, str] = {}
    for key in mapping:
        folded = key.casefold()
        if folded in seen:
            raise ValueError(
                f"{key!r} duplicates {seen[folded]!r} (resource names are case-insensitive)"
            )
        seen[folded] = key
    return mapping


def one_or_many(item: Any, what: str) -> Any:
    """``item`` or a list of them (tagged, so an error names one reading, not two)."""
    return Annotated[
        Union[Annotated[item, Tag("<one>")], Annotated[list[item], Tag("<many>")]],
        Discriminator(
            lambda v: "<many>" if isinstance(v, list) else "<one>" if isinstance(v, str) else None,
            custom_error_type="one_or_many",
            custom_error_message=f"must be {what} or a list of them",
        ),
    ]


def server_url(value: str | None, context: Any, env_var: str, secrets: str) -> str:
    """A server's http(s) URL: the config's, else the environment variable `env_var`
    (from the validation context's ``env``). ValueError when missing, not http(s), or
    carrying credentials (`secrets` says where they belong instead)."""
    where = ""
    if value is None:
        value = (((context or {}).get("env") or {}).get(env_var) or "").strip()
        if not value:
            raise ValueError(f"missing (set it in the config or in {env_var})")
        where = f" (from {env_var})"
    value = value.strip()
    if not re.match(r"https?://[^/\s]+", value):
        raise ValueError(f"must be an http:// or https:// URL{where}")
    if "@" in value.split("/", 3)[2]:
        raise ValueError(f"must not contain credentials ({secrets}){where}")
    return value


Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Names = Annotated[one_or_many(Text, "a string"), AfterValidator(_names)]
Modality = Annotated[Text, AfterValidator(_vr_value("CS", "a modality"))]
AETitle = Annotated[Text, AfterValidator(_ae_title)]
AETitles = Annotated[one_or_many(AETitle, "an AE title"), AfterValidator(_station_count)]
TimeZone = Annotated[Text, AfterValidator(time_zone)]
Hour = Annotated[int, Field(ge=0, le=23)]
Minute = Annotated[int, Field(ge=0, le=59)]
Count = Annotated[int, Field(ge=0)]
Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]


class Model(BaseModel):
    """Strict JSON types, unknown keys refused, immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
