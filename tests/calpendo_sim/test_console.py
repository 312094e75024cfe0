"""`calpendo-sim` as a console script: serves until SIGTERM, stops cleanly, and exits 1
when its port is taken, 2 for settings that cannot make bookings."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

CLI = str(Path(sys.executable).parent / "calpendo-sim")
pytestmark = pytest.mark.external


def test_serves_until_sigterm_without_printing_the_password():
    proc = subprocess.Popen(
        [CLI, "--port", "0", "--bookings", "3", "--quiet", "--password", "s3cret-pw"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url), url
        answer = requests.get(f"{url}/webdav/q/Calpendo.Booking/id/GT/0",
                              auth=("calpendo", "s3cret-pw"), timeout=10)
        assert answer.status_code == 200 and len(answer.json()["biskits"]) == 3
        assert requests.get(f"{url}/webdav/q/Calpendo.Booking/id/GT/0", auth=("calpendo", "x"),
                            timeout=10).status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "3 bookings" in err and err.rstrip().endswith("calpendo-sim: stopped")
    assert "s3cret-pw" not in out + err


def test_a_taken_port_exits_1_and_an_empty_window_exits_2():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run([CLI, "--port", str(port)], capture_output=True, text=True,
                              timeout=30)
    assert busy.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in busy.stderr
    empty = subprocess.run([CLI, "--port", "0", "--days", "0", "--past-days", "0"],
                           capture_output=True, text=True, timeout=30)
    assert empty.returncode == 2 and empty.stderr.startswith("calpendo-sim: "), empty.stderr
