"""Shared pytest wiring: each area owns one fixture module under tests/fixtures/."""

pytest_plugins = [
    "tests.fixtures.db",
    "tests.fixtures.sim",
    "tests.fixtures.redcap_sim",
    "tests.fixtures.dicom",
    "tests.fixtures.api",
]
