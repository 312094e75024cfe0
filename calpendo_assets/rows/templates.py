"""Derived text from templates: ``"Project:{project.name} Subject:{patient_id}"`` (pure).

``field_mapping._templates`` maps a worklist field to a template. A placeholder names
either a worklist field (its already-mapped value) or a record path of the booking
(dotted; nested or flat-dotted keys, read like every other mapped path). ``{{`` and
``}}`` are literal braces, as in `str.format`.

Templates are parsed with `string.Formatter` but never *formatted* with it: no
attribute access, indexing, conversions (``!r``) or format specs (``:>10``) — a config
file must not be able to reach into Python objects. `validate_templates` refuses
those at config time; `render` only substitutes plain text.

A placeholder without a value leaves the whole field empty, with one warning that
names the booking and the placeholder (never a value: values hold participant data).
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Collection, Mapping
from typing import Any

from calpendo_assets.rows.names import as_text
from calpendo_assets.core.records import get_path

# A dotted name: what `field_mapping` keys look like, and all a placeholder may be.
_PLACEHOLDER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_FORMATTER = string.Formatter()


@functools.lru_cache(maxsize=256)
def _pieces(template: str) -> tuple[tuple[str, str | None], ...]:
    """(literal text, placeholder or None) pairs; ValueError for anything but plain names."""
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:  # "Single '}' encountered", "expected '}' before end of string"
        raise ValueError(f"{exc} (write {{{{ and }}}} for literal braces)") from None
    pieces = []
    for literal, name, spec, conversion in parsed:
        if name is None:
            pieces.append((literal, None))
            continue
        tail = (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
        shown = "{" + name + tail + "}"
        if conversion is not None:
            raise ValueError(f"{shown}: conversions (!r, !s, !a) are not allowed")
        if spec:
            raise ValueError(f"{shown}: format specs (after ':') are not allowed")
        if not _PLACEHOLDER.fullmatch(name):
            raise ValueError(
                f"{shown}: a placeholder is a worklist field or a dotted record path "
                "such as {patient_id} or {project.name} (no indexing, no empty {})"
            )
        pieces.append((literal, name))
    return tuple(pieces)


def placeholders(template: str) -> tuple[str, ...]:
    """The placeholder names of `template`, in order, without repeats."""
    return tuple(dict.fromkeys(name for _, name in _pieces(template) if name is not None))


def template_error(template: Any) -> str | None:
    """Why `template` is not a usable template, or None."""
    if not isinstance(template, str):
        return f"must be text, got {type(template).__name__}"
    try:
        _pieces(template)
    except ValueError as exc:
        return str(exc)
    return None


def validate_templates(
    templates: Mapping[str, Any], targets: Collection[str]
) -> Mapping[str, str]:
    """`templates` unchanged, or ValueError naming the field at fault.

    For the config (e.g. as a pydantic validator): each key is one of `targets`,
    each template parses, and no template reads another template's field (templates
    see mapped values, not each other's output, so that order never matters).
    """
    for field, template in templates.items():
        if field not in targets:
            raise ValueError(
                f"{field}: not a field that takes a template "
                f"(one of: {', '.join(targets)})"
            )
        problem = template_error(template)
        if problem:
            raise ValueError(f"{field}: {problem}")
        chained = [name for name in placeholders(template) if name in templates]
        if chained:
            raise ValueError(
                f"{field}: {{{chained[0]}}} is itself built by a template; "
                "templates read mapped fields and record paths only"
            )
    return templates


def template_paths(templates: Mapping[str, str], field_names: Collection[str]) -> list[str]:
    """The record paths `templates` read (placeholders that are not `field_names`),
    in first-use order, so that the fetch can ask for them."""
    paths: dict[str, None] = {}
    for template in templates.values():
        for name in placeholders(template):
            if name not in field_names:
                paths[name] = None
    return list(paths)


def _missing(value: Any) -> bool:
    return value is None or not as_text(value).strip()


def render(
    template: str, booking: Mapping, fields: Mapping[str, Any]
) -> tuple[str, list[str]]:
    """(text, missing placeholders). A name in `fields` takes the field's value;
    any other name is a path of `booking`. Text is "" when a placeholder is missing."""
    out: list[str] = []
    missing: list[str] = []
    for literal, name in _pieces(template):
        out.append(literal)
        if name is None:
            continue
        value = fields[name] if name in fields else get_path(booking, name)
        if _missing(value):
            if name not in missing:
                missing.append(name)
            continue
        out.append(as_text(value).strip())
    return ("" if missing else "".join(out)), missing


def render_templates(
    templates: Mapping[str, str],
    booking: Mapping,
    fields: Mapping[str, Any],
    *,
    booking_id: str,
) -> tuple[dict[str, str], list[str]]:
    """{field: rendered text} for every template, plus one warning per template that
    had a placeholder without a value (that field is "")."""
    values: dict[str, str] = {}
    warnings: list[str] = []
    for field, template in templates.items():
        text, missing = render(template, booking, fields)
        values[field] = text
        if missing:
            names = ", ".join("{" + name + "}" for name in missing)
            warnings.append(
                f"booking {booking_id}: {field} template: no value for {names}; left empty"
            )
    return values, warnings
