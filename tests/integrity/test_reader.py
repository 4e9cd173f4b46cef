"""The verified reader against every kernel image, and against tampered copies."""

import hashlib
import struct

import pytest
from integrity_vectors import IMAGES, NEEDS_REPLAY, pattern

from dmkit.block import FileDevice, MemoryDevice
from dmkit.errors import FormatError, IntegrityError, ReadOnlyError
from dmkit.targets.integrity import IntegrityReader, JournalStatus, UnreplayedJournalError
from dmkit.targets.integrity.layout import SbFlags

CLEAN = sorted(set(IMAGES) - NEEDS_REPLAY)


def check_content(data: bytes, name: str):
    """The pattern over every recorded range, zeros everywhere else."""
    im = IMAGES[name]
    assert len(data) == im["provided_size_sectors"] * 512
    pos = 0
    for r in sorted(im["written_ranges"], key=lambda r: r["start_sector"]):
        a, n = r["start_sector"], r["sectors"]
        assert data[pos * 512:a * 512].count(0) == (a - pos) * 512, f"non-zero before {a}"
        got = data[a * 512:(a + n) * 512]
        assert hashlib.sha256(got).hexdigest() == r["pattern_sha256"]
        assert got == pattern(a, n)
        pos = a + n
    assert data[pos * 512:].count(0) == len(data) - pos * 512
    assert hashlib.sha256(data).hexdigest() == im["provided_sha256"]


@pytest.mark.parametrize("name", CLEAN)
def test_reads_recorded_content(name, open_image):
    r = open_image(name)
    assert r.journal.status is JournalStatus.EMPTY
    assert r.nr_sectors == IMAGES[name]["provided_size_sectors"]
    assert r.logical_block_size == IMAGES[name]["provided_logical_block_size"]
    check_content(r.read(0, r.nr_sectors), name)
    assert r.scrub() == []


@pytest.mark.parametrize("name", CLEAN)
def test_small_unaligned_reads_across_areas(name, open_image):
    r = open_image(name)
    spb = r.geometry.sectors_per_block
    ranges = [(x["start_sector"], x["start_sector"] + x["sectors"])
              for x in IMAGES[name]["written_ranges"]]
    for s in (0, 2048 - spb, 2048, ranges[1][0] - spb, ranges[1][0], r.nr_sectors - spb):
        written = any(a <= s < b for a, b in ranges)
        assert r.read(s, spb) == (pattern(s, spb) if written else bytes(512 * spb))


def test_crash_image_needs_replay(open_image, kernel_images):
    """Journal mode, powered off with committed writes still only in the journal."""
    name = "crc32c-journal-crash"
    with pytest.raises(UnreplayedJournalError, match="must be replayed"):
        open_image(name)
    path = kernel_images.files(name)["device"]
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    r = open_image(name, replay_journal=True)
    assert r.journal.status is JournalStatus.REPLAY_NEEDED
    assert (r.journal.write_start, r.journal.write_sections) == (1, 11)
    data = r.read(0, r.nr_sectors)
    check_content(data, name)
    assert hashlib.sha256(data).hexdigest() == \
        IMAGES[name]["crash"]["replay_sha256_after_clean_open_of_a_copy"]
    missing = IMAGES[name]["crash"]["written_sectors_missing_from_data_area"][0]
    lo, n = missing["start_sector"], missing["sectors"]
    assert set(range(lo, lo + n)) <= set(r.replayed_sectors)
    # the data area alone really is stale there
    ds = r.geometry.data_sector(lo)
    assert path.read_bytes()[ds * 512:(ds + 1) * 512] != pattern(lo, 1)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before  # image untouched


def _tamper(kernel_images, tmp_path, name, role, offset, xor=0x01):
    paths = kernel_images.copy(name, tmp_path)
    with open(paths[role], "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ xor]))
    return paths


@pytest.mark.parametrize("name,sector", [
    ("crc32c-journal", 5921),          # inside the middle pattern range
    ("crc32c-journal", 3000),          # a zero block
    ("sha256-journal-4k", 11632 + 8),  # 4 KiB blocks: the block's first sector is named
    ("hmac-sha256-journal", 10143),    # the last block
    ("sha256-separate-meta", 4100),
    ("crc32c-bitmap", 0),
])
@pytest.mark.parametrize("what", ["data", "tag"])
def test_flipped_byte_names_the_sector(name, sector, what, open_image, kernel_images,
                                       tmp_path):
    clean = open_image(name)
    geo = clean.geometry
    ds, to = geo.locate(sector)
    separate = geo.separate_metadata
    if what == "data":
        role, offset = ("data" if separate else "device"), ds * 512 + 100
    else:
        role, offset = ("meta" if separate else "device"), to + geo.tag_size - 1
    paths = _tamper(kernel_images, tmp_path, name, role, offset)
    r = open_image(name, paths)
    spb = geo.sectors_per_block
    buf = bytearray(b"\xaa" * (64 * 512))
    start = min(max(0, sector - 32), r.nr_sectors - 64) // spb * spb
    with pytest.raises(IntegrityError, match=rf"checksum mismatch at sector {sector}$"):
        r.readinto(start, buf)
    assert buf == bytes(len(buf))  # no unverified data is handed out
    assert r.number_of_mismatches == 1
    # neighbours still read, and a scrub finds exactly that block
    if sector >= spb:
        r.read(sector - spb, spb)
    assert r.scrub() == [sector]


def test_wrong_key(open_image):
    with pytest.raises(IntegrityError, match="mismatch at sector 0$"):
        open_image("hmac-sha256-journal", key=b"\x01" * 32).read(0, 8)


def test_wrong_algorithm(open_image):
    with pytest.raises(IntegrityError, match="mismatch at sector 0$"):
        open_image("crc32c-journal", internal_hash="crc32").read(0, 1)


def test_table_parameters_must_match(open_image):
    with pytest.raises(FormatError, match="tag size 8 does not match the superblock's 4"):
        open_image("crc32c-journal", tag_size=8)
    with pytest.raises(FormatError, match="block size 512 does not match the superblock's 4096"):
        open_image("sha256-journal-4k", block_size=512)


def test_read_only(open_image):
    r = open_image("crc32c-journal")
    with pytest.raises(ReadOnlyError):
        r.write(0, bytes(512))


def test_truncated_image(kernel_images, tmp_path):
    paths = kernel_images.copy("crc32c-journal", tmp_path)
    with open(paths["device"], "r+b") as f:
        f.truncate(5 * 1024 * 1024)
    dev = FileDevice(paths["device"], read_only=True)
    with pytest.raises(FormatError, match="too small for the superblock's provided_data_sectors"):
        IntegrityReader(dev, internal_hash="crc32c")
    with pytest.raises(FormatError, match="too small to hold a dm-integrity superblock"):
        IntegrityReader(MemoryDevice(4), internal_hash="crc32c")


def test_not_an_integrity_device():
    with pytest.raises(FormatError, match="magic"):
        IntegrityReader(MemoryDevice(64), internal_hash="crc32c")


def _patch_sb(path, flags=None, recalc_sector=None):
    with open(path, "r+b") as f:
        if flags is not None:
            f.seek(24)
            f.write(struct.pack("<I", flags))
        if recalc_sector is not None:
            f.seek(32)
            f.write(struct.pack("<Q", recalc_sector))


def test_discard_filler(kernel_images, tmp_path, open_image):
    name = "crc32c-journal"
    to = open_image(name).geometry.tag_offset(8)
    paths = kernel_images.copy(name, tmp_path)
    with open(paths["device"], "r+b") as f:
        f.seek(to)
        f.write(b"\xf6" * 4)
    with pytest.raises(IntegrityError, match="sector 8$"):
        open_image(name, paths).read(8, 1)
    assert open_image(name, paths, allow_discards=True).read(8, 1) == pattern(8, 1)


def test_dirty_bitmap_is_reported(kernel_images, tmp_path, open_image):
    name = "crc32c-bitmap"
    r0 = open_image(name)
    paths = kernel_images.copy(name, tmp_path)
    flags = int(r0.superblock.flags | SbFlags.DIRTY_BITMAP)
    _patch_sb(paths["device"], flags=flags)
    with open(paths["device"], "r+b") as f:   # bit 0: sectors 0..32767 (2**15 per bit)
        f.seek(r0.geometry.journal_start_sector * 512)
        f.write(b"\x01")
    r = open_image(name, paths)
    assert r.journal.status is JournalStatus.DIRTY_BITMAP
    assert r.journal.dirty_ranges == ((0, 11848),)
    with pytest.raises(IntegrityError,
                       match="sector 0 cannot be verified: its bitmap region is dirty"):
        r.read(0, 8)
    # a clean bitmap with the flag set reads normally
    with open(paths["device"], "r+b") as f:
        f.seek(r0.geometry.journal_start_sector * 512)
        f.write(b"\x00")
    r = open_image(name, paths)
    assert r.journal.dirty_ranges == ()
    assert r.read(0, 8) == pattern(0, 8)


def test_recalculating_region_is_not_verified(kernel_images, tmp_path, open_image):
    name = "crc32c-direct"
    paths = kernel_images.copy(name, tmp_path)
    flags = int(open_image(name).superblock.flags | SbFlags.RECALCULATING)
    _patch_sb(paths["device"], flags=flags, recalc_sector=4096)
    r = open_image(name, paths)
    assert r.read(0, 2048) == pattern(0, 2048)
    with pytest.raises(IntegrityError, match="sector 4096 cannot be verified: tags are being "
                                             "recalculated"):
        r.read(4088, 16)


def test_torn_journal_section_is_not_replayed(kernel_images, tmp_path, open_image):
    """A section whose commit ids belong to another (valid) sequence stops the replay
    there, as the kernel's replay does; an id matching no sequence makes the kernel clear
    the journal."""
    name = "crc32c-journal-crash"
    r0 = open_image(name, replay_journal=True)
    jg = r0.geometry.journal
    base = r0.geometry.journal_start_sector * 512
    paths = kernel_images.copy(name, tmp_path)
    # A torn last commit: section 0 (the newest, sequence 3) keeps in sector 3 what the
    # previous lap left there (sequence 2).  Replay then stops before section 0.
    sect, j = 0, 3
    pos = base + (sect * jg.section_sectors + j) * 512 + 504
    with open(paths["device"], "r+b") as f:
        f.seek(pos)
        cid = struct.unpack("<Q", f.read(8))[0]
        assert cid == 0x4444444444444444 ^ j
        f.seek(pos)
        f.write(struct.pack("<Q", 0x3333333333333333 ^ j))
    r = open_image(name, paths, replay_journal=True)
    assert (r.journal.write_start, r.journal.write_sections) == (1, 10)
    assert 14152 not in r.replayed_sectors and 14151 in r.replayed_sectors
    # an id that matches no sequence: the kernel clears the journal, replays nothing
    with open(paths["device"], "r+b") as f:
        f.seek(pos)
        f.write(b"\x99" * 8)
    r = open_image(name, paths)
    assert r.journal.status is JournalStatus.UNREADABLE
    assert "section 0 sector 3" in r.journal.message
