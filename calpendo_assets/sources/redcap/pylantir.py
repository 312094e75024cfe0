"""Pylantir's REDCap source keys (``site_id``/``site``, ``protocol``) and their meaning here.

Pylantir's `REDCapPlugin` (0.3.x) built each visit's identifiers itself, for one study:
``study`` and ``family`` are ``study_id`` and ``family_id`` after their last ``-``
(``"CPIP-1003".split("-")[-1]``), the session is ``mri_instance``, and

- PatientID ``sub_{study}_ses_{session}_fam_{family}`` (0.3.0-0.3.5, key ``site_id``),
  with ``_site_{site}`` appended from 0.3.6 on (key ``site``);
- Patient's Name ``cpip-id-{study}^fa-{family}``;
- the step's protocol ``protocol`` (a name, or ``{site: name}`` resolved by the site),
  served as Scheduled Procedure Step Description and as the protocol code.

A Pylantir-shaped source (one with a site) that maps nothing to those fields gets the
same identifiers here, written as the `_extract` and `_templates` entries a site could
write itself (`identifier_mapping`); the README shows them.
"""

from __future__ import annotations

from typing import Any

SITE_KEYS = ("site_id", "site")
PROTOCOL_PATH = "protocol_name"  # the record key of the resolved protocol (Pylantir's column)
DESIGNATOR_KEY = "mapping"  # protocol {"792": "BRAIN_MRI_3T", "mapping": "GEHC"}
LAST_PART = "([^-]*)$"  # what str.split("-")[-1] keeps


def identifier_mapping(site_key: str) -> dict[str, Any]:
    """Pylantir's identifiers as ``field_mapping`` entries (JSON form)."""
    suffix = "_site_{site}" if site_key == "site" else ""
    return {
        "study_id": {"_extract": {"study": {"pattern": LAST_PART, "group": 1}}},
        "family_id": {"_extract": {"family": {"pattern": LAST_PART, "group": 1}}},
        "_templates": {
            "patient_id": "sub_{study}_ses_{mri_instance}_fam_{family}" + suffix,
            "patient_name": "cpip-id-{study}^fa-{family}",
        },
    }


def protocol_of(protocol: str | dict[str, str] | None, site: str | None) -> str | None:
    """The protocol a visit gets: the name, or the site's entry of a ``{site: name}``."""
    if isinstance(protocol, str) or protocol is None:
        return protocol
    return protocol.get(site) if site is not None else None


def designator_of(protocol: str | dict[str, str] | None) -> str | None:
    """The coding scheme designator of Pylantir's protocol code (``protocol.mapping``)."""
    return protocol.get(DESIGNATOR_KEY) if isinstance(protocol, dict) else None


def site_note(site_key: str, site: str) -> str:
    return (f"config.{site_key} {site!r} is Pylantir's site: templates read it as "
            f"{{{site_key}}} (a REDCap field of that name is not read)")


def protocol_note(protocol: Any, site: str | None, name: str | None,
                  designator: str | None, coded: bool) -> str:
    """What ``config.protocol`` gives each visit."""
    if name is None:
        return (f"config.protocol has no entry for site {site!r}: visits get no step "
                "description from it (Pylantir served 'DEFAULT_PROTOCOL')")
    where = f" (the entry for site {site!r})" if isinstance(protocol, dict) else ""
    text = (f"config.protocol{where} is Pylantir's protocol_name: each visit's Scheduled "
            f"Procedure Step Description is {name!r} unless field_mapping maps protocol_name "
            "or scheduled_procedure_step_description")
    if coded:
        return (text + f", and its Scheduled Protocol Code is {name!r} in scheme "
                f"{designator!r} (config.protocol.{DESIGNATOR_KEY})")
    return (text + "; no Scheduled Protocol Code (Pylantir sent one without a coding "
            "scheme designator, which DICOM requires: set config.scheduled_protocol_codes, "
            f"or config.protocol.{DESIGNATOR_KEY})")


def window_note(status_field: str | None) -> str:
    """What Pylantir's sync loop becomes here (its window, its statuses)."""
    status = ("" if status_field else
              "; every visit is SCHEDULED, as Pylantir sent them: set config.status_field "
              "and status_mapping to discontinue cancelled visits")
    return (
        "this is a Pylantir REDCap source: Pylantir exported the records modified in the "
        "last sync_interval (+300 s), so a visit moved or deleted earlier never left its "
        "worklist; here every sync fetches every visit dated in the window (past_days "
        "before today to future_days after), and a visit that left it is cancelled. "
        "sync_interval and operation_interval keep their meaning: how often, and in which "
        f"hours, the schedule and the sensor run{status}"
    )
