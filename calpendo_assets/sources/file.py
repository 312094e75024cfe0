"""The ``file`` source type: manual entries (phantom QA, walk-ins) from a CSV or JSON file.

``config.path`` names a CSV file with a header row, or a JSON list of objects. Each
record has ``id`` (required, stable: it identifies the worklist row), ``start``
(site-local ``YYYY-MM-DD HH:MM``), ``minutes``, ``resource`` and free columns such
as ``title`` or ``project.name``, read by the same ``field_mapping`` paths as a
Calpendo booking; an optional ``status`` (``CANCELLED`` discontinues the row). The
whole file is read on every sync, so a row removed from it is cancelled like a
booking that vanished from Calpendo. A file that cannot be read, or a row without
an id or with a bad start, fails the fetch (nothing is cancelled); messages name
the file, row and column, never a value.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from calpendo_assets.core.errors import BadAnswerError, SourceUnavailableError
from calpendo_assets.core.records import json_document, set_dotted
from calpendo_assets.core.settings import SourceSettings
from calpendo_assets.core.window import Window, site_local
from calpendo_assets.sources.base import FetchResult, SourcePlugin

START_FORMAT = "%Y-%m-%d %H:%M"
# File columns -> the record paths the shared mapping step reads.
COLUMNS = {"start": "dateRange.start", "minutes": "durationInMinutes", "resource": "resource.name"}


class FileSettings(SourceSettings):
    """Settings of a file source: where the entries are."""

    path: str = Field(description="CSV (header row) or JSON list; relative to the config file")

    @field_validator("path")
    @classmethod
    def _resolve(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        if Path(value).suffix.lower() not in (".csv", ".json"):
            raise ValueError(f"{value!r} must end in .csv or .json")
        base = (info.context or {}).get("base_dir") or Path.cwd()
        return str((Path(base) / value).resolve())


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The file's rows as flat dicts (column -> value); SourceError when unreadable."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SourceUnavailableError(f"entries file {str(path)!r} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceUnavailableError(f"entries file {str(path)!r}: cannot read: {exc}") from None
    if path.suffix.lower() == ".csv":
        return [
            {k.strip(): (v if v != "" else None) for k, v in row.items() if k}
            for row in csv.DictReader(io.StringIO(text))
        ]
    rows = json_document(text, f"entries file {str(path)!r}", BadAnswerError)
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise BadAnswerError(f"entries file {str(path)!r}: must be a JSON list of objects")
    return rows


def to_record(row: dict[str, Any], where: str) -> tuple[dict, dt.datetime]:
    """One row as a record keyed like a Calpendo booking, and its naive local start."""
    booking_id = row.get("id")
    if booking_id is None or not str(booking_id).strip():
        raise BadAnswerError(f"{where}: id is missing")
    start = row.get("start")
    try:
        local = dt.datetime.strptime(str(start).strip(), START_FORMAT)
    except ValueError:
        raise BadAnswerError(f"{where}: start is not YYYY-MM-DD HH:MM") from None
    record: dict = {}
    for column, value in row.items():
        set_dotted(record, COLUMNS.get(column, column), value)
    record["id"] = str(booking_id).strip()
    set_dotted(record, "dateRange.start", local.strftime("%Y-%m-%d %H:%M:00"))
    return record, local


def window_records(path: Path, window: Window) -> list[dict]:
    """The records whose start lies in the window (site-local wall time)."""
    start, end = site_local(window.start), site_local(window.end)
    records, seen = [], {}
    for number, row in enumerate(read_rows(path), start=2 if path.suffix == ".csv" else 1):
        kind = "row" if path.suffix == ".csv" else "entry"
        where = f"entries file {str(path)!r}, {kind} {number}"
        record, local = to_record(row, where)
        if record["id"] in seen:
            raise BadAnswerError(f"{where}: id repeats entry {seen[record['id']]}")
        seen[record["id"]] = number
        if start <= local < end:
            records.append(record)
    return records


class FilePlugin(SourcePlugin[FileSettings]):
    type = "file"
    config_model = FileSettings
    needs_credentials = False
    label = "file"

    def fetch_entries(self, source, window, credentials=None, logger=None) -> FetchResult:
        records = window_records(Path(self.settings(source).path), window)
        return FetchResult(records, {}, True, requests=1, strategy="file")

    def probe(self, source, credentials=None) -> str:
        path = Path(self.settings(source).path)
        rows = read_rows(path)
        for number, row in enumerate(rows, start=1):
            to_record(row, f"entries file {str(path)!r}, entry {number}")
        return f"{path}: {len(rows)} {'entry' if len(rows) == 1 else 'entries'} readable"
