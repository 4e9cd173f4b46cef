"""Superblock and journal structures: round trips and one negative test per rule."""

import struct

import pytest
from integrity_vectors import IMAGES, VECTORS

from dmkit.errors import FormatError
from dmkit.targets.integrity.layout import (
    COMMIT_IDS,
    JOURNAL_SECTOR_DATA,
    MAX_TAG_SIZE,
    SB_MAGIC,
    JournalEntry,
    JournalSectorTail,
    SbFlags,
    Superblock,
    commit_id,
    journal_entry_size,
    required_version,
)

SB_FMT = struct.Struct("<8sBBHIQIBB2sQ8s16s")


def raw_sb(**over) -> bytes:
    f = dict(magic=SB_MAGIC, version=5, log2_interleave_sectors=15, integrity_tag_size=4,
             journal_sections=1, provided_data_sectors=11848, flags=0x18,
             log2_sectors_per_block=0, log2_blocks_per_bitmap_bit=15, pad=bytes(2),
             recalc_sector=0, pad2=bytes(8), salt=bytes(range(16)))
    f.update(over)
    return SB_FMT.pack(*f.values())


def test_struct_size():
    assert Superblock.SIZE == 64
    assert len(Superblock.from_bytes(raw_sb()).to_area_bytes()) == 4096


def test_round_trip_synthetic():
    raw = raw_sb()
    sb = Superblock.from_bytes(raw)
    assert sb.to_bytes() == raw
    assert sb.flags == SbFlags.FIXED_PADDING | SbFlags.FIXED_HMAC
    assert (sb.version, sb.integrity_tag_size, sb.provided_data_sectors) == (5, 4, 11848)
    assert sb.salt == bytes(range(16))
    assert Superblock.from_bytes(sb.to_bytes()) == sb


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_round_trip_kernel(name, kernel_images):
    files = kernel_images.files(name)
    raw = (files.get("meta") or files["device"]).read_bytes()[:4096]
    sb = Superblock.from_bytes(raw, device=name)
    assert sb.to_bytes() == raw[:64]
    assert sb.to_area_bytes() == raw  # the rest of the 4 KiB area is zero
    assert sb.provided_data_sectors == IMAGES[name]["provided_size_sectors"]


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_dump_matches(name, kernel_images):
    """Every field integritysetup dump printed equals ours."""
    text = (VECTORS / f"{name}.dump.txt").read_text().splitlines()[1:]
    fields = {k: v.strip() for k, _, v in (line.partition(" ") for line in text)}
    files = kernel_images.files(name)
    sb = Superblock.from_bytes((files.get("meta") or files["device"]).read_bytes()[:64])
    assert int(fields["superblock_version"]) == sb.version
    assert int(fields["log2_interleave_sectors"]) == sb.log2_interleave_sectors
    assert int(fields["integrity_tag_size"]) == sb.integrity_tag_size
    assert int(fields["journal_sections"]) == sb.journal_sections
    assert int(fields["provided_data_sectors"]) == sb.provided_data_sectors
    assert int(fields["sector_size"]) == sb.block_size
    assert int(fields["log2_blocks_per_bitmap"]) == sb.log2_blocks_per_bitmap_bit
    names = {"fix_padding": SbFlags.FIXED_PADDING, "fix_hmac": SbFlags.FIXED_HMAC,
             "have_journal_mac": SbFlags.HAVE_JOURNAL_MAC,
             "recalculating": SbFlags.RECALCULATING, "dirty_bitmap": SbFlags.DIRTY_BITMAP}
    want = SbFlags(0)
    for word in fields["flags"].split():
        want |= names[word]
    assert sb.flags == want


# -- one negative test per validation rule ------------------------------------------------

NEGATIVE = [
    ("truncated", raw_sb()[:63], "truncated"),
    ("magic", raw_sb(magic=b"integrt\1"), "magic"),
    ("version 0", raw_sb(version=0), "version"),
    ("version 6 inline", raw_sb(version=6, flags=0x38), "inline"),
    ("version 7", raw_sb(version=7), "version"),
    ("unknown flag", raw_sb(flags=0x18 | 0x100), "flags"),
    ("version too old for flags", raw_sb(version=4), "version"),
    ("tag size 0", raw_sb(integrity_tag_size=0), "integrity_tag_size"),
    ("tag size too big", raw_sb(integrity_tag_size=MAX_TAG_SIZE + 1), "integrity_tag_size"),
    ("block over 4k", raw_sb(log2_sectors_per_block=4), "log2_sectors_per_block"),
    ("no journal", raw_sb(journal_sections=0), "journal_sections"),
    ("interleave out of range", raw_sb(log2_interleave_sectors=2), "log2_interleave_sectors"),
    ("interleave too big", raw_sb(log2_interleave_sectors=32), "log2_interleave_sectors"),
    ("provided 0", raw_sb(provided_data_sectors=0), "provided_data_sectors"),
    ("provided not whole blocks", raw_sb(log2_sectors_per_block=3, provided_data_sectors=11844),
     "provided_data_sectors"),
]


@pytest.mark.parametrize("raw,field", [(r, f) for _, r, f in NEGATIVE],
                         ids=[n for n, _, _ in NEGATIVE])
def test_invalid_superblock(raw, field):
    with pytest.raises(FormatError) as ei:
        Superblock.from_bytes(raw, device="/dev/test")
    msg = str(ei.value)
    assert msg.startswith("/dev/test: ")
    assert field in msg
    assert "\n" not in msg


def test_max_tag_size_is_kernels():
    # JOURNAL_SECTOR_DATA - JOURNAL_MAC_PER_SECTOR - offsetof(journal_entry, last_bytes[8])
    assert MAX_TAG_SIZE == 504 - 8 - 72 == 424
    Superblock.from_bytes(raw_sb(integrity_tag_size=MAX_TAG_SIZE))


def test_required_version():
    assert required_version(0) == 1
    assert required_version(0, meta_device=True) == 2
    assert required_version(SbFlags.RECALCULATING) == 2
    assert required_version(0, bitmap_mode=True) == 3
    assert required_version(SbFlags.DIRTY_BITMAP) == 3
    assert required_version(SbFlags.FIXED_PADDING | SbFlags.DIRTY_BITMAP) == 4
    assert required_version(SbFlags.FIXED_HMAC) == 5


# -- journal pieces --------------------------------------------------------------------

def test_journal_entry_size():
    assert journal_entry_size(1, 4) == 24      # crc32c, 512-byte blocks: 21 per sector
    assert journal_entry_size(1, 32) == 48     # sha256: 10 per sector
    assert journal_entry_size(8, 32) == 104    # sha256, 4 KiB blocks: 4 per sector
    assert journal_entry_size(1, 3) == 24      # rounded up to 8
    assert JOURNAL_SECTOR_DATA == 504


def test_journal_entry_round_trip():
    e = JournalEntry(sector=0x1234, last_bytes=(b"abcdefgh", b"ABCDEFGH"), tag=b"\x01\x02\x03")
    raw = e.to_bytes()
    assert len(raw) == journal_entry_size(2, 3) == 32
    assert raw[:8] == struct.pack("<Q", 0x1234)
    assert JournalEntry.from_bytes(raw, 2, 3) == e
    assert not e.is_unused and not e.is_inprogress
    unused = JournalEntry.from_bytes(b"\0" * 4 + b"\xff" * 4 + bytes(16), 1, 4)
    assert unused.is_unused
    inprog = JournalEntry.from_bytes(b"\0" * 4 + b"\xfe\xff\xff\xff" + bytes(16), 1, 4)
    assert inprog.is_inprogress


def test_journal_entry_truncated():
    with pytest.raises(FormatError, match="truncated"):
        JournalEntry.from_bytes(bytes(23), 1, 4)


def test_journal_sector_tail_round_trip():
    sector = bytes(496) + b"MACMACMA" + struct.pack("<Q", 0x2222222222222222 ^ 5)
    t = JournalSectorTail.from_bytes(sector)
    assert t == JournalSectorTail(b"MACMACMA", 0x2222222222222222 ^ 5)
    assert t.to_bytes() == sector[-16:]
    with pytest.raises(FormatError):
        JournalSectorTail.from_bytes(bytes(511))


def test_commit_id():
    assert commit_id(0, 0, 0) == 0x1111111111111111
    assert commit_id(3, 7, 1) == COMMIT_IDS[1] ^ ((3 << 32) | 7)
