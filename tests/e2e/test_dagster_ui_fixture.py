"""The `dagster dev` helper stops promptly also when the tests run under a shell's `&`."""

from __future__ import annotations

import pytest

import signal
import sys
from pathlib import Path

from tests.fixtures.dagster_ui import popen_in_new_group

pytestmark = pytest.mark.external


def ignored_signals(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return int(line.split()[1], 16)
    raise AssertionError("no SigIgn line")


def test_children_handle_sigint_even_when_the_tests_ignore_it():
    # What a background job of a non-interactive shell gets: SIGINT ignored, inherited
    # by every child, so `dagster dev` would never shut its servers down.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        child = popen_in_new_group([sys.executable, "-c", "import time; time.sleep(30)"])
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        assert ignored_signals(child.pid) & (1 << (signal.SIGINT - 1)) == 0
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=10) != 0  # KeyboardInterrupt, not a 30 s sleep
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
