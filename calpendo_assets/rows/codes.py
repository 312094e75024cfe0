"""Protocol and procedure codes from config, chosen by project name (pure).

``config.scheduled_protocol_codes`` and ``config.requested_procedure_codes`` map a
project name to one code (``code_value``, ``coding_scheme_designator``,
``code_meaning``, and ``coding_scheme_version`` when the designator alone does not
identify the code). A booking's project picks its code the way resources pick their
modality: an exact case-insensitive match first, then the longest matching prefix.
No rule, no code: the sequence is served empty (never copied from the query).

`match_by_name` is that one matcher; the resource mappings can use it too
(``map_by_resource(name, mapping, default)`` has exactly its behaviour).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mwl_service.vr import vr_problem

# In the order of their tags.
CODE_ATTRIBUTES = ("code_value", "coding_scheme_designator", "coding_scheme_version",
                   "code_meaning")
# Code Sequence Macro (PS3.3 Table 8.8-1): Code Value SH, Coding Scheme Designator SH,
# Coding Scheme Version SH (1C: when the designator is not enough), Code Meaning LO.
# Longer code values would need Long Code Value (UC): not supported.
CODE_VRS = {"code_value": "SH", "coding_scheme_designator": "SH",
            "coding_scheme_version": "SH", "code_meaning": "LO"}
OPTIONAL_CODE_ATTRIBUTES = frozenset({"coding_scheme_version"})

PROTOCOL_PREFIX = "scheduled_protocol_"
PROCEDURE_PREFIX = "requested_procedure_"
CODE_COLUMNS: tuple[str, ...] = tuple(
    prefix + attribute
    for prefix in (PROTOCOL_PREFIX, PROCEDURE_PREFIX)
    for attribute in CODE_ATTRIBUTES
)


def _fold(text: str | None) -> str:
    return (text or "").strip().casefold()


def match_by_name(name: str | None, mapping: Mapping[str, Any], default: Any = None) -> Any:
    """The value whose key equals `name`, else whose key is its longest prefix, else `default`.

    Case-insensitive, surrounding spaces ignored. Among equally long prefixes (keys
    differing only in case) the first in `mapping` order wins, and so does the first
    exact match. An empty key is a prefix of every name: a catch-all rule.
    """
    folded = _fold(name)
    best_len, best = -1, default
    for key, value in mapping.items():
        rule = _fold(key)
        if rule == folded:
            return value
        if len(rule) > best_len and folded.startswith(rule):
            best_len, best = len(rule), value
    return best


def _attribute(code: Any, attribute: str) -> Any:
    if isinstance(code, Mapping):
        return code.get(attribute)
    return getattr(code, attribute, None)


def code_problems(code: Any) -> list[str]:
    """Why `code` cannot be served (each attribute present, text, valid for its VR;
    the version may be absent).

    For the config to call at load time, so that a bad rule is refused once, with
    its key, instead of on every booking.
    """
    problems = []
    for attribute, vr in CODE_VRS.items():
        value = _attribute(code, attribute)
        if value is None and attribute in OPTIONAL_CODE_ATTRIBUTES:
            continue
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{attribute} is required (non-empty text)")
            continue
        problem = vr_problem(vr, value.strip())
        if problem:
            problems.append(f"{attribute} ({vr}) {problem}")
    return problems


def _code_values(
    prefix: str, rules: Mapping[str, Any] | None, project_name: str, booking_id: str,
    warnings: list[str],
) -> dict[str, str]:
    values = dict.fromkeys((prefix + a for a in CODE_ATTRIBUTES), "")
    code = match_by_name(project_name, rules or {})
    if code is None:
        return values
    problems = code_problems(code)
    if problems:
        # Rules are config, not participant data: naming the rule is safe and useful.
        label = prefix.replace("_", " ") + "code"
        warnings.append(
            f"booking {booking_id}: the {label} rule for its project is not usable "
            f"({'; '.join(problems)}); left empty"
        )
        return values
    for attribute in CODE_ATTRIBUTES:
        values[prefix + attribute] = (_attribute(code, attribute) or "").strip()
    return values


def code_columns(
    project_name: str,
    *,
    scheduled_protocol_codes: Mapping[str, Any] | None,
    requested_procedure_codes: Mapping[str, Any] | None,
    booking_id: str,
) -> tuple[dict[str, str], list[str]]:
    """The eight code columns (`CODE_COLUMNS`) for a booking's project, plus warnings.

    Each group of four is the matched rule's code (its version "" when it has none),
    or four empty strings when no rule matches (or the rule is invalid, with a
    warning naming the booking).
    """
    warnings: list[str] = []
    values = _code_values(
        PROTOCOL_PREFIX, scheduled_protocol_codes, project_name, booking_id, warnings
    )
    values |= _code_values(
        PROCEDURE_PREFIX, requested_procedure_codes, project_name, booking_id, warnings
    )
    return values, warnings
