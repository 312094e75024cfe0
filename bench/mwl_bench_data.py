"""The MWL benchmark's worklist: N items, loaded into a worklist database (for
mwl-service) and written as one .wl file each (for wlmscpfs and Orthanc), and the
queries with the answers they must return.

The layout is 10 stations x 10 days x N/100 items per station-day, so at N=10000
"one station, one day" is 100 items; patients are drawn from N/2 IDs (a Patient ID
has a handful of bookings) and some names are non-ASCII.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import random
import zoneinfo
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from sqlalchemy import delete, insert

from mwl_service.engine import make_engine
from mwl_service.schema import (
    WorklistItem,
    accession_number,
    step_id,
    study_instance_uid,
)

SOURCE, TZ = "bench", zoneinfo.ZoneInfo("America/Edmonton")
FIRST_DAY, DAYS = dt.date(2026, 5, 4), 10  # no DST change inside the window
STATIONS = [  # (AE title, modality, station name)
    ("MR3T_A", "MR", "PRISMA_A"), ("MR3T_B", "MR", "PRISMA_B"), ("MR7T", "MR", "TERRA"),
    ("MR15T", "MR", "AERA"), ("PETMR", "PT", "BIOGRAPH"), ("CT1", "CT", "SOMATOM"),
    ("US1", "US", "ACUSON"), ("EEG1", "EEG", "EEG_LAB1"), ("EEG2", "EEG", "EEG_LAB2"),
    ("XA1", "XA", "ARTIS"),
]
FAMILY = ["Smith", "Nguyen", "Müller", "García", "O'Brien", "Łukasiewicz", "Søndergaard",
          "Chen", "Okafor", "Dubois", "Ivanov", "Kowalski", "Brown", "山田", "Côté", "Singh"]
GIVEN = ["Anna", "Jürgen", "José", "Mei", "Chidi", "Zoë", "Liam", "Olga", "太郎", "Priya",
         "François", "Noah", "Åsa", "Omar", "Ewa", "Kai"]
PROTOCOLS = ["fMRI resting state", "DTI 64 dir", "T1 MPRAGE", "Spectroscopy", "EEG 64ch",
             "Cardiac cine", "Pilot scan", "PET amyloid"]

# Return keys of every query (top level; the SPS item gets the SPS_KEYS below).
TOP_KEYS = ["PatientName", "PatientID", "AccessionNumber", "StudyInstanceUID"]
SPS = "(0040,0100)[0]."
SPS_KEYS = {"(0040,0001)": "ScheduledStationAETitle", "(0008,0060)": "Modality",
            "(0040,0002)": "ScheduledProcedureStepStartDate",
            "(0040,0003)": "ScheduledProcedureStepStartTime",
            "(0040,0009)": "ScheduledProcedureStepID",
            "(0040,0007)": "ScheduledProcedureStepDescription"}


@dataclass(frozen=True)
class Item:
    booking_id: str
    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    station: str
    modality: str
    station_name: str
    start: dt.datetime  # site-local, aware
    description: str

    @property
    def accession(self) -> str:
        return accession_number(SOURCE, self.booking_id)


def make_items(n: int, seed: int = 7) -> list[Item]:
    """N items: 10 stations x 10 days x n/100 per station-day, 07:00-19:00 local."""
    rng = random.Random(seed)
    per_slot = max(1, n // (len(STATIONS) * DAYS))
    step = dt.timedelta(minutes=720 / per_slot)
    items = []
    for day in range(DAYS):
        date = FIRST_DAY + dt.timedelta(days=day)
        for aet, modality, name in STATIONS:
            for k in range(per_slot):
                start = dt.datetime.combine(date, dt.time(7), TZ) + k * step
                p = rng.randrange(max(1, n // 2))
                items.append(Item(
                    booking_id=str(100000 + len(items)), patient_id=f"SUBJ{p:06d}",
                    patient_name=f"{FAMILY[p % 16]}^{GIVEN[(p // 16) % 16]}",
                    birth_date=f"{1950 + p % 50}{1 + p % 12:02d}{1 + p % 28:02d}",
                    sex="MF"[p % 2], station=aet, modality=modality, station_name=name,
                    start=start.replace(second=0, microsecond=0),
                    description=PROTOCOLS[rng.randrange(len(PROTOCOLS))],
                ))
    return items


def load_database(items: list[Item], db_url: str) -> None:
    """One bulk INSERT through the project's own schema (what a sync publishes),
    after deleting the bench's earlier rows (a reused PostgreSQL database)."""
    engine = make_engine(db_url)
    rows = [{
        "source": SOURCE, "booking_id": it.booking_id, "patient_id": it.patient_id,
        "patient_name": it.patient_name, "patient_birth_date": it.birth_date,
        "patient_sex": it.sex, "accession_number": it.accession,
        "study_instance_uid": study_instance_uid(SOURCE, it.booking_id),
        "requested_procedure_id": step_id(SOURCE, it.booking_id),
        "requested_procedure_description": it.description, "study_description": it.description,
        "scheduled_procedure_step_id": step_id(SOURCE, it.booking_id),
        "scheduled_procedure_step_description": it.description,
        "scheduled_station_ae_title": it.station, "scheduled_station_name": it.station_name,
        "modality": it.modality, "scheduled_start_utc": it.start.astimezone(dt.UTC),
        "site_timezone": TZ.key, "scheduled_start_date": it.start.strftime("%Y%m%d"),
        "scheduled_start_time": it.start.strftime("%H%M%S"), "duration_minutes": 60,
        "booking_status": "APPROVED", "resource_name": it.station_name,
        "content_hash": hashlib.sha256(it.booking_id.encode()).hexdigest(),
    } for it in items]
    with engine.begin() as conn:
        conn.execute(delete(WorklistItem).where(WorklistItem.source == SOURCE))
        conn.execute(insert(WorklistItem), rows)
    engine.dispose()


def write_wl_files(items: list[Item], aet_dir: Path) -> None:
    """One .wl per item in <dfp>/<called AE title>/, plus the 'lockfile' wlmscpfs locks.

    A .wl is a plain DICOM dataset (what `dump2dcm` writes); it carries every type 1
    worklist key (PS3.4 table K.6-1) so wlmscpfs's default file reject keeps it.
    """
    aet_dir.mkdir(parents=True)
    (aet_dir / "lockfile").touch()
    for it in items:
        write_wl_file(it, aet_dir)


def write_wl_file(it: Item, aet_dir: Path, description: str | None = None) -> None:
    """The .wl file of one item, written aside and renamed into place (atomic)."""
    description = description or it.description
    sps = Dataset()
    sps.ScheduledStationAETitle = it.station
    sps.ScheduledStationName = it.station_name
    sps.Modality = it.modality
    sps.ScheduledProcedureStepStartDate = it.start.strftime("%Y%m%d")
    sps.ScheduledProcedureStepStartTime = it.start.strftime("%H%M%S")
    sps.ScheduledProcedureStepDescription = description
    sps.ScheduledProcedureStepID = step_id(SOURCE, it.booking_id)
    sps.ScheduledProcedureStepStatus = "SCHEDULED"
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.AccessionNumber = it.accession
    ds.PatientName = it.patient_name
    ds.PatientID = it.patient_id
    ds.PatientBirthDate = it.birth_date
    ds.PatientSex = it.sex
    ds.StudyInstanceUID = study_instance_uid(SOURCE, it.booking_id)
    ds.RequestedProcedureID = step_id(SOURCE, it.booking_id)
    ds.RequestedProcedureDescription = description
    ds.ScheduledProcedureStepSequence = [sps]
    # wlmscpfs and Orthanc skip files whose name does not end in .wl: write aside, rename.
    tmp = aet_dir / f"{it.booking_id}.tmp"
    ds.save_as(tmp, implicit_vr=False, little_endian=True, enforce_file_format=False)
    os.replace(tmp, aet_dir / f"{it.booking_id}.wl")


def answer(it: Item) -> tuple[str, ...]:
    """What a correct answer for `it` carries: identifiers, the decoded name, the step."""
    return (it.accession, it.patient_id, it.patient_name, it.station, it.modality,
            it.start.strftime("%Y%m%d"), it.start.strftime("%H%M%S"),
            step_id(SOURCE, it.booking_id))


def queries(items: list[Item]) -> list[tuple[str, list[str], list[tuple[str, ...]]]]:
    """(name, findscu -k matching keys, expected answers) per query."""
    first = FIRST_DAY.strftime("%Y%m%d")
    last = (FIRST_DAY + dt.timedelta(DAYS - 1)).strftime("%Y%m%d")
    station = STATIONS[0][0]
    patient = items[len(items) // 2].patient_id
    want = lambda pred: sorted(answer(it) for it in items if pred(it))  # noqa: E731
    return [
        ("broad", [f"{SPS}(0040,0002)={first}-{last}"], want(lambda it: True)),
        ("typical", typical_match(station), want(
            lambda it: it.station == station and it.start.strftime("%Y%m%d") == typical_day())),
        ("narrow", [f"PatientID={patient}"], want(lambda it: it.patient_id == patient)),
    ]


def typical_day() -> str:
    return (FIRST_DAY + dt.timedelta(3)).strftime("%Y%m%d")


def typical_match(station: str) -> list[str]:
    """The typical query's matching keys: one station, one day."""
    return [f"{SPS}(0040,0001)={station}", f"{SPS}(0040,0002)={typical_day()}"]
