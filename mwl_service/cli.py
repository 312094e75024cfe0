"""`mwl-service`: run the DICOM Modality Worklist / MPPS server."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from mwl_service.acceptor import PENDING_PER_ASSOCIATION
from mwl_service.database import DEFAULT_DB_PATH, db_url_origin, get_db_url
from mwl_service.logs import LOGGED_VALUE_LENGTH
from mwl_service.retention import DEFAULT_OFFER_PAST_DAYS
from mwl_service.server import start_server
from mwl_service.settings import (
    DEFAULT_ACSE_TIMEOUT,
    DEFAULT_AE_TITLE,
    DEFAULT_DIMSE_TIMEOUT,
    DEFAULT_HOST,
    DEFAULT_MAX_ASSOCIATIONS,
    DEFAULT_NETWORK_TIMEOUT,
    DEFAULT_PORT,
    DEFAULT_REQUEST_TIMEOUT,
    ServerConfig,
)
from mwl_service.vr import validate_ae_title

LOG = logging.getLogger("mwl_service.cli")
T = TypeVar("T")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

DESCRIPTION = """\
DICOM Modality Worklist (C-FIND) and Modality Performed Procedure Step
(N-CREATE/N-SET) server over the worklist database that the Dagster syncs
publish (Calpendo, REDCap and file sources alike) and mwl-api edits. Also
answers Verification (C-ECHO). Accepts Explicit VR Little Endian (preferred)
and Implicit VR Little Endian. It only reads worklist rows and records MPPS
progress; it never calls a data source.
"""

EPILOG = f"""\
environment:
  WORKLIST_DB_URL   database URL used when --db-url is not given
                    (fallback: sqlite:///{DEFAULT_DB_PATH}, relative to the
                    working directory)

security:
  Associations whose called AE title is not --ae-title are rejected. With
  --allowed-aet, calling AE titles not on the list are rejected too. With
  --tls-cert/--tls-key the port speaks TLS (1.2 or newer) only; adding --tls-ca
  requires every client to present a certificate signed by that CA.
  A connection that has not sent its association request (TLS handshake
  included) within --request-timeout is closed, and one peer address may hold
  at most --max-connections-per-host connections, so silent connections, port
  scanners or HTTP probes cannot take the slots the scanners need; while they
  wait they hold no association slot. Every read and write on a connection
  waits at most --network-timeout, and each PDU must arrive whole within it.

logging:
  INFO logs associations (calling AE title, address), the keys each query
  uses (values only for modality, station, dates, step status, cut to
  {LOGGED_VALUE_LENGTH} characters) and result counts; patient names and IDs are
  not logged. DEBUG adds pynetdicom's protocol trace including full query and
  response datasets.

SIGTERM or SIGINT stops the server within a few seconds: open associations
are aborted, connections whose peer does not respond are closed, and the
process exits with status 0.
"""


MAX_ASSOCIATIONS_HELP = (
    "maximum simultaneous associations; more are rejected as 'local limit exceeded'. "
    "Connections that have not sent their association request yet do not count: up to "
    f"{PENDING_PER_ASSOCIATION} x N of them may wait, more are closed at once "
    f"(default: {DEFAULT_MAX_ASSOCIATIONS})"
)


def _int_at_least(minimum: int):
    """argparse type: an integer of at least `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}: {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1)


# Longest --offer-past-days: 100 years, "no limit" in practice. Much more reaches back
# before year 1, and every C-FIND without a date would fail.
MAX_OFFER_PAST_DAYS = 36500


def _days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}") from None
    if not 0 <= value <= MAX_OFFER_PAST_DAYS:  # NaN too
        raise argparse.ArgumentTypeError(
            f"must be 0 to {MAX_OFFER_PAST_DAYS} days: {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535: {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text!r}")
    return value


def checked_by(check: Callable[[str], T]) -> Callable[[str], T]:
    """argparse type from a check that raises ValueError: argparse shows the check's
    own message (mwl-api's --timezone takes one too)."""

    def parse(text: str) -> T:
        try:
            return check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


_ae_title = checked_by(validate_ae_title)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mwl-service",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_service_options(parser)
    _add_admission_options(parser)
    _add_timeout_options(parser)
    _add_query_options(parser)
    _add_tls_and_log_options(parser)
    return parser


def _add_service_options(parser: argparse.ArgumentParser) -> None:
    """Which database, and where the service listens under which AE title."""
    parser.add_argument(
        "--db-url",
        default=None,
        metavar="URL",
        help="SQLAlchemy URL of the worklist database, e.g. sqlite:///var/worklist.db or "
        "postgresql+psycopg://user@host/db (default: $WORKLIST_DB_URL, else "
        f"sqlite:///{DEFAULT_DB_PATH}); missing tables are created",
    )
    parser.add_argument(
        "--ae-title",
        type=_ae_title,
        default=DEFAULT_AE_TITLE,
        metavar="AET",
        help="this server's AE title, max 16 characters; associations calling "
        f"another title are rejected (default: {DEFAULT_AE_TITLE})",
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default: {DEFAULT_HOST}; use 0.0.0.0 for all IPv4 interfaces)",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"TCP port to listen on (default: {DEFAULT_PORT})",
    )


def _add_admission_options(parser: argparse.ArgumentParser) -> None:
    """Who may associate, and how many at once."""
    parser.add_argument(
        "--allowed-aet",
        action="append",
        default=[],
        metavar="AET[,AET...]",
        help="calling AE title allowed to associate; repeat the option or separate "
        "titles with commas. Without it any calling AE title is accepted",
    )
    parser.add_argument(
        "--max-associations",
        type=_positive_int,
        default=DEFAULT_MAX_ASSOCIATIONS,
        metavar="N",
        help=MAX_ASSOCIATIONS_HELP,
    )
    parser.add_argument(
        "--max-connections-per-host",
        type=_positive_int,
        default=None,
        metavar="N",
        help="maximum simultaneous connections from one peer address, associated or "
        "not; more are closed at once (default: half of --max-associations, at least 1)",
    )


def _add_timeout_options(parser: argparse.ArgumentParser) -> None:
    """How long each stage of a connection may take."""
    parser.add_argument(
        "--request-timeout",
        type=_seconds,
        default=DEFAULT_REQUEST_TIMEOUT,
        metavar="SECONDS",
        help="close a connection that has not completed its TLS handshake and sent "
        "its association request this long after connecting "
        f"(default: {DEFAULT_REQUEST_TIMEOUT:g})",
    )
    parser.add_argument(
        "--network-timeout",
        type=_seconds,
        default=DEFAULT_NETWORK_TIMEOUT,
        metavar="SECONDS",
        help="abort an association on which the peer sends nothing, or takes none "
        "of our answers, for this long; no single read or write on a connection "
        "waits longer, and each PDU must arrive whole within it "
        f"(default: {DEFAULT_NETWORK_TIMEOUT:g})",
    )
    parser.add_argument(
        "--acse-timeout",
        type=_seconds,
        default=DEFAULT_ACSE_TIMEOUT,
        metavar="SECONDS",
        help="time allowed for association negotiation and release once the "
        f"request has arrived (default: {DEFAULT_ACSE_TIMEOUT:g})",
    )
    parser.add_argument(
        "--dimse-timeout",
        type=_seconds,
        default=DEFAULT_DIMSE_TIMEOUT,
        metavar="SECONDS",
        help="time to wait for an expected DIMSE message (pynetdicom dimse_timeout; "
        f"default: {DEFAULT_DIMSE_TIMEOUT:g})",
    )


def _add_query_options(parser: argparse.ArgumentParser) -> None:
    """What a C-FIND is answered with."""
    parser.add_argument(
        "--max-results",
        type=_positive_int,
        default=None,
        metavar="N",
        help="answer at most N worklist items per C-FIND (default: no limit)",
    )
    parser.add_argument(
        "--station-from-calling-aet",
        action="store_true",
        help="when a query leaves Scheduled Station AE Title universal (empty), answer "
        "only the steps scheduled for the calling AE title, for consoles that never "
        "send their own (default: off)",
    )
    parser.add_argument(
        "--offer-past-days",
        type=_days,
        default=DEFAULT_OFFER_PAST_DAYS,
        metavar="DAYS",
        help="a step that started more than DAYS days ago is not offered as work to a "
        "query without a Scheduled Procedure Step Start Date; a query naming its date "
        f"still finds it (0 to {MAX_OFFER_PAST_DAYS}; default: {DEFAULT_OFFER_PAST_DAYS:g})",
    )


def _add_tls_and_log_options(parser: argparse.ArgumentParser) -> None:
    """TLS, and how much the service logs."""
    parser.add_argument(
        "--tls-cert",
        default=None,
        metavar="PEM",
        help="server certificate (PEM, may include the chain); enables TLS",
    )
    parser.add_argument(
        "--tls-key",
        default=None,
        metavar="PEM",
        help="private key of --tls-cert (PEM, unencrypted; omit if the cert file holds it)",
    )
    parser.add_argument(
        "--tls-ca",
        default=None,
        metavar="PEM",
        help="CA certificate(s) (PEM); when given, clients must present a certificate "
        "signed by one of them",
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default="INFO",
        help="logging level (default: INFO); DEBUG includes DICOM datasets, i.e. patient data",
    )


def parse_allowed_aets(values: Sequence[str]) -> tuple[str, ...]:
    titles: list[str] = []
    for value in values:
        for part in value.split(","):
            if part.strip():
                title = validate_ae_title(part, "allowed calling AE title")
                if title not in titles:
                    titles.append(title)
    return tuple(titles)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        db_url=get_db_url(args.db_url),
        ae_title=args.ae_title,
        host=args.host,
        port=args.port,
        allowed_aets=parse_allowed_aets(args.allowed_aet),
        max_associations=args.max_associations,
        max_connections_per_host=args.max_connections_per_host,
        network_timeout=args.network_timeout,
        acse_timeout=args.acse_timeout,
        dimse_timeout=args.dimse_timeout,
        request_timeout=args.request_timeout,
        max_results=args.max_results,
        station_from_calling_aet=args.station_from_calling_aet,
        offer_past_days=args.offer_past_days,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_ca=args.tls_ca,
    )


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger().setLevel(getattr(logging, level))
    # pynetdicom logs whole datasets and every PDU at DEBUG/INFO: only when asked.
    quiet = logging.DEBUG if level == "DEBUG" else logging.WARNING
    logging.getLogger("pynetdicom").setLevel(quiet)
    # Alembic's schema-version check at start says "Context impl ..." at INFO: noise here.
    logging.getLogger("alembic").setLevel(quiet)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    if (args.tls_key or args.tls_ca) and not args.tls_cert:
        parser.error("--tls-key and --tls-ca need --tls-cert")
    configure_logging(args.log_level)

    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        LOG.info("Received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    try:
        server = start_server(config)
    except Exception as exc:  # noqa: BLE001 - bad port, certificate, database URL ...
        LOG.error(
            "Cannot start the MWL service: %s: %s (database from %s)",
            type(exc).__name__,
            exc,
            db_url_origin(args.db_url),
        )
        return 1
    # What start-up built lives as long as the process: keep it out of the
    # collector's full passes (pynetdicom's accept loop forces one every 60 turns,
    # which held the GIL for 70-190 ms over ~100,000 start-up objects).
    gc.collect()
    gc.freeze()

    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()  # aborts open associations, closes stuck ones, releases the DB
    LOG.info("MWL service stopped")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
