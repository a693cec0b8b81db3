"""Integrity of the RFC 4475 torture-test corpus in tests/data/rfc4475.

These tests check the data only (no parser): that the manifest and the .dat
files agree one to one, that the counts per class are those of the RFC, and
that no byte has been changed (line-ending conversion by an editor or by git
is the usual way these files get spoiled).
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).resolve().parent.parent / "data" / "rfc4475"
MANIFEST = DATA / "manifest.toml"

# RFC 4475 section 3: 13 valid (3.1.1), 19 invalid (3.1.2), 1 transaction-layer
# (3.2), 15 application-layer (3.3) and 1 backward-compatibility (3.4) message.
EXPECTED_COUNTS = {"valid": 13, "invalid": 19, "semantic": 17}
EXPECTED_TOTAL = 49
SECTION_CLASS = (
    (re.compile(r"^3\.1\.1\.\d+$"), "valid"),
    (re.compile(r"^3\.1\.2\.\d+$"), "invalid"),
    (re.compile(r"^3\.[234]\.\d+$"), "semantic"),
)
KNOWN_KEYS = {"section", "title", "expect", "fault", "behaviour", "abnf_valid", "note", "sha256"}


def _manifest() -> dict[str, dict[str, Any]]:
    with MANIFEST.open("rb") as f:
        return tomllib.load(f)


ENTRIES = _manifest()
NAMES = sorted(ENTRIES)


def _data(name: str) -> bytes:
    return (DATA / f"{name}.dat").read_bytes()


def test_every_manifest_entry_has_a_dat_file() -> None:
    missing = [name for name in NAMES if not (DATA / f"{name}.dat").is_file()]
    assert missing == []


def test_every_dat_file_has_a_manifest_entry() -> None:
    orphans = sorted(p.stem for p in DATA.glob("*.dat") if p.stem not in ENTRIES)
    assert orphans == []


def test_counts() -> None:
    assert len(ENTRIES) == EXPECTED_TOTAL
    assert len(list(DATA.glob("*.dat"))) == EXPECTED_TOTAL
    assert Counter(e["expect"] for e in ENTRIES.values()) == EXPECTED_COUNTS


def test_sections_are_unique() -> None:
    sections = [e["section"] for e in ENTRIES.values()]
    assert len(set(sections)) == len(sections)


@pytest.mark.parametrize("name", NAMES)
def test_entry_is_well_formed(name: str) -> None:
    entry = ENTRIES[name]
    assert set(entry) <= KNOWN_KEYS
    assert entry["title"].strip()
    assert entry["expect"] in EXPECTED_COUNTS
    classes = [cls for pattern, cls in SECTION_CLASS if pattern.match(entry["section"])]
    assert classes == [entry["expect"]], f"{name}: section {entry['section']}"
    if entry["expect"] == "invalid":
        assert entry.get("fault", "").strip(), f"{name}: an invalid message needs a fault"
    if entry["expect"] == "semantic":
        assert entry.get("behaviour", "").strip(), f"{name}: say what the later layer does"
    assert entry.get("abnf_valid", True) is True


@pytest.mark.parametrize("name", NAMES)
def test_bytes_match_recorded_sha256(name: str) -> None:
    assert hashlib.sha256(_data(name)).hexdigest() == ENTRIES[name]["sha256"]


@pytest.mark.parametrize("name", NAMES)
def test_header_lines_end_in_crlf(name: str) -> None:
    data = _data(name)
    head = data.split(b"\r\n\r\n", 1)[0]
    assert re.search(rb"(?<!\r)\n", head) is None, f"{name}: bare LF in the header section"
    assert re.search(rb"\r(?!\n)", head) is None, f"{name}: bare CR in the header section"
    assert data.endswith(b"\r\n")


@pytest.mark.parametrize("name", [n for n in NAMES if ENTRIES[n]["expect"] == "valid"])
def test_valid_message_is_complete(name: str) -> None:
    data = _data(name)
    assert b"\r\n\r\n" in data, f"{name}: header section not terminated by an empty line"
    head, body = data.split(b"\r\n\r\n", 1)
    assert data.endswith(b"\r\n\r\n") or body, f"{name}: no CRLFCRLF at the end and no body"
    if body:
        declared = re.search(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*(\d+)", head, re.I)
        assert declared is not None, f"{name}: body without Content-Length"
        # dblreq carries trailing octets after its (empty) body on purpose.
        assert int(declared.group(1)) <= len(body)


def test_special_octets_are_where_the_rfc_puts_them() -> None:
    # Raw NUL only where the RFC's <hex> puts one; escnull has the %00 escape only.
    with_nul = sorted(name for name in NAMES if b"\x00" in _data(name))
    assert with_nul == ["intmeth", "mpart01"]
    assert b"sip:null-%00-null@example.com" in _data("escnull")
    assert _data("noreason").startswith(b"SIP/2.0 100 \r\n")
    assert _data("trws").startswith(b"OPTIONS sip:remote-target@example.com SIP/2.0  \r\n")
    assert _data("baddn").endswith(b"l: 0\r\n")
