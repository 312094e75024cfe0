"""The floor: the fastest any server could answer a DICOM client on this machine.

`Recorder` sits between a client (findscu, echoscu) and mwl-service once per query
and keeps the conversation as turns: the bytes the client sent, then the bytes the
server sent back before the client spoke again (A-ASSOCIATE-RQ -> AC, the C-FIND-RQ
-> every P-DATA-TF of the answers and the final status, A-RELEASE-RQ -> RP).

`python bench/mwl_floor.py --port P RECORDING...` then serves those turns: it reads
whole PDUs (their 6-byte header gives the length), and once the bytes a client sent
since its last answer equal a recorded turn, it writes that turn's answer, byte for
byte, in one `sendall`. No DICOM library in its answer path, no thread start, no
parsing beyond PDU lengths; TCP_NODELAY on, and TCP_QUICKACK set again before
every read, so every segment of the client is acknowledged at once (DCMTK 3.6.7's
findscu writes each P-DATA-TF in two writes with Nagle's algorithm on, and the
second waits for the ACK of the first). A client that sends anything not recorded
loses its connection, so a timed run against the floor is the recorded query.
"""

from __future__ import annotations

import argparse
import pickle
import select
import signal
import socket
import struct
import sys
import threading
from pathlib import Path

PDU_HEADER = 6


def quick_ack(sock: socket.socket) -> None:
    """Acknowledge what arrives at once (Linux clears the mode by itself)."""
    option = getattr(socket, "TCP_QUICKACK", None)
    if option is not None:
        sock.setsockopt(socket.IPPROTO_TCP, option, 1)


def read_exactly(sock: socket.socket, size: int) -> bytes | None:
    """`size` bytes, or None when the peer closed first."""
    parts, left = [], size
    while left:
        quick_ack(sock)
        chunk = sock.recv(min(left, 1 << 16))
        if not chunk:
            return None
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def read_pdu(sock: socket.socket) -> bytes | None:
    header = read_exactly(sock, PDU_HEADER)
    if header is None:
        return None
    (length,) = struct.unpack(">I", header[2:6])
    body = read_exactly(sock, length)
    return None if body is None else header + body


# ----------------------------------------------------------------- recording


class Recorder:
    """A one-connection-at-a-time TCP proxy on loopback that records each
    conversation it forwards as [(client bytes, server bytes), ...]."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conversations: list[list[tuple[bytes, bytes]]] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with client, socket.create_connection(self.upstream) as server:
                self.conversations.append(forward(client, server))

    def close(self) -> None:
        self.listener.close()


def forward(client: socket.socket, server: socket.socket) -> list[tuple[bytes, bytes]]:
    """Relay both ways until either side closes; the turns, in order."""
    turns: list[list[bytearray]] = []
    open_ = {client: server, server: client}
    while open_:
        ready, _, _ = select.select(list(open_), [], [], 30)
        if not ready:
            raise TimeoutError("recorded conversation stalled for 30 s")
        for sock in ready:
            data = sock.recv(1 << 16)
            if not data:
                open_.clear()
                break
            open_[sock].sendall(data)
            side = 0 if sock is client else 1
            if side == 0 and (not turns or turns[-1][1]):
                turns.append([bytearray(), bytearray()])
            if turns:
                turns[-1][side] += data
    return [(bytes(c), bytes(s)) for c, s in turns]


def answer_table(conversations: list[list[tuple[bytes, bytes]]]) -> dict[bytes, bytes]:
    """client turn -> server answer over all recordings; a client turn recorded with
    two different answers, or one that is the start of another, is an error."""
    table: dict[bytes, bytes] = {}
    for turns in conversations:
        for asked, answered in turns:
            if table.setdefault(asked, answered) != answered:
                raise ValueError("one request was recorded with two different answers")
    for key in table:
        if any(other != key and other.startswith(key) for other in table):
            raise ValueError("a recorded request is the start of another")
    return table


# ----------------------------------------------------------------- replaying


def pdu_prefixes(table: dict[bytes, bytes]) -> set[bytes]:
    """Every start of a recorded request that ends at a PDU boundary."""
    starts = set()
    for request in table:
        end = 0
        while end < len(request):
            (length,) = struct.unpack(">I", request[end + 2 : end + 6])
            end += PDU_HEADER + length
            starts.add(request[:end])
    return starts


def serve_connection(sock: socket.socket, table: dict[bytes, bytes], starts: set[bytes]) -> None:
    pending = b""
    while True:
        pdu = read_pdu(sock)
        if pdu is None:
            return
        pending += pdu
        answer = table.get(pending)
        if answer is not None:
            if answer:
                sock.sendall(answer)
            pending = b""
        elif pending not in starts:
            return  # not a recorded request: drop the connection


def serve(port: int, table: dict[bytes, bytes]) -> None:
    """Accept one connection at a time, for ever (the bench times one client at
    a time)."""
    listener = socket.create_server(("127.0.0.1", port), backlog=64)
    starts = pdu_prefixes(table)
    while True:
        conn, _ = listener.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(30)
            try:
                serve_connection(conn, table, starts)
            except OSError:
                pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("recordings", type=Path, nargs="+",
                        help="pickled conversations written by the bench")
    args = parser.parse_args(argv)
    conversations = []
    for path in args.recordings:
        conversations += pickle.loads(path.read_bytes())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(args.port, answer_table(conversations))
    return 0


if __name__ == "__main__":
    sys.exit(main())
