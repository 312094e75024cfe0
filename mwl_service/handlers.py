"""The pynetdicom event handlers of mwl-service: C-ECHO, C-FIND, MPPS N-CREATE/N-SET
and the association events it logs.

They only wire pynetdicom to the worklist database, as pynetdicom's own
``apps/qrscp`` keeps its handlers apart from the application that binds them
(:mod:`mwl_service.server`):

* C-FIND asks :func:`mwl_service.matching.find_worklist` (a pure query-to-results
  function) and streams its answers, one pooled connection per query, through
  :mod:`mwl_service.fastpath` (answers encoded by :func:`~mwl_service.encode.row_to_bytes`,
  framed as pynetdicom would, several per socket write; the final status is left to
  pynetdicom). With pynetdicom's identifier logging on (DEBUG), or when the
  association internals are not as expected, the handler yields the answers as
  datasets (:func:`~mwl_service.encode.row_to_dataset`) the standard way instead;
* N-CREATE / N-SET call :mod:`mwl_service.mpps`.

What the log lines may say: :mod:`mwl_service.logs`.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID
from sqlalchemy.engine import Engine

from mwl_service import mpps
from mwl_service.encode import row_to_bytes, row_to_dataset
from mwl_service.fastpath import PeerStalled, PendingFindResponses, fast_responses
from mwl_service.logs import describe_query, number_association, peer_label
from mwl_service.matching import QueryError, RowConverter, find_worklist
from mwl_service.settings import ServerConfig

# The logger the service's lines have always carried: operators filter on it.
LOG = logging.getLogger("mwl_service.server")

# C-FIND statuses (PS3.4 K.4.1.1.4)
FIND_PENDING = 0xFF00
FIND_CANCEL = 0xFE00
FIND_UNABLE_TO_PROCESS = 0xC000

# What a C-FIND handler yields to pynetdicom: (status, identifier or None).
FindResponse = tuple[Any, Any]


def _status(code: int, comment: str = "") -> Dataset:
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment[:64]
    return ds


def handle_echo(event: Any) -> int:
    LOG.debug("C-ECHO from %s", peer_label(event.assoc))
    return 0x0000


# ----------------------------------------------------------------- C-FIND


def matcher_options(event: Any, config: ServerConfig) -> dict[str, Any]:
    """The matcher's keyword options this server's settings ask for: the answer
    limit, the calling AE title as the station (``--station-from-calling-aet``) and
    how many days of past steps are offered as work (``--offer-past-days``)."""
    calling = (event.assoc.requestor.ae_title or "").strip()
    return {
        "limit": config.max_results,
        "calling_station": calling if config.station_from_calling_aet and calling else None,
        "offer_past_days": config.offer_past_days,
    }


@dataclass
class _FindReport:
    """What one C-FIND did, for the line logged when it ends."""

    peer: str
    started: float = field(default_factory=time.perf_counter)
    count: int = 0
    outcome: str = "success"

    def log(self) -> None:
        LOG.info(
            "C-FIND from %s: %d result(s), %s, %.1f ms",
            self.peer,
            self.count,
            self.outcome,
            (time.perf_counter() - self.started) * 1000,
        )


def handle_find(event: Any, engine: Engine, config: ServerConfig) -> Iterator[FindResponse]:
    """EVT_C_FIND: stream the matcher's answers; honour C-CANCEL between answers."""
    report = _FindReport(peer_label(event.assoc))
    try:
        identifier = event.identifier
        summary = describe_query(identifier)
    except Exception as exc:  # noqa: BLE001
        LOG.warning(
            "C-FIND from %s: undecodable identifier (%s)", report.peer, type(exc).__name__
        )
        yield _status(FIND_UNABLE_TO_PROCESS, "Identifier could not be decoded"), None
        return
    LOG.info("C-FIND from %s: %s", report.peer, summary)
    if LOG.isEnabledFor(logging.DEBUG):
        # A copy: printing decodes every value, which must not reach the matcher.
        LOG.debug("C-FIND identifier from %s:\n%s", report.peer, copy.deepcopy(identifier))
    try:
        yield from _answer(event, identifier, engine, config, report)
    except PeerStalled as exc:
        report.outcome = f"connection closed: {exc}"
        LOG.warning("C-FIND from %s: %s, connection closed", report.peer, exc)
    except QueryError as exc:
        status = int(getattr(exc, "status", FIND_UNABLE_TO_PROCESS))
        report.outcome = f"refused 0x{status:04X}"
        LOG.warning("C-FIND from %s refused: status 0x%04X", report.peer, status)
        LOG.debug("C-FIND from %s refused: %s", report.peer, exc)
        yield _status(status, str(exc)), None
    except Exception as exc:  # answer the peer, keep the server up
        report.outcome = "failed 0xC000"
        # Exception text may quote SQL parameters (patient values): type only at ERROR.
        LOG.error("C-FIND from %s failed: %s", report.peer, type(exc).__name__)
        LOG.debug("C-FIND failure details", exc_info=True)
        yield _status(FIND_UNABLE_TO_PROCESS, "Unable to process the query"), None
    finally:
        report.log()


def _answer(
    event: Any, identifier: Dataset, engine: Engine, config: ServerConfig, report: _FindReport
) -> Iterator[FindResponse]:
    """The responses to one query: its answers one pooled connection streams, then
    Cancel when a C-CANCEL arrived while the last answer went out."""
    responses = fast_responses(
        event, enabled=config.find_fast_path, stall_timeout=config.network_timeout
    )
    convert: RowConverter = row_to_dataset if responses is None else row_to_bytes
    with engine.connect() as conn:
        # Answers are encoded by the matcher in the negotiated transfer syntax.
        answers = find_worklist(
            conn,
            identifier,
            implicit_vr=UID(event.context.transfer_syntax).is_implicit_VR,
            convert=convert,
            **matcher_options(event, config),
        )
        if responses is None:
            finished = yield from _pending_datasets(event, answers, report)
        else:
            finished = yield from _pending_bytes(event, answers, responses, report)
    if finished and event.is_cancelled:
        report.outcome = "cancelled"
        yield FIND_CANCEL, None


def _pending_datasets(
    event: Any, answers: Iterator[Dataset], report: _FindReport
) -> Generator[FindResponse, None, bool]:
    """Standard path: pynetdicom encodes and sends each Pending response. True when
    every answer was yielded."""
    for answer in answers:
        if event.is_cancelled:
            report.outcome = "cancelled"
            yield FIND_CANCEL, None
            return False
        report.count += 1
        yield FIND_PENDING, answer
    return True


def _pending_bytes(
    event: Any, answers: Iterator[bytes], responses: PendingFindResponses, report: _FindReport
) -> Generator[FindResponse, None, bool]:
    """Fast path: we send the Pending responses; nothing is yielded for them, so
    pynetdicom sends only the final status, after them on the same DUL queue
    (Success when the handler simply returns). True when every answer was sent."""
    assoc = event.assoc
    for encoded in answers:
        if event.is_cancelled:
            responses.flush()  # the answers before it, then Cancel
            report.outcome = "cancelled"
            yield FIND_CANCEL, None
            return False
        if not assoc.is_established:
            report.outcome = "association ended"
            return False
        if not encoded:
            # No keys requested: pynetdicom refuses an empty identifier (0xC312), as
            # the standard path would.
            yield FIND_PENDING, Dataset()
            return False
        responses.send(encoded)
        report.count += 1
    responses.flush()  # before pynetdicom's final response
    return True


# ----------------------------------------------------------------- MPPS


def handle_n_create(event: Any, engine: Engine) -> tuple[Dataset, Dataset | None]:
    uid = event.request.AffectedSOPInstanceUID
    return _handle_mpps("N-CREATE", mpps.create_mpps, event, uid, event.attribute_list, engine)


def handle_n_set(event: Any, engine: Engine) -> tuple[Dataset, Dataset | None]:
    uid = event.request.RequestedSOPInstanceUID
    return _handle_mpps("N-SET", mpps.set_mpps, event, uid, event.modification_list, engine)


def _handle_mpps(
    op: str, apply: Any, event: Any, uid: Any, attributes: Dataset, engine: Engine
) -> tuple[Dataset, Dataset | None]:
    """Run one MPPS operation; storage errors become 0x0110, never a false success."""
    peer = peer_label(event.assoc)
    try:
        outcome = apply(
            engine,
            str(uid) if uid else None,
            attributes,
            calling_ae_title=(event.assoc.requestor.ae_title or "").strip(),
        )
    except Exception as exc:
        LOG.error("MPPS %s %s from %s failed: %s", op, uid, peer, type(exc).__name__)
        LOG.debug("MPPS %s failure details", op, exc_info=True)
        verb = "store" if op == "N-CREATE" else "update"
        return _status(mpps.PROCESSING_FAILURE, f"Unable to {verb} the MPPS instance"), None
    _log_mpps(op, peer, uid, outcome)
    return outcome.status_dataset(), None


def _log_mpps(op: str, peer: str, uid: Any, outcome: mpps.MppsOutcome) -> None:
    if outcome.ok:
        rows = outcome.worklist_item_ids or "none (unscheduled)"
        LOG.info(
            "MPPS %s %s from %s: %s, worklist rows %s", op, uid, peer, outcome.mpps_status, rows
        )
    else:
        LOG.warning(
            "MPPS %s %s from %s: status 0x%04X (%s)",
            op,
            uid,
            peer,
            outcome.status,
            outcome.error_comment,
        )


# ----------------------------------------------------------------- association events


def on_conn_open(event: Any, counter: Iterator[int]) -> None:
    number_association(event.assoc, next(counter))


def on_established(event: Any) -> None:
    assoc = event.assoc
    contexts = sorted({cx.abstract_syntax.name for cx in assoc.accepted_contexts})
    LOG.info("Association %s accepted (%s)", peer_label(assoc), ", ".join(contexts))


def on_rejected(event: Any, config: ServerConfig) -> None:
    assoc = event.assoc
    primitive = assoc.requestor.primitive
    calling = (getattr(primitive, "calling_ae_title", "") or "").strip()
    called = (getattr(primitive, "called_ae_title", "") or "").strip()
    if config.allowed_aets and calling not in config.allowed_aets:
        reason = "calling AE title not on the allow-list"
    elif called != config.ae_title:
        reason = f"called AE title {called!r} is not {config.ae_title!r}"
    else:
        reason = f"more than {config.max_associations} associations"
    LOG.warning("Association %s rejected: %s", peer_label(assoc), reason)


def on_released(event: Any) -> None:
    LOG.info("Association %s released", peer_label(event.assoc))


def on_aborted(event: Any) -> None:
    LOG.info("Association %s aborted", peer_label(event.assoc))
