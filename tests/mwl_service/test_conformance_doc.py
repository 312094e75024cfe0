"""docs/dicom-conformance.md cannot drift from the code: every statement names the test
that checks it, every named test exists, and the tables (keys, SOP classes, transfer
syntaxes, character sets, status codes, defaults, implementation identity) are read
and compared with what the code defines."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pynetdicom
import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword

from mwl_service import mpps, retention, settings
from mwl_service.encode import ANSWER_CHARSETS
from mwl_service.handlers import FIND_CANCEL, FIND_PENDING
from mwl_service.query import STATUS_IDENTIFIER_DOES_NOT_MATCH, STATUS_UNABLE_TO_PROCESS
from mwl_service.query.attributes import CODE_ITEM, SPS_ITEM, TOP_LEVEL, UID_PAIR_ITEM
from mwl_service.query.keys import SPS_TAG
from mwl_service.query.sql import WILDCARD_VRS
from mwl_service.server import MAXIMUM_PDU_SIZE, TRANSFER_SYNTAXES, build_ae

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "dicom-conformance.md").read_text(encoding="utf-8")
TEST_REF = re.compile(r"`(test_\w+\.py)::(\w+)`")
BENCH_REF = re.compile(r"`(bench/[\w/]+\.py)`")

@cache
def _modules() -> dict[str, Path]:
    found: dict[str, list[Path]] = {}
    for path in (ROOT / "tests").rglob("test_*.py"):
        found.setdefault(path.name, []).append(path)
    ambiguous = {name: paths for name, paths in found.items() if len(paths) > 1}
    assert not ambiguous, f"test file names must be unique for the document: {ambiguous}"
    return {name: paths[0] for name, paths in found.items()}


@cache
def _functions_in(path: Path) -> frozenset[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return frozenset(node.name for node in tree.body
                     if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"))


def test_every_named_test_exists():
    named = set(TEST_REF.findall(DOC))
    assert len(named) > 80  # the document was read
    missing = []
    for module, name in sorted(named):
        path = _modules().get(module)
        if path is None or name not in _functions_in(path):
            missing.append(f"{module}::{name}")
    assert not missing, f"named in the document, not found: {missing}"
    for bench in BENCH_REF.findall(DOC):
        assert (ROOT / bench).is_file(), bench


def statements() -> list[str]:
    """Every table row (no header, no separator) and every list item of the document
    from its overview on, list items with their continuation lines."""
    body = DOC[DOC.index("## 1. Overview"):]
    found: list[str] = []
    item: list[str] | None = None
    for line in body.splitlines():
        if item is not None and line.startswith("  ") and line.strip():
            item.append(line)
            continue
        if item is not None:
            found.append(" ".join(item))
            item = None
        if line.startswith("- "):
            item = [line]
        elif line.startswith("|") and not re.match(r"\|[-| ]+\|$", line):
            found.append(line)
    if item is not None:
        found.append(" ".join(item))
    headers = {line for line in found if line.startswith("|")
               and re.search(r"\| checked by \|$", line)}
    return [s for s in found if s not in headers]


def test_every_statement_names_its_check():
    every = statements()
    assert len(every) > 100
    unchecked = [s for s in every if not (TEST_REF.search(s) or BENCH_REF.search(s))]
    assert unchecked == []
    for row in (s for s in every if s.startswith("|")):
        assert TEST_REF.search(row.rstrip(" |").rsplit("|", 1)[-1]) or BENCH_REF.search(row), row


# ---------------------------------------------------------------- the key tables


def matching_type(vr: str, matchable: bool) -> str:
    """The Matching column the document must give a key of this VR."""
    if not matchable:
        return "return key only"
    if vr == "SQ":
        return "sequence"
    if vr in ("DA", "TM"):
        return "single value, range, universal"
    if vr == "UI":
        return "single value, list of UID, universal"
    if vr in WILDCARD_VRS:
        return "single value, wildcard, universal"
    return "single value, universal"


def documented_keys() -> list[dict[int, tuple[str, str, str]]]:
    """The four key tables (top level, step item, code item, reference item) as
    {tag: (keyword, VR, matching)}, in the document's order."""
    tables: list[dict[int, tuple[str, str, str]]] = []
    previous = False
    for line in DOC.splitlines():
        m = re.match(r"\| \(([0-9A-F]{4}),([0-9A-F]{4})\) \| (\w+) \| (\w\w) \| ([^|]+) \|", line)
        if m and not previous:
            tables.append({})
        if m:
            tag = int(m[1] + m[2], 16)
            assert tag not in tables[-1], f"{m[3]} twice"
            tables[-1][tag] = (m[3], m[4], m[5].strip())
        previous = bool(m)
    return tables


def catalogued_keys() -> list[dict[int, tuple[str, str, str]]]:
    def level(catalogue) -> dict[int, tuple[str, str, str]]:
        return {tag: (a.keyword, a.vr, matching_type(a.vr, a.matchable and a.column is not None))
                for tag, a in catalogue.items()}

    top = level(TOP_LEVEL) | {SPS_TAG: ("ScheduledProcedureStepSequence", "SQ", "sequence")}
    codes = {tag: (kw, vr, "return key only") for tag, kw, vr, _ in CODE_ITEM}
    references = {tag: (kw, vr, matching_type(vr, True)) for tag, kw, vr, _ in UID_PAIR_ITEM}
    return [top, level(SPS_ITEM), codes, references]


def test_key_tables_are_the_attribute_catalogue():
    documented = documented_keys()
    assert [len(t) for t in documented] == [len(t) for t in catalogued_keys()]
    assert documented == catalogued_keys()
    for table in documented:
        assert list(table) == sorted(table), "rows in tag order"
        for tag, (keyword, vr, _) in table.items():
            assert tag_for_keyword(keyword) == tag and vr in dictionary_VR(tag), keyword


# ---------------------------------------------------------------- the other tables


def section(start: str, end: str) -> str:
    begin = DOC.index(start)
    return DOC[begin:DOC.index(end, begin)]


def test_sop_classes_and_transfer_syntaxes_are_the_codes():
    overview = section("## 1. Overview", "## 2.")
    ae = build_ae(settings.ServerConfig())
    supported = {str(cx.abstract_syntax) for cx in ae.supported_contexts}
    assert set(re.findall(r"\| `([\d.]+)` \| no \| yes \|", overview)) == supported
    contexts = section("Presentation contexts:", "### 3.4")
    rows = [line for line in contexts.splitlines() if line.startswith("| ") and "SCP" in line]
    assert len(rows) == len(supported)
    for row in rows:
        assert re.findall(r"`([\d.]+)`", row) == [str(uid) for uid in TRANSFER_SYNTAXES]


def test_status_tables_are_the_codes():
    find = section("#### 3.5.1", "#### 3.5.2")
    assert {int(code, 16) for code in re.findall(r"^\| (0x[0-9A-F]{4}) \|", find, re.M)} == {
        FIND_PENDING, 0x0000, FIND_CANCEL, STATUS_IDENTIFIER_DOES_NOT_MATCH,
        STATUS_UNABLE_TO_PROCESS}
    mpps_table = section("### 3.6", "## 4.")
    assert {int(code, 16) for code in re.findall(r"^\| (0x[0-9A-F]{4}) \|", mpps_table, re.M)} == {
        mpps.SUCCESS, mpps.INVALID_ATTRIBUTE_VALUE, mpps.PROCESSING_FAILURE,
        mpps.DUPLICATE_SOP_INSTANCE, mpps.NO_SUCH_SOP_INSTANCE, mpps.INVALID_SOP_INSTANCE,
        mpps.MISSING_ATTRIBUTE, mpps.MISSING_ATTRIBUTE_VALUE}
    assert f"Error ID 0x{mpps.FINAL_STATE_ERROR_ID:04X}" in mpps_table
    assert f'"{mpps.FINAL_STATE_ERROR_COMMENT}"' in mpps_table


def test_answer_character_sets_are_the_codes():
    table = section("| Specific Character Set of the query |", "## 6.")
    own = re.findall(r"^\| (ISO_IR \d+) \| \1, else ISO_IR 192 \|", table, re.M)
    assert set(own) == ANSWER_CHARSETS and len(own) == len(ANSWER_CHARSETS)


def _default(option: str) -> str:
    """The default the configuration table gives ``option``."""
    table = section("## 4. Configuration", "## 5.")
    (value,) = re.findall(rf"^\| `{option}` \| `?([^`|]+?)`?(?: s| days)? \|", table, re.M)
    return value


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--ae-title", settings.DEFAULT_AE_TITLE),
        ("--host", settings.DEFAULT_HOST),
        ("--port", str(settings.DEFAULT_PORT)),
        ("--max-associations", str(settings.DEFAULT_MAX_ASSOCIATIONS)),
        ("--request-timeout", f"{settings.DEFAULT_REQUEST_TIMEOUT:g}"),
        ("--network-timeout", f"{settings.DEFAULT_NETWORK_TIMEOUT:g}"),
        ("--acse-timeout", f"{settings.DEFAULT_ACSE_TIMEOUT:g}"),
        ("--dimse-timeout", f"{settings.DEFAULT_DIMSE_TIMEOUT:g}"),
        ("--offer-past-days", f"{retention.DEFAULT_OFFER_PAST_DAYS:g}"),
    ],
)
def test_documented_defaults_are_the_codes(option, value):
    assert _default(option) == value
    # The timeout table and the association policies say the same.
    if option in ("--request-timeout", "--network-timeout", "--acse-timeout",
                  "--dimse-timeout"):
        assert re.search(rf"^\| `{option}` \| {value} s \|", DOC, re.M)
    if option == "--max-associations":
        assert f"`--max-associations`, default {value};" in DOC
    if option in ("--ae-title", "--host", "--port"):
        assert f"default `{value}`" in DOC or f"default {value}" in DOC


def test_implementation_identity_is_pynetdicoms():
    assert f"| Implementation Class UID | `{pynetdicom.PYNETDICOM_IMPLEMENTATION_UID}` " in DOC
    assert f"| Implementation Version Name | `{pynetdicom.PYNETDICOM_IMPLEMENTATION_VERSION}` |" in DOC
    assert f"| Maximum PDU length received | {MAXIMUM_PDU_SIZE} bytes (1 MiB) |" in DOC


def test_the_readme_links_the_statement():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/dicom-conformance.md)" in readme
