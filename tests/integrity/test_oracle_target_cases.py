"""The images the real kernel read back (tests/vectors/integrity/oracle-scripts/,
``target_images.json``): dmkit still makes them the same way -- the same table line and
the same content -- so what was checked in the kernel stays checked.  (The kernel run itself
is not part of CI; see tests/vectors/README.md.)"""

import json
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "vectors" / "integrity" / "oracle-scripts"
sys.path.insert(0, str(SCRIPTS))

import target_images  # noqa: E402

RECORDED = json.loads((SCRIPTS / "target_images.json").read_text())
CASES = {c["name"]: c for c in target_images.parse_cases(SCRIPTS / "target_cases.txt")}


def test_every_case_was_read_back_by_the_kernel():
    assert {c["name"] for c in RECORDED["cases"]} == set(CASES)
    for c in RECORDED["cases"]:
        assert c["ok"] and c["kernel_sha256"] == c["want_sha256"], c["name"]
        assert c["kernel_status"].split()[3:5] == ["0", str(c["nr_sectors"])], c["name"]


@pytest.mark.parametrize("rec", RECORDED["cases"], ids=lambda c: c["name"])
def test_dmkit_makes_the_same_image(rec, tmp_path):
    made = target_images.make_case(tmp_path, dict(CASES[rec["name"]]))
    assert made["table"] == rec["table"]
    assert made["nr_sectors"] == rec["nr_sectors"]
    assert made["want_sha256"] == rec["want_sha256"]
