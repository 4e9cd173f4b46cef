"""Geometry: provided size, journal, tag areas, block and tag positions.

Checked against every kernel image (the superblock's provided_data_sectors, the same number
recomputed from the device size and options, the whole superblock as the kernel formats it,
the journal size the kernel's table reports), then for internal consistency over many
synthetic layouts (block sizes 512..4096, odd tag sizes, both paddings, small interleaves).
"""

import re
import shlex

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from integrity_vectors import IMAGES

from dmkit.errors import FormatError
from dmkit.targets.integrity.geometry import (
    Geometry,
    JournalGeometry,
    compute_provided_data_sectors,
    format_superblock,
    metadata_run_sectors,
)
from dmkit.targets.integrity.layout import SbFlags, Superblock
from dmkit.targets.integrity.tags import algorithm

INTEGRITYSETUP_ALG = {"crc32c": "crc32c", "sha256": "sha256", "hmac-sha256": "hmac(sha256)"}


def format_options(name):
    """What the recorded ``integritysetup format`` command asked for."""
    im = IMAGES[name]
    cmd = shlex.split(im["commands"]["format_and_open"][0])
    opts = {"block_size": 512, "journal_sectors": None, "bitmap_mode": False}
    it = iter(cmd[2:])
    for word in it:
        if word == "--integrity":
            opts["tag_size"] = algorithm(next(it)).digest_size
        elif word == "--sector-size":
            opts["block_size"] = int(next(it))
        elif word == "--journal-size":
            opts["journal_sectors"] = int(next(it)) // 512
        elif word == "--integrity-bitmap-mode":
            opts["bitmap_mode"] = True
        elif word in ("--integrity-key-file", "--integrity-key-size", "--data-device"):
            next(it)
    return opts


def sizes(name):
    """(data device sectors, metadata device sectors or None) from the manifest."""
    files = {f["role"]: f["raw_size"] // 512 for f in IMAGES[name]["files"]}
    if "device" in files:
        return files["device"], None
    return files["data"], files["meta"]


def table_of(name):
    im = IMAGES[name]
    line = (im.get("dm_table_while_open") or im["crash"]["dm_table_during_replay_open"])[0]
    return dict(re.findall(r"(\w+):(\d+)", line.split(" integrity ", 1)[1]))


def kernel_sb(name, kernel_images):
    files = kernel_images.files(name)
    return Superblock.from_bytes((files.get("meta") or files["device"]).read_bytes()[:64])


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_provided_sectors_match_kernel(name, kernel_images):
    sb = kernel_sb(name, kernel_images)
    assert sb.provided_data_sectors == IMAGES[name]["provided_size_sectors"]
    data, meta = sizes(name)
    recomputed = compute_provided_data_sectors(
        data_device_sectors=data, meta_device_sectors=meta, tag_size=sb.integrity_tag_size,
        log2_sectors_per_block=sb.log2_sectors_per_block,
        log2_interleave_sectors=sb.log2_interleave_sectors,
        journal_sections=sb.journal_sections,
        have_journal_mac=sb.has(SbFlags.HAVE_JOURNAL_MAC),
        fixed_padding=sb.has(SbFlags.FIXED_PADDING))
    assert recomputed == sb.provided_data_sectors
    geo = Geometry.from_superblock(sb, data, meta, device=name)
    assert geo.device_provided_data_sectors == sb.provided_data_sectors


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_format_reproduces_kernel_superblock(name, kernel_images):
    """From the device size and the format command alone (integritysetup 2.6.1 passes
    fix_padding and fix_hmac), the kernel's whole superblock, salt aside."""
    sb = kernel_sb(name, kernel_images)
    data, meta = sizes(name)
    new = format_superblock(data, meta, fix_padding=True, fix_hmac=True, salt=sb.salt,
                            **format_options(name))
    assert new == sb
    assert new.to_bytes() == sb.to_bytes()


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_journal_and_interleave_match_table(name, kernel_images):
    """The kernel's table status reports journal_sectors (= initial_sectors - 8) and
    interleave_sectors (and block_size when not 512)."""
    sb = kernel_sb(name, kernel_images)
    data, meta = sizes(name)
    geo = Geometry.from_superblock(sb, data, meta)
    table = table_of(name)
    assert geo.journal_sectors == int(table["journal_sectors"])
    assert geo.initial_sectors == 8 + int(table["journal_sectors"])
    assert 1 << sb.log2_interleave_sectors == int(table["interleave_sectors"])
    assert sb.block_size == int(table.get("block_size", 512))


def test_known_positions(kernel_images):
    # crc32c, 512-byte blocks: 8 sb + 176 journal, then 256 tag sectors, then data
    g = Geometry.from_superblock(kernel_sb("crc32c-journal", kernel_images), 12288)
    assert (g.initial_sectors, g.metadata_run, g.log2_buffer_sectors) == (184, 256, 7)
    assert g.locate(0) == (440, 184 * 512)
    assert g.locate(11847) == (440 + 11847, 184 * 512 + 4 * 11847)
    assert g.area_layout(0) == (184, 256, 440, 32768)
    # sha256, 4 KiB blocks: tags are per block, sectors count 512-byte units
    g = Geometry.from_superblock(kernel_sb("sha256-journal-4k", kernel_images), 12288)
    assert (g.initial_sectors, g.metadata_run) == (272, 256)
    assert g.locate(8) == (272 + 256 + 8, 272 * 512 + 32)
    with pytest.raises(ValueError):
        g.locate(4)          # not a block start
    # separate metadata: data sector == logical sector, tags right after the journal
    g = Geometry.from_superblock(kernel_sb("sha256-separate-meta", kernel_images), 8192, 8192)
    assert g.locate(4095) == (4095, 96 * 512 + 32 * 4095)
    assert [(e.data_sector, e.nr_sectors) for e in g.extents(0, 8192)] == [(0, 8192)]


def test_metadata_run_padding():
    # fix_padding rounds an area's tags to 4 KiB, the old format to 128 KiB
    assert metadata_run_sectors(4, 15, 0, True) == 256
    assert metadata_run_sectors(4, 15, 0, False) == 256
    assert metadata_run_sectors(4, 10, 0, True) == 8
    assert metadata_run_sectors(4, 10, 0, False) == 256
    assert metadata_run_sectors(32, 15, 3, True) == 256


def test_journal_geometry():
    jg = JournalGeometry.compute(4, 1, False, 11)
    assert (jg.entry_size, jg.entries_per_sector, jg.section_entries, jg.section_sectors) \
        == (24, 21, 168, 176)
    assert jg.total_sectors == 1936 and jg.entries == 1848
    assert jg.entry_position(0) == (0, 0) and jg.entry_position(9) == (1, 24)
    assert jg.entry_data_sector(9) == 17
    # a journal MAC takes 8 bytes of every entry sector
    assert JournalGeometry.compute(4, 1, True, 1).entries_per_sector == 20
    assert JournalGeometry.compute(32, 8, False, 1).section_sectors == 4 * 8 * 8 + 8


# -- wrong devices -------------------------------------------------------------------------

def test_truncated_device(kernel_images):
    sb = kernel_sb("crc32c-journal", kernel_images)
    with pytest.raises(FormatError, match=r"^img: device of 12287 sectors is too small"):
        Geometry.from_superblock(sb, 12287, device="img")


def test_truncated_separate_devices(kernel_images):
    sb = kernel_sb("sha256-separate-meta", kernel_images)
    with pytest.raises(FormatError, match="metadata device of 600 sectors is too small"):
        Geometry.from_superblock(sb, 8192, 600, device="m")
    with pytest.raises(FormatError, match="data device of 8000 sectors is smaller"):
        Geometry.from_superblock(sb, 8000, 8192, device="m")


def test_layout_kind_mismatch(kernel_images):
    with pytest.raises(FormatError, match="separate metadata device"):
        Geometry.from_superblock(kernel_sb("sha256-separate-meta", kernel_images), 8192)
    with pytest.raises(FormatError, match="must be 0"):
        Geometry.from_superblock(kernel_sb("crc32c-journal", kernel_images), 8192, 12288)


def test_grown_device_keeps_superblock_size(kernel_images):
    sb = kernel_sb("crc32c-journal", kernel_images)
    g = Geometry.from_superblock(sb, 20000)
    assert g.provided_data_sectors == 11848
    assert g.device_provided_data_sectors == 20000 - 440


# -- synthetic layouts: internal consistency ------------------------------------------------

def _check_layout(sb: Superblock, dev: int, meta: int | None, start: int = 0,
                  buffer_sectors: int = 128):
    g = Geometry.from_superblock(sb, dev, meta, start_sector=start,
                                 buffer_sectors=buffer_sectors)
    P, ts = g.provided_data_sectors, g.tag_size
    exts = list(g.extents(0, P))
    assert sum(e.nr_sectors for e in exts) == P
    data_ranges, tag_ranges = [], []
    for e in exts:
        assert e.nr_blocks * g.sectors_per_block == e.nr_sectors
        assert g.locate(e.logical_sector) == (e.data_sector, e.tag_offset)
        last = e.logical_sector + e.nr_sectors - g.sectors_per_block
        assert g.locate(last) == (e.data_sector + e.nr_sectors - g.sectors_per_block,
                                  e.tag_offset + (e.nr_blocks - 1) * ts)
        data_ranges.append((e.data_sector * 512, (e.data_sector + e.nr_sectors) * 512))
        tag_ranges.append((e.tag_offset, e.tag_offset + e.nr_blocks * ts))
    lo_meta = (start + g.initial_sectors) * 512
    for a, b in tag_ranges:
        assert lo_meta <= a and b <= g.meta_device_sectors * 512
    for a, b in data_ranges:
        assert (0 if meta else lo_meta) <= a and b <= dev * 512
    spans = sorted(tag_ranges + ([] if meta else data_ranges))
    for (a0, b0), (a1, b1) in zip(spans, spans[1:]):
        assert b0 <= a1, "overlap"
    return g


LAYOUTS = [
    dict(tag_size=t, block_size=b, interleave_sectors=i, fix_padding=p)
    for t in (1, 3, 4, 5, 8, 20, 32, 64, 424)
    for b in (512, 1024, 2048, 4096)
    for i in (8, 64, 256, 32768)
    for p in (True, False)
    if not (not p and i < 128)  # see test_old_padding_small_interleave_quirk
]


@pytest.mark.parametrize("opts", LAYOUTS, ids=lambda o: "t{tag_size}-b{block_size}-i"
                         "{interleave_sectors}-{fix_padding}".format(**o))
def test_synthetic_interleaved_layouts(opts):
    dev = 40000
    sb = format_superblock(dev, fix_hmac=True, salt=bytes(16), **opts)
    g = _check_layout(sb, dev, None)
    assert g.device_provided_data_sectors == sb.provided_data_sectors
    # the provided size is maximal: one more block would not fit
    bigger = sb.provided_data_sectors + 8
    with pytest.raises(FormatError):
        Geometry.from_superblock(
            Superblock(**{**sb.__dict__, "provided_data_sectors": bigger}), dev)
    _check_layout(sb, dev, None, start=0, buffer_sectors=8)


@pytest.mark.parametrize("tag_size,block_size", [(1, 512), (3, 1024), (32, 4096), (424, 512)])
def test_synthetic_separate_layouts(tag_size, block_size):
    meta = 8 + 300 + -(-5000 * 512 // block_size * tag_size // 512) + 16
    sb = format_superblock(5000, meta, tag_size=tag_size, block_size=block_size,
                           journal_sectors=64)
    assert sb.log2_interleave_sectors == 0 and sb.version == 2
    _check_layout(sb, 5000, meta)


def test_reserved_start_sectors():
    sb = format_superblock(20000, tag_size=4, start_sector=16, fix_padding=True)
    base = format_superblock(20000, tag_size=4, fix_padding=True)
    # the reserved sectors come off the device's end (the last data sector must fit)
    assert sb.provided_data_sectors == base.provided_data_sectors - 16
    g = _check_layout(sb, 20000, None, start=16)
    assert g.journal_start_sector == 24
    assert g.data_sector(0) == 16 + g.initial_sectors + g.metadata_run


def test_old_padding_small_interleave_quirk():
    """Old padding (128 KiB runs) with an interleave below the 128-sector tag buffer: the
    kernel rounds each area's tag start down to a buffer, so area 1's tags sit at metadata
    sector 256, inside area 0's data.  We reproduce the kernel's arithmetic."""
    sb = format_superblock(4000, tag_size=4, interleave_sectors=8, fix_padding=False)
    g = Geometry.from_superblock(sb, 4000)
    assert (g.metadata_run, g.log2_buffer_sectors) == (256, 7)
    m0 = g.metadata_start_sector
    assert g.area_layout(1) == (m0 + 264, 256, m0 + 520, 8)
    assert g.tag_offset(8) == (m0 + 256) * 512          # not (m0 + 264) * 512
    assert g.data_sector(0) == m0 + 256                  # the same place
    # with 8-sector buffers the kernel's arithmetic is exact again
    g8 = Geometry.from_superblock(sb, 4000, buffer_sectors=8)
    assert g8.tag_offset(8) == (m0 + 264) * 512


def test_format_rules():
    with pytest.raises(ValueError, match="block_size"):
        format_superblock(10000, tag_size=4, block_size=8192)
    with pytest.raises(ValueError, match="tag_size"):
        format_superblock(10000, tag_size=425)
    with pytest.raises(ValueError, match="salt"):
        format_superblock(10000, tag_size=4, fix_hmac=True)
    with pytest.raises(ValueError, match="too small"):
        format_superblock(200, tag_size=4)
    # fix_hmac needs an algorithm to salt
    sb = format_superblock(10000, tag_size=4, fix_hmac=True, internal_hash=False)
    assert not sb.has(SbFlags.FIXED_HMAC) and sb.version == 1
    # interleave is rounded down to a power of two and clamped
    sb = format_superblock(10000, tag_size=4, interleave_sectors=1000)
    assert sb.log2_interleave_sectors == 9
    assert format_superblock(10000, tag_size=4, interleave_sectors=2).log2_interleave_sectors == 3
    assert format_superblock(10000, tag_size=4, bitmap_mode=True).version == 3
    assert format_superblock(10000, tag_size=4, journal_mac=True).flags == SbFlags.HAVE_JOURNAL_MAC


# -- extents of any request against locate(), block by block --------------------------------

_EXTENT_LAYOUTS = [
    # (superblock arguments, data device sectors, metadata device sectors, start, buffer)
    (dict(tag_size=4, interleave_sectors=64, fix_padding=True), 40000, None, 0, 128),
    (dict(tag_size=32, block_size=4096, interleave_sectors=256, fix_padding=True),
     40000, None, 16, 128),
    (dict(tag_size=3, block_size=1024, interleave_sectors=8, fix_padding=False),
     40000, None, 0, 128),          # the buffer-rounding quirk
    (dict(tag_size=5, block_size=2048, interleave_sectors=32, fix_padding=False),
     40000, None, 8, 8),
    (dict(tag_size=20, block_size=512, journal_sectors=64), 5000, 700, 0, 128),
]


@settings(max_examples=300, deadline=None)
@given(which=st.integers(0, len(_EXTENT_LAYOUTS) - 1), a=st.integers(0, 1 << 20),
       b=st.integers(0, 1 << 20))
def test_extents_agree_with_locate(which, a, b):
    """Any block-aligned request: the extents cover it in order, each is one run in data
    and in tags, and every block's place is what ``locate`` says."""
    args, dev, meta, start, buf = _EXTENT_LAYOUTS[which]
    if meta is None:
        sb = format_superblock(dev, start_sector=start, **args)
    else:
        sb = format_superblock(dev, meta, **args)
    g = Geometry.from_superblock(sb, dev, meta, start_sector=start, buffer_sectors=buf)
    spb, P = g.sectors_per_block, g.provided_data_sectors
    s = a % (P // spb) * spb
    n = (b % ((P - s) // spb) + 1) * spb
    exts = g.extents(s, n)
    assert exts[0].logical_sector == s
    pos = s
    for e in exts:
        assert e.logical_sector == pos and e.nr_blocks * spb == e.nr_sectors > 0
        for k in range(e.nr_blocks):
            assert g.locate(pos + k * spb) == (e.data_sector + k * spb,
                                               e.tag_offset + k * g.tag_size)
        pos += e.nr_sectors
    assert pos == s + n


def test_extents_reject_bad_ranges():
    sb = format_superblock(40000, tag_size=4, block_size=1024, fix_padding=True)
    g = Geometry.from_superblock(sb, 40000)
    P = g.provided_data_sectors
    assert g.extents(0, 0) == []
    with pytest.raises(ValueError, match="not at a 1024-byte block"):
        g.extents(1, 2)
    with pytest.raises(ValueError, match="outside the provided"):
        g.extents(-2, 2)
    with pytest.raises(ValueError, match=r"range 0\+3 is not whole blocks"):
        g.extents(0, 3)
    with pytest.raises(ValueError, match=rf"range {P - 2}\+4 is not whole blocks inside"):
        g.extents(P - 2, 4)
