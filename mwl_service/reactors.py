"""Association reactors that wait for work instead of polling for it.

pynetdicom runs two threads per association, and both poll: the DUL thread
(``DULServiceProvider.run_reactor``) sleeps ``_run_loop_delay`` (1 ms) whenever it
found nothing to send, read or process, and the association thread
(``Association._run_reactor``) sleeps 1 ms before every look for a DIMSE message,
a release or an abort. Each hop of a conversation between the two threads waited up
to a millisecond (a C-ECHO association makes about eight), and an idle association
woke 2000 times a second: 16 open associations kept about half a core busy.

:class:`WaitingDUL` and :class:`WaitingAssociation` run the same loops, doing the
same work in the same order, but block while there is none: the DUL thread in
``select()`` on the connection and a wake-up socket, the association thread on an
Event. Whoever queues work for a thread wakes it (the queues between them are
:class:`WakingQueue`), and each wait ends by itself at the next deadline (ARTIM
timer, network timeout) or after ``MAX_WAIT``, so a change nobody announced is
still seen.

pynetdicom internals relied on (pynetdicom>=3,<4, checked against 3.0.4; when one
does not hold, :func:`adopt_reactors` leaves pynetdicom's reactors in place, logged
once). The DUL: ``to_provider_queue``, ``event_queue`` and ``to_user_queue`` (plain
``queue.Queue``), ``_process_recv_primitive()``, ``_is_transport_event()``,
``state_machine.do_action(event)``, ``artim_timer`` and ``_idle_timer`` (a
``pynetdicom.timer.Timer``: ``timeout``, ``remaining``, ``expired``, and
``_start_time``/``_end_time`` telling whether it runs), ``_kill_thread``,
``kill_dul()``/``stop_dul()``, ``socket`` (the AssociationSocket, whose ``socket``
is the connection or None once closed). The association: ``_reactor_checkpoint``,
``_is_paused``, ``_kill``, ``_dul_ready``, ``dimse.msg_queue``/``dimse.get_msg``,
``_serve_request``, ``acse.is_release_requested``/``is_aborted``/``send_release``,
``dul.idle_timer_expired()``, ``network_timeout_response``. The reactors'
bodies follow pynetdicom 3.0.4's ``run_reactor`` and ``_run_reactor``.
"""

from __future__ import annotations

import logging
import queue
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from pynetdicom import _config, evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.timer import Timer

LOG = logging.getLogger("mwl_service.reactors")
# The copied reactor bodies log what pynetdicom's log, under pynetdicom's names.
DUL_LOG = logging.getLogger("pynetdicom.dul")
ASSOC_LOG = logging.getLogger("pynetdicom.association")

# Longest wait without a deadline (seconds): a state change that nobody announced
# is seen this late at worst; an idle association wakes its threads this often.
MAX_WAIT = 1.0
# After a failed select() (the connection closed under it), pynetdicom's own pace.
_ERROR_PAUSE = 0.001
_warned = False


def seconds_left(timer: Timer) -> float:
    """Seconds until ``timer`` expires, at most MAX_WAIT (MAX_WAIT when it does not
    run or never expires)."""
    if timer.timeout is None or timer._start_time is None or timer._end_time is not None:
        return MAX_WAIT
    return min(MAX_WAIT, max(0.0, timer.remaining))


class Waker:
    """Wakes the one thread that waits in ``select()`` on :meth:`fileno`.

    At most one byte is in flight: :meth:`wake` writes only when no wake-up is
    pending, and the waiting thread calls :meth:`reset` before it last looks for
    work, so a wake-up after that look is never lost. The waiting thread never
    wakes itself (it looks for work before it waits)."""

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._pending = False
        self._owner = threading.get_ident()

    def fileno(self) -> int:
        return self._reader.fileno()

    def wake(self) -> None:
        if self._pending or threading.get_ident() == self._owner:
            return
        self._pending = True
        try:
            self._writer.send(b"\0")
        except OSError:  # full (a wake-up is pending anyway) or already closed
            pass

    def reset(self) -> None:
        try:
            while self._reader.recv(64):
                pass
        except OSError:  # nothing left to read
            pass
        self._pending = False

    def close(self) -> None:
        self._reader.close()
        self._writer.close()


class WakingQueue(queue.Queue):  # type: ignore[type-arg]
    """A queue.Queue that calls its ``_mwl_wake`` after every put."""

    _mwl_wake: Callable[[], None]

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._mwl_wake()


def make_waking(q: queue.Queue, wake: Callable[[], None]) -> None:  # type: ignore[type-arg]
    """Turn ``q``, with what it holds, into a WakingQueue calling ``wake``."""
    q.__class__ = WakingQueue
    q._mwl_wake = wake  # type: ignore[attr-defined]


class WaitingDUL(DULServiceProvider):
    """pynetdicom's DUL whose reactor blocks in select() while it has no work."""

    _mwl_waker: Waker | None = None

    def run(self) -> None:
        """The DUL thread (instead of the polling ``run_reactor`` target)."""
        try:
            self._mwl_waker = Waker()
        except OSError:  # no descriptor left for the wake-up socket
            LOG.warning("No wake-up socket for an association; its DUL thread polls")
        try:
            if self._mwl_waker is None:
                self.run_reactor()  # pynetdicom's polling loop needs no descriptor
            else:
                self._mwl_react()
        finally:
            waker, self._mwl_waker = self._mwl_waker, None
            if waker is not None:
                waker.close()
            self.assoc._mwl_wake.set()  # the association thread sees the DUL end

    def _mwl_react(self) -> None:
        self._idle_timer.start()
        self.assoc._dul_ready.set()
        while not self._kill_thread:
            # ARTIM first, so its event is queued ahead of any other this loop.
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                # Either send one queued primitive or read one PDU per loop.
                if not self._process_recv_primitive() and self._is_transport_event():
                    self._idle_timer.restart()
            except Exception as exc:  # noqa: BLE001 - as pynetdicom's reactor
                self._mwl_abort(exc)
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                self._mwl_wait()
                continue
            self.state_machine.do_action(event)

    def _mwl_abort(self, exc: Exception) -> None:
        """As pynetdicom's reactor on an exception: A-ABORT past the state machine
        (whose state can no longer be trusted), and both reactors end."""
        DUL_LOG.error("Exception in DUL.run(), aborting association")
        DUL_LOG.exception(exc)
        abort_pdu = A_ABORT_RQ()
        abort_pdu.source = 0x02
        abort_pdu.reason_diagnostic = 0x00
        self.socket.send(abort_pdu.encode())  # type: ignore[union-attr]
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.assoc._kill = True
        self._kill_thread = True

    def _mwl_wait(self) -> None:
        """Block until the peer sent something, someone queued work, or the ARTIM
        timer runs out (MAX_WAIT at most)."""
        waker = self._mwl_waker
        waker.reset()  # type: ignore[union-attr]
        if self._kill_thread or not self.to_provider_queue.empty():
            return
        if not self.event_queue.empty():
            return
        watched: list[Any] = [waker]
        sock = getattr(self.socket, "socket", None)
        if sock is not None and sock.fileno() != -1:
            if isinstance(sock, ssl.SSLSocket) and sock.pending():
                return  # decrypted bytes that select() cannot see
            watched.append(sock)
        try:
            select.select(watched, [], [], seconds_left(self.artim_timer))
        except (OSError, ValueError):  # the connection was closed meanwhile
            time.sleep(_ERROR_PAUSE)

    def _mwl_wake(self) -> None:
        waker = self._mwl_waker
        if waker is not None:
            waker.wake()

    def kill_dul(self) -> None:
        super().kill_dul()
        self._mwl_wake()

    def stop_dul(self) -> bool:
        """Stop the reactor if it is in Sta1 (idle), as pynetdicom's does, but wake
        it and join it instead of polling until it ended."""
        if self.state_machine.current_state != "Sta1":
            return False
        self._kill_thread = True
        self._mwl_wake()
        if self.is_alive() and threading.current_thread() is not self:
            self.join()
        return True


class WaitingAssociation(Association):
    """pynetdicom's acceptor Association whose reactor waits on an Event."""

    _mwl_wake: threading.Event

    def _run_reactor(self) -> None:
        wake = self._mwl_wake
        while not self._kill:
            # Paused by a thread that needs the queues (release(), send_*()).
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            wake.clear()
            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                self._serve_request(msg, context_id)  # type: ignore[arg-type]
                continue
            if self._mwl_ended():
                return
            self._is_paused = True  # waiting, it touches nothing
            wake.wait(seconds_left(self.dul._idle_timer))

    def _mwl_ended(self) -> bool:
        """Release, abort, the DUL gone, the network timeout: pynetdicom's checks,
        in its order; True when the association ended."""
        if self.is_established and self.acse.is_release_requested():
            self.acse.send_release(is_response=True)
            ASSOC_LOG.info("Association Released")
            self.is_released = True
            self.is_established = False
            evt.trigger(self, evt.EVT_RELEASED, {})
        elif self.acse.is_aborted():
            aborted = " (A-P-ABORT)" if self.acse.is_aborted("a-p-abort") else ""
            ASSOC_LOG.info("Association Aborted%s", aborted)
            self.dul.receive_pdu(wait=False)  # so EVT_ACSE_RECV fires
            self.is_aborted = True
            self.is_established = False
            evt.trigger(self, evt.EVT_ABORTED, {})
        elif self.dul.is_alive() and self.dul.idle_timer_expired():
            ASSOC_LOG.error("Network timeout reached")
            if self.network_timeout_response == "A-RELEASE":
                self._is_paused = True
                self._reactor_checkpoint.wait()
                self.release()
                self._is_paused = False
            else:
                self.abort()
        elif self.dul.is_alive():
            return False
        self.kill()
        return True

    def kill(self) -> None:
        self._kill = True
        self._mwl_wake.set()
        super().kill()


_ASSOC_NEEDS = ("_reactor_checkpoint", "_is_paused", "_dul_ready", "_kill", "_serve_request")
_ACSE_NEEDS = ("is_release_requested", "is_aborted", "send_release")


def _expected(assoc: Any) -> str | None:
    """What is not as the module docstring says, or None."""
    dul = getattr(assoc, "dul", None)
    if type(assoc) is not Association or type(dul) is not DULServiceProvider:
        return f"association {type(assoc).__name__}, DUL {type(dul).__name__}"
    if assoc.ident is not None or dul.ident is not None:
        return "already started"
    if _config.PASS_CONTEXTVARS:
        return "PASS_CONTEXTVARS is set"
    queues = (dul.to_provider_queue, dul.event_queue, dul.to_user_queue, assoc.dimse.msg_queue)
    if any(type(q) is not queue.Queue for q in queues):
        return "a queue is not a queue.Queue"
    timers = (dul.artim_timer, dul._idle_timer)
    if any(not isinstance(t, Timer) or not hasattr(t, "_start_time") for t in timers):
        return "a timer is not a pynetdicom Timer"
    needed = ("_process_recv_primitive", "_is_transport_event", "_kill_thread", "state_machine")
    missing = [name for name in needed if not hasattr(dul, name)]
    missing += [n for n in _ASSOC_NEEDS if not hasattr(assoc, n)]
    missing += [n for n in _ACSE_NEEDS if not hasattr(assoc.acse, n)]
    return f"missing {', '.join(missing)}" if missing else None


def adopt_reactors(assoc: Any) -> bool:
    """Make an accepted association, before it starts, run the waiting reactors.

    The Association, its DUL and the queues between their threads keep their
    state: they are the same objects, of subclasses that only run (or put)
    differently. Returns False, and leaves
    pynetdicom's polling reactors, when the internals are not as expected."""
    global _warned
    problem = _expected(assoc)
    if problem is not None:
        if not _warned:
            _warned = True
            LOG.warning("Waiting reactors unavailable (%s); pynetdicom's polling is used", problem)
        return False
    dul = assoc.dul
    assoc._mwl_wake = threading.Event()
    assoc.__class__ = WaitingAssociation
    dul.__class__ = WaitingDUL
    make_waking(dul.to_provider_queue, dul._mwl_wake)
    make_waking(dul.event_queue, dul._mwl_wake)
    make_waking(dul.to_user_queue, assoc._mwl_wake.set)
    make_waking(assoc.dimse.msg_queue, assoc._mwl_wake.set)
    return True
