"""What one running mwl-service is configured with: :class:`ServerConfig` and the
defaults the command line shows."""

from __future__ import annotations

from dataclasses import dataclass

from mwl_service.retention import DEFAULT_OFFER_PAST_DAYS

DEFAULT_AE_TITLE = "CALPENDO_MWL"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11112
DEFAULT_MAX_ASSOCIATIONS = 10
DEFAULT_NETWORK_TIMEOUT = 60.0
DEFAULT_ACSE_TIMEOUT = 30.0
DEFAULT_DIMSE_TIMEOUT = 30.0
# A connection must send its association request this soon (seconds): short, so
# silent connections and probes cannot hold the slots scanners need.
DEFAULT_REQUEST_TIMEOUT = 5.0


@dataclass(frozen=True)
class ServerConfig:
    """Everything the DICOM service needs to run; the CLI builds one from its options."""

    db_url: str | None = None  # None: WORKLIST_DB_URL, else the default SQLite file
    ae_title: str = DEFAULT_AE_TITLE
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    allowed_aets: tuple[str, ...] = ()  # empty: any calling AE title
    max_associations: int = DEFAULT_MAX_ASSOCIATIONS
    # Live connections per peer address; None: half of max_associations (at least 1).
    max_connections_per_host: int | None = None
    network_timeout: float | None = DEFAULT_NETWORK_TIMEOUT
    acse_timeout: float | None = DEFAULT_ACSE_TIMEOUT
    dimse_timeout: float | None = DEFAULT_DIMSE_TIMEOUT
    request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT
    max_results: int | None = None  # cap on C-FIND answers per query
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None  # given: clients must present a certificate it signed
    # Send C-FIND Pending responses through PendingFindResponses (False: always
    # pynetdicom's per-response path; tests compare the two).
    find_fast_path: bool = True
    # A query that leaves Scheduled Station AE Title universal gets the calling AE
    # title's steps only (for consoles that never send their own AE title).
    station_from_calling_aet: bool = False
    # Steps that started longer ago are not offered unless the query has a date.
    offer_past_days: float | None = DEFAULT_OFFER_PAST_DAYS

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)

    @property
    def per_host_limit(self) -> int:
        if self.max_connections_per_host is not None:
            return int(self.max_connections_per_host)
        return max(1, -(-int(self.max_associations) // 2))
