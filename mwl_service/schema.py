"""The worklist database: the one definition of its tables and identifiers.

mwl_service owns this schema; the Dagster assets import it. Nothing else defines
these columns. Its versions are the Alembic revisions in ``mwl_service/migrations``
(see :mod:`mwl_service.migrate`): a change here needs a new revision there. The
engine to the database: :func:`mwl_service.engine.make_engine`.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import uuid

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Scheduled Procedure Step Status values (DICOM defined terms used by MWL/MPPS).
SCHEDULED = "SCHEDULED"
IN_PROGRESS = "IN PROGRESS"
COMPLETED = "COMPLETED"
DISCONTINUED = "DISCONTINUED"
STEP_STATUSES = (SCHEDULED, IN_PROGRESS, COMPLETED, DISCONTINUED)

# Who last decided a row's step_status. Once the scanner (MPPS) has, a sync never
# overrides it: scanner-owned state wins.
OWNER_SYNC = "sync"
OWNER_MPPS = "mpps"
OWNER_API = "api"  # a manual item, created and changed over mwl-api

# The source of manual items (walk-ins, phantom QA scans) made over mwl-api; no data
# source of the config may take this name.
MANUAL_SOURCE = "manual"

# Roles of mwl-api accounts, each allowed what the one before it is.
ROLES = ("read", "write", "admin")

# What an MR console needs before it scans (weight and size for SAR, safety notes,
# comments, requester, priority): the sync converts and checks these specially.
MR_FIELDS = (
    "patient_weight",
    "patient_size",
    "medical_alerts",
    "allergies",
    "pregnancy_status",
    "patient_comments",
    "scheduled_procedure_step_comments",
    "requesting_physician",
    "requested_procedure_priority",
)

# Worklist fields a data source's `field_mapping` may target (snake_case, stable).
MAPPABLE_FIELDS = (
    "patient_id",
    "patient_name",
    "patient_birth_date",
    "patient_sex",
    "other_patient_ids",
    "referring_physician_name",
    "study_description",
    "requested_procedure_description",
    "requested_procedure_id",
    "referenced_studies",
    "scheduled_procedure_step_description",
    "scheduled_station_name",
    "scheduled_procedure_step_location",
    "performing_physician_name",
    "modality",
    "scheduled_station_ae_title",
    "admission_id",
    *MR_FIELDS,
    "requested_contrast_agent",
    "pre_medication",
)

# Pregnancy Status (0010,21C0) values, PS3.3 C.7.1.3: stored as these integers.
PREGNANCY_STATUSES = {1: "not pregnant", 2: "possibly pregnant", 3: "definitely pregnant",
                      4: "unknown"}

# Several consoles of one room: Scheduled Station AE Title holds up to this many
# AE titles joined by a backslash (multi-valued AE).
MAX_STATION_AE_TITLES = 10


class UTCDateTime(TypeDecorator):
    """Stores naive UTC, returns aware UTC: identical on SQLite and PostgreSQL."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("UTCDateTime needs an aware datetime")
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=dt.timezone.utc)


class OptionalInt(TypeDecorator):
    """An integer column whose "unknown" is NULL in the database and "" in Python,
    as for the text columns: a row says "unknown" the same way for every field.
    Digit strings bind as their integer."""

    impl = Integer
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return int(value)

    def process_result_value(self, value, dialect):
        return "" if value is None else value


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    pass


def _text(type_) -> Mapped[str]:
    """A NOT NULL text column whose "" means unknown (or: no code)."""
    return mapped_column(type_, nullable=False, default="")


class WorklistItem(Base):
    """One scheduled procedure step per booking per source."""

    __tablename__ = "worklist_items"
    __table_args__ = (
        UniqueConstraint("source", "booking_id", name="uq_worklist_source_booking"),
        # C-FIND keys: local date/time ranges, modality, patient.
        Index("ix_worklist_date_time", "scheduled_start_date", "scheduled_start_time"),
        # No station index: a station matches any of its AE titles (A\B), which no
        # B-tree serves; station queries come with a date.
        Index("ix_worklist_modality_date", "modality", "scheduled_start_date"),
        Index("ix_worklist_patient_id", "patient_id"),
        Index("ix_worklist_patient_name", "patient_name"),
        Index("ix_worklist_status_date", "step_status", "scheduled_start_date"),
        Index("ix_worklist_source_start", "source", "scheduled_start_utc"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(64), nullable=False)
    booking_id: Mapped[str] = mapped_column(String(64), nullable=False)

    # Patient (PN up to 5 components of 64 chars each; LO 64)
    patient_id: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    patient_name: Mapped[str] = mapped_column(String(324), nullable=False, default="")
    patient_birth_date: Mapped[str] = mapped_column(String(8), nullable=False, default="")
    patient_sex: Mapped[str] = mapped_column(String(16), nullable=False, default="")
    other_patient_ids: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    admission_id: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    # Patient medical (what an MR console needs for SAR limits and safety). DS values
    # as their DICOM text ("72.5"; kg and m); "" / NULL = unknown, never invented.
    patient_weight: Mapped[str] = _text(String(16))
    patient_size: Mapped[str] = _text(String(16))
    medical_alerts: Mapped[str] = _text(String(64))
    allergies: Mapped[str] = _text(String(64))
    # 1-4 (PREGNANCY_STATUSES); "" = unknown, stored as NULL.
    pregnancy_status: Mapped[int | str] = mapped_column(OptionalInt, nullable=True)
    patient_comments: Mapped[str] = _text(Text)

    # Requested procedure / imaging service request
    accession_number: Mapped[str] = mapped_column(String(16), nullable=False, unique=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    requested_procedure_id: Mapped[str] = mapped_column(String(16), nullable=False, default="")
    requested_procedure_description: Mapped[str] = mapped_column(
        String(64), nullable=False, default=""
    )
    study_description: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    referring_physician_name: Mapped[str] = mapped_column(String(324), nullable=False, default="")
    requesting_physician: Mapped[str] = _text(String(324))
    requested_procedure_priority: Mapped[str] = _text(String(16))
    # Requested Procedure Code Sequence; an empty code value = no code.
    requested_procedure_code_value: Mapped[str] = _text(String(16))
    requested_procedure_coding_scheme_designator: Mapped[str] = _text(String(16))
    requested_procedure_code_meaning: Mapped[str] = _text(String(64))
    requested_procedure_coding_scheme_version: Mapped[str] = _text(String(16))
    # Referenced Study Sequence: each item's Referenced SOP Class UID and Referenced SOP
    # Instance UID, item after item, joined by backslashes ("" = no item); see
    # mwl_service.vr.uid_pairs.
    referenced_studies: Mapped[str] = _text(Text)

    # Scheduled procedure step
    scheduled_procedure_step_id: Mapped[str] = mapped_column(String(16), nullable=False)
    scheduled_procedure_step_description: Mapped[str] = mapped_column(
        String(64), nullable=False, default=""
    )
    # One AE title, or several joined by a backslash (16 chars each).
    scheduled_station_ae_title: Mapped[str] = mapped_column(
        String(17 * MAX_STATION_AE_TITLES - 1), nullable=False, default=""
    )
    scheduled_station_name: Mapped[str] = mapped_column(String(16), nullable=False, default="")
    scheduled_procedure_step_location: Mapped[str] = mapped_column(
        String(16), nullable=False, default=""
    )
    modality: Mapped[str] = mapped_column(String(16), nullable=False, default="")
    performing_physician_name: Mapped[str] = mapped_column(String(324), nullable=False, default="")
    scheduled_procedure_step_comments: Mapped[str] = _text(Text)
    requested_contrast_agent: Mapped[str] = _text(String(64))
    pre_medication: Mapped[str] = _text(String(64))
    # Scheduled Protocol Code Sequence (inside the step); an empty code value = no code.
    scheduled_protocol_code_value: Mapped[str] = _text(String(16))
    scheduled_protocol_coding_scheme_designator: Mapped[str] = _text(String(16))
    scheduled_protocol_code_meaning: Mapped[str] = _text(String(64))
    scheduled_protocol_coding_scheme_version: Mapped[str] = _text(String(16))
    # The absolute instant plus the site zone; date/time are the site-local wall
    # clock (DICOM DA/TM) kept beside it so C-FIND ranges match in SQL.
    scheduled_start_utc: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    site_timezone: Mapped[str] = mapped_column(String(64), nullable=False)
    scheduled_start_date: Mapped[str] = mapped_column(String(8), nullable=False)
    scheduled_start_time: Mapped[str] = mapped_column(String(6), nullable=False)
    duration_minutes: Mapped[int | None] = mapped_column(Integer, nullable=True)

    step_status: Mapped[str] = mapped_column(String(16), nullable=False, default=SCHEDULED)
    step_status_owner: Mapped[str] = mapped_column(String(8), nullable=False, default=OWNER_SYNC)
    discontinued_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    discontinued_reason: Mapped[str] = mapped_column(String(255), nullable=False, default="")

    # What the source said of the booking (any source type), kept for operators and audits
    booking_status: Mapped[str] = mapped_column(String(32), nullable=False, default="")
    resource_name: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    project_name: Mapped[str] = mapped_column(String(255), nullable=False, default="")

    content_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


# History event kinds
EVENT_INSERT = "insert"
EVENT_UPDATE = "update"
EVENT_CANCEL = "cancel"
EVENT_RESTORE = "restore"
EVENT_MPPS_CREATE = "mpps_create"
EVENT_MPPS_SET = "mpps_set"
EVENT_PURGE = "purge"  # the row (and its MPPS instances) deleted by retention


class WorklistHistory(Base):
    """Append-only audit trail of every insert/update/cancel/MPPS change."""

    __tablename__ = "worklist_history"
    __table_args__ = (Index("ix_history_source_booking", "source", "booking_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    worklist_item_id: Mapped[int | None] = mapped_column(
        ForeignKey("worklist_items.id"), nullable=True
    )
    source: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    booking_id: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    event: Mapped[str] = mapped_column(String(32), nullable=False)
    old_step_status: Mapped[str] = mapped_column(String(16), nullable=False, default="")
    new_step_status: Mapped[str] = mapped_column(String(16), nullable=False, default="")
    # JSON text: changed fields (old/new), reasons, MPPS instance UID, run id ...
    details: Mapped[str] = mapped_column(Text, nullable=False, default="{}")
    changed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    # Who: "sync:SOURCE", "mpps:CALLING_AE", "api:USER", "retention".
    changed_by: Mapped[str] = mapped_column(String(96), nullable=False, default="")


class MppsInstance(Base):
    """A Modality Performed Procedure Step received over DICOM (survives restarts)."""

    __tablename__ = "mpps_instances"

    sop_instance_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    # NULL for an unscheduled procedure (no matching worklist row): recorded, not lost.
    worklist_item_id: Mapped[int | None] = mapped_column(
        ForeignKey("worklist_items.id"), nullable=True
    )
    calling_ae_title: Mapped[str] = mapped_column(String(16), nullable=False, default="")
    study_instance_uid: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    accession_number: Mapped[str] = mapped_column(String(16), nullable=False, default="")
    scheduled_procedure_step_id: Mapped[str] = mapped_column(String(16), nullable=False, default="")
    # The instance's attributes as DICOM JSON (pydicom Dataset.to_json()).
    dataset_json: Mapped[str] = mapped_column(Text, nullable=False, default="{}")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class SourceSyncState(Base):
    """Per data source: the newest fetch that was published (an older one is refused)."""
    __tablename__ = "source_sync_state"

    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_fetched_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    last_published_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    last_run_id: Mapped[str] = mapped_column(String(64), nullable=False, default="")


class ExcludedBooking(Base):
    """A booking the latest publish of its source fetched but did not offer, and why
    (ids, times and reasons only). Each publish replaces its source's list."""

    __tablename__ = "excluded_bookings"
    __table_args__ = (Index("ix_excluded_source_date", "source", "scheduled_start_date"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(64), nullable=False)
    booking_id: Mapped[str] = mapped_column(String(64), nullable=False)
    scheduled_start_utc: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    site_timezone: Mapped[str] = _text(String(64))
    scheduled_start_date: Mapped[str] = _text(String(8))  # site-local, "" when unknown
    resource_name: Mapped[str] = _text(String(128))
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    reason: Mapped[str] = mapped_column(String(255), nullable=False)
    run_id: Mapped[str] = _text(String(64))
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)


class ApiUser(Base):
    """An mwl-api account; its password only as an argon2 hash."""

    __tablename__ = "api_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    role: Mapped[str] = mapped_column(String(8), nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    disabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class ApiToken(Base):
    """A bearer token of an account, stored as its SHA-256 only: any replica accepts
    it, and disabling the account or changing its password deletes it."""

    __tablename__ = "api_tokens"
    __table_args__ = (Index("ix_api_tokens_user", "user_id"),)

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("api_users.id"), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)


class LoginFailure(Base):
    """A refused login, per client address: the rate limit every replica shares."""

    __tablename__ = "api_login_failures"
    __table_args__ = (Index("ix_login_failures_client", "client", "failed_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    client: Mapped[str] = mapped_column(String(64), nullable=False)
    failed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)


# ---------------------------------------------------------------- identifiers
# Derived from (source, booking id) alone: the same on every machine and in every run,
# for synced rows and manual items alike (source ``manual``).

# Fixed namespace so identifiers are reproducible on every machine, forever.
_UID_NAMESPACE = uuid.UUID("6f3c7c1e-9a57-4b43-9d7e-5b0f1f6a2c11")


@functools.lru_cache(maxsize=64, typed=True)  # a sync asks twice per booking (accession, study UID)
def _booking_uuid(source: str, booking_id: str) -> uuid.UUID:
    return uuid.uuid5(_UID_NAMESPACE, f"{source}\x1f{booking_id}")


def study_instance_uid(source: str, booking_id: str) -> str:
    """`2.25.<uuid5 as int>`: a valid UI (digits and dots, at most 44 of 64 chars)."""
    return f"2.25.{_booking_uuid(source, booking_id).int}"


def accession_number(source: str, booking_id: str) -> str:
    """16 decimal digits (SH limit) derived from (source, booking_id)."""
    return f"{_booking_uuid(source, booking_id).int % 10**16:016d}"


def step_id(source: str, booking_id: str) -> str:
    """Scheduled Procedure Step ID / Requested Procedure ID (SH, <= 16 chars).

    The booking id itself when it fits, so technologists can find the booking;
    otherwise a stable digest of it.
    """
    bid = str(booking_id)
    if 0 < len(bid) <= 16 and bid.isascii() and bid.replace("-", "").replace("_", "").isalnum():
        return bid
    return hashlib.sha1(bid.encode("utf-8")).hexdigest()[:16].upper()
