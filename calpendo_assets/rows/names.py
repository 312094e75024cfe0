"""Text and person names as DICOM wants them: clean text, PN ``Family^Given^Middle``."""

from __future__ import annotations

import re
from typing import Any

from mwl_service.vr import PN_GROUP_MAX


_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]+")
_SPACES = re.compile(r"\s+")


def clean(text: str) -> str:
    """No control characters or backslashes (DICOM separator); single spaces; stripped."""
    return _SPACES.sub(" ", _BAD_CHARS.sub(" ", text)).strip()


def as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in ("name", "formattedName", "title", "id"):
            if value.get(key) not in (None, ""):
                return as_text(value[key])
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(t for t in (as_text(v) for v in value) if t)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def cap_pn_group(group: str) -> str:
    parts = group.split("^")[:5]
    while parts and parts[-1] == "":
        parts.pop()
    out = "^".join(p.strip() for p in parts)
    if len(out) > PN_GROUP_MAX:
        out = out[:PN_GROUP_MAX].rstrip("^ ")
    return out


def dicom_pn(name: Any) -> str:
    """A person's name as DICOM PN: "Jane Doe" -> "Doe^Jane", "Doe, Jane" -> "Doe^Jane".

    Already-DICOM names ("Doe^John") are kept; three or more words give
    family^given^middle ("Jane Mary Doe" -> "Doe^Jane^Mary"); underscores count as
    spaces; Unicode is kept; each component group is capped at 64 characters and 5
    components; backslashes and control characters are removed.
    """
    text = clean(as_text(name))
    if not text:
        return ""
    if "^" in text or "=" in text:
        groups = text.split("=")[:3]
        return "=".join(cap_pn_group(g) for g in groups).rstrip("=")
    text = _SPACES.sub(" ", text.replace("_", " ")).strip()
    if "," in text:
        family, _, given = text.partition(",")
        parts = [family.strip(), " ".join(given.replace(",", " ").split())]
        return cap_pn_group("^".join(parts))
    words = text.split(" ")
    if len(words) == 1:
        return cap_pn_group(words[0])
    if len(words) == 2:
        return cap_pn_group(f"{words[1]}^{words[0]}")
    return cap_pn_group(f"{words[-1]}^{words[0]}^{' '.join(words[1:-1])}")
