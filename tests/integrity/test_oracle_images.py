"""Layouts beyond the shared fixtures, made by a real kernel through the kernel oracle (QEMU):
old padding, 1024/2048-byte blocks, odd and truncated tag sizes (tags straddling sectors),
xxhash64, the kernel's crc32, hmac(sha512), no fix_hmac, a small interleave, a separate
metadata device with 4 KiB blocks, reserved start sectors, and the old-padding /
small-interleave quirk.  Provenance: tests/vectors/README.md."""

import hashlib
import json
import re

import pytest
from integrity_vectors import VECTORS, OracleImageCache, pattern

from dmkit.block import FileDevice
from dmkit.errors import IntegrityError
from dmkit.targets.integrity import IntegrityReader

ORACLE = VECTORS / "oracle"
MANIFEST = json.loads((ORACLE / "manifest.json").read_text())
CASES = {e["name"]: e for e in MANIFEST["images"]}



@pytest.fixture(scope="module")
def oracle_images(tmp_path_factory):
    return OracleImageCache(tmp_path_factory.mktemp("oracle"))


def open_case(cache, name):
    e = CASES[name]
    files = {f["role"]: cache.path(f["file"]) for f in e["files"]}
    data = FileDevice(files.get("device") or files["data"], read_only=True)
    meta = FileDevice(files["meta"], read_only=True) if "meta" in files else None
    key = bytes.fromhex(e["key_hex"]) if e["key_hex"] else None
    return IntegrityReader(data, meta, internal_hash=e["internal_hash"], key=key,
                           start_sector=e["start_sector"])


GOOD = sorted(n for n, e in CASES.items() if e["kernel_sha256"])


@pytest.mark.parametrize("name", GOOD)
def test_reads_what_the_kernel_read(name, oracle_images):
    e = CASES[name]
    r = open_case(oracle_images, name)
    assert r.nr_sectors == e["provided_size_sectors"]
    data = r.read(0, r.nr_sectors)
    assert hashlib.sha256(data).hexdigest() == e["kernel_sha256"]
    assert data == pattern(0, r.nr_sectors)


@pytest.mark.parametrize("name", GOOD)
def test_geometry_matches_kernel_table(name, oracle_images):
    """The kernel's table status gives journal_sectors, interleave_sectors, block_size and
    the effective buffer_sectors (clamped to the tag run's alignment)."""
    e = CASES[name]
    g = open_case(oracle_images, name).geometry
    table = dict(re.findall(r"(\w+):(\d+)", e["table_while_open"].split(" integrity ", 1)[1]))
    assert g.device_provided_data_sectors == g.provided_data_sectors
    if "journal_sectors" in table:
        assert g.journal_sectors == int(table["journal_sectors"])
        assert 1 << g.log2_interleave_sectors == int(table["interleave_sectors"])
        assert 1 << g.log2_buffer_sectors == int(table["buffer_sectors"])
        assert g.block_size == int(table.get("block_size", 512))


def test_old_padding_small_interleave_quirk(oracle_images):
    """Area 1's tags land on area 0's first data sector, in the kernel and here: the first
    block fails in both; the kernel (reading 4 KiB pages) fails sectors 0..7 and reads the
    rest; so do we, and we name sector 0."""
    e = CASES["legacy-pad-il8-crc32c"]
    r = open_case(oracle_images, "legacy-pad-il8-crc32c")
    g = r.geometry
    assert g.tag_offset(8) == g.data_sector(0) * 512
    with pytest.raises(IntegrityError, match="mismatch at sector 0$"):
        r.read(0, 8)
    bad_pages = set()
    for page in range(r.nr_sectors // 8):
        try:
            assert r.read(page * 8, 8) == pattern(page * 8, 8)
        except IntegrityError:
            bad_pages.add(page)
    assert {s // 8 for s in e["kernel_bad_sectors_page_granular"]} == bad_pages
    assert r.scrub() == [0]
