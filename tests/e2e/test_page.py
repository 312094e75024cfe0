"""The page in a real browser: Debian's Chromium driven by Playwright (never a
downloaded browser). Log in with the keyboard, see today's items and why a booking
is missing, add a walk-in, find it with DCMTK findscu, cancel it; and the page
without JavaScript."""

from __future__ import annotations

import datetime as dt
import shutil
from zoneinfo import ZoneInfo

import pytest
from urllib.parse import urlparse

from playwright.sync_api import Browser, expect, sync_playwright

from mwl_service.excluded import PATTERN_NOT_MATCHED, Excluded, replace_excluded
from tests.fixtures.api import PASSWORD, api_user
from tests.fixtures.dicom import SITE_TZ, insert_item, run_findscu, with_keys

pytestmark = pytest.mark.external
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TZ = ZoneInfo(SITE_TZ)


@pytest.fixture(scope="module")
def browser() -> Browser:
    if shutil.which(CHROMIUM) is None:
        pytest.fail("Debian's chromium is not installed (make test-tools installs it)",
                    pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def site(sqlite_url, api_server, mwl_server):
    api = api_server(sqlite_url)
    api_user(api.engine, "tech", "write")
    api_user(api.engine, "viewer", "read")
    today = dt.datetime.now(TZ).date()
    synced = insert_item(api.engine, source="mri", patient_id="SUB0042",
                         patient_name="Lovelace^Ada", study_description="BRISKP",
                         start=dt.datetime.combine(today, dt.time(8, 15), tzinfo=TZ))
    with api.engine.begin() as conn:
        replace_excluded(conn, "mri", [Excluded(
            "31337", PATTERN_NOT_MATCHED, start=dt.datetime.combine(today, dt.time(9), tzinfo=TZ),
            resource="3T MRI")])
    return api, mwl_server(sqlite_url), synced


def log_in_by_keyboard(page, url: str, user: str) -> None:
    page.goto(url)
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    page.keyboard.type(user)  # the user name field has the focus
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")


def test_log_in_see_today_add_a_walk_in_find_it_and_cancel_it(browser, site):
    api, mwl, synced = site
    page = browser.new_page()
    log_in_by_keyboard(page, api.url, "tech")
    table = page.get_by_role("table", name="Station MRI3T")
    expect(table).to_contain_text("SUB0042")
    expect(table).to_contain_text("Lovelace, Ada")
    expect(table).to_contain_text("08:15")
    expect(page.get_by_text("regex did not match")).to_be_visible()
    expect(page.get_by_role("cell", name="31337")).to_be_visible()
    # A synced item has no cancel button: only manual items do.
    expect(table.get_by_role("button")).to_have_count(0)

    page.get_by_label("Patient ID", exact=True).fill("WALKIN9")
    page.get_by_label("Patient name (Family, Given)").fill("Hopper, Grace")
    start = page.get_by_label(f"Start ({SITE_TZ})")
    start.fill(f"{dt.datetime.now(TZ).date()}T16:20")
    page.get_by_label("Station AE title").fill("MRI3T")
    page.get_by_label("Study description").fill("Walk-in spine")
    page.get_by_role("button", name="Add walk-in").click()
    expect(page.get_by_role("status")).to_contain_text("Walk-in added")
    expect(table).to_contain_text("Hopper, Grace")
    expect(table).to_contain_text("manual item")

    (found,) = run_findscu(mwl.host, mwl.port, mwl.ae_title, with_keys("PatientID=WALKIN9"))
    assert str(found.PatientName) == "Hopper^Grace"

    page.once("dialog", lambda dialog: dialog.accept())
    table.get_by_role("button", name="Cancel WALKIN9 at 16:20").click()
    expect(page.get_by_role("status")).to_contain_text("cancelled")
    row = table.get_by_role("row").filter(has_text="WALKIN9")
    expect(row).to_contain_text("DISCONTINUED")
    assert run_findscu(mwl.host, mwl.port, mwl.ae_title, with_keys("PatientID=WALKIN9")) == []
    page.close()


def test_a_read_user_gets_no_forms_and_bad_walk_ins_are_explained(browser, site):
    api, _mwl, _synced = site
    page = browser.new_page()
    log_in_by_keyboard(page, api.url, "viewer")
    expect(page.get_by_role("table", name="Station MRI3T")).to_contain_text("SUB0042")
    expect(page.get_by_role("heading", name="Add a walk-in")).to_have_count(0)
    page.get_by_role("button", name="Log out").click()
    log_in_by_keyboard(page, api.url, "tech")
    page.get_by_label("Patient ID", exact=True).fill("BAD\\ID")
    page.get_by_label("Patient name (Family, Given)").fill("Nobody, Ann")
    page.get_by_label("Modality (if no station)").fill("MR")
    page.get_by_role("button", name="Add walk-in").click()
    expect(page.get_by_role("alert")).to_contain_text("patient_id: contains a backslash")
    expect(page.get_by_label("Patient name (Family, Given)")).to_have_value("Nobody, Ann")
    page.close()


def test_the_page_reads_and_works_without_javascript(browser, site):
    api, _mwl, _synced = site
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(api.url)
    page.get_by_label("User name").fill("tech")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("table", name="Station MRI3T")).to_contain_text("SUB0042")
    tomorrow = dt.datetime.now(TZ).date() + dt.timedelta(days=1)
    page.get_by_label("Date").fill(tomorrow.isoformat())
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_text("No items on this day")).to_be_visible()
    context.close()


def test_the_page_and_the_api_docs_fetch_nothing_from_the_internet(browser, site):
    api, _mwl, _synced = site
    context = browser.new_context()
    outside: list[str] = []

    def loopback_only(route) -> None:
        if urlparse(route.request.url).hostname != "127.0.0.1":
            outside.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    context.route("**/*", loopback_only)
    page = context.new_page()
    log_in_by_keyboard(page, api.url, "tech")
    expect(page.get_by_role("table", name="Station MRI3T")).to_contain_text("SUB0042")
    page.goto(f"{api.url}/docs")
    expect(page.get_by_text("/api/v1/worklist/{accession_number}/history")).to_be_visible()
    context.close()
    assert outside == []
