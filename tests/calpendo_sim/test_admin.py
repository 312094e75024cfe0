"""Editing a running simulator from the shell: `calpendo-sim list|edit|move|cancel`
against the loopback admin endpoint of a real simulator."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from calpendo_sim import admin, admin_client
from tests.fixtures.sim import SIM_PASSWORD, SIM_USER

CLI = str(Path(sys.executable).parent / "calpendo-sim")


def run(sim, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CLI, "--url", sim.url, "--username", SIM_USER, "--password", SIM_PASSWORD, *args],
        capture_output=True, text=True, timeout=30,
    )


@pytest.mark.external
def test_edit_move_and_cancel_change_what_the_api_serves(calpendo_sim):
    listed = run(calpendo_sim, "list", "--day", calpendo_sim.today.isoformat())
    assert listed.returncode == 0, listed.stderr
    assert "1002" in listed.stdout and "SUB0002 - Jane Doe" in listed.stdout

    assert run(calpendo_sim, "edit", "1002", "--title", "SUB0200 - Jane Roe").returncode == 0
    moved = run(calpendo_sim, "move", "1002", "14:30", "--minutes", "45")
    assert moved.returncode == 0 and "14:30" in moved.stdout
    props = calpendo_sim.get_booking(1002)["properties"]
    assert props["title"] == "SUB0200 - Jane Roe"
    assert props["dateRange"]["start"].startswith(f"{calpendo_sim.today.isoformat()} 14:30")
    assert props["durationInMinutes"] == 45

    assert run(calpendo_sim, "cancel", "1002", "--reason", "participant ill").returncode == 0
    props = calpendo_sim.get_booking(1002)["properties"]
    assert (props["status"], props["cancelled"], props["cancellationReason"]) == (
        "CANCELLED", True, "participant ill")


@pytest.mark.external
def test_admin_errors_are_clear_and_refused_without_credentials(calpendo_sim):
    missing = run(calpendo_sim, "edit", "999", "--title", "x")
    assert missing.returncode == 1 and "no booking 999" in missing.stderr
    bad = run(calpendo_sim, "move", "1002", "25:99")
    assert bad.returncode == 1 and "expected 'YYYY-MM-DD HH:MM'" in bad.stderr
    refused = subprocess.run([CLI, "--url", calpendo_sim.url, "--password", "nope", "list"],
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1 and "401" in refused.stderr
    assert calpendo_sim.get_booking(1002)["properties"]["title"] == "SUB0002 - Jane Doe"


@pytest.mark.external
def test_admin_requests_bypass_counting_and_injected_failures(calpendo_sim):
    calpendo_sim.reset_counts()
    calpendo_sim.fail_requests(status=503, count=None)
    try:
        assert run(calpendo_sim, "edit", "1002", "--title", "SUB0201").returncode == 0
    finally:
        calpendo_sim.clear_failures()
    assert calpendo_sim.request_count == 0


@pytest.mark.parametrize(("address", "loopback"), [
    ("127.0.0.1", True), ("::1", True), ("127.8.0.1", True), ("10.0.0.5", False),
    ("192.168.1.20", False), ("not-an-ip", False)])
def test_only_loopback_clients_may_edit(address, loopback):
    assert admin.is_loopback(address) is loopback


@pytest.mark.external
def test_connection_options_also_follow_the_command(calpendo_sim):
    # `calpendo-sim edit 1002 --title ... --url ...` as a user types it; the options
    # are in each command's --help too.
    edited = subprocess.run(
        [CLI, "edit", "1002", "--title", "SUB0202 - Jane Roe", "--url", calpendo_sim.url,
         "--username", SIM_USER, "--password", SIM_PASSWORD],
        capture_output=True, text=True, timeout=30)
    assert edited.returncode == 0, edited.stderr
    assert calpendo_sim.get_booking(1002)["properties"]["title"] == "SUB0202 - Jane Roe"
    # After the command wins over before it.
    listed = subprocess.run(
        [CLI, "--url", "http://127.0.0.1:9", "list", "--url", calpendo_sim.url,
         "--username", SIM_USER, "--password", SIM_PASSWORD],
        capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0 and "SUB0202 - Jane Roe" in listed.stdout, listed.stderr
    for command in admin_client.COMMANDS:
        shown = subprocess.run([CLI, command, "--help"], capture_output=True, text=True, timeout=30)
        assert "--url URL" in shown.stdout and "--password PASSWORD" in shown.stdout


def test_every_option_and_argument_of_the_commands_is_explained():
    parser = admin_client.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in admin_client.COMMANDS:
        for action in commands.choices[name]._actions:
            assert action.help, f"calpendo-sim {name}: {action.dest} has no help text"
