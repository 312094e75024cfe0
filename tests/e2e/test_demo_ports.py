"""`make demo` refuses a port it cannot listen on before it starts anything."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("demo", ROOT / "deploy" / "demo.py")
demo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(demo)


def test_a_port_held_by_a_socket_that_does_not_listen_is_not_bindable():
    # A client connection's local end holds its port without listening: a connect
    # to it is refused, yet a server cannot bind it.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        assert demo.port_free(port)
        assert not demo.port_bindable(port)
    assert demo.port_bindable(port)


def test_a_listening_port_is_neither_free_nor_bindable():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert not demo.port_free(port)
        assert not demo.port_bindable(port)


def test_the_demo_stops_before_starting_anything_on_a_held_port(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "VAR", tmp_path)
    monkeypatch.delenv("CALPENDO_MWL_CONFIG", raising=False)
    with socket.socket() as holder, socket.socket() as spare:
        holder.bind(("127.0.0.1", 0))
        spare.bind(("127.0.0.1", 0))
        held, other = holder.getsockname()[1], spare.getsockname()[1]
        spare.close()
        try:
            demo.main(["--sim-port", str(held), "--mwl-port", str(other),
                       "--dagster-port", str(other), "--api-port", str(other)])
        except SystemExit as exc:
            message = str(exc)
        else:
            raise AssertionError("the demo went on with a port it cannot listen on")
    assert message == f"error: port {held} on 127.0.0.1 is in use; stop what uses it first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dagster_home", "demo-calpendo.json"]
