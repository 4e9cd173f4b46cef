"""The integrity table line: every class of bad argument is refused with a clear one-line
error and leaves the device untouched; the superblock is checked against the table."""

import os

import pytest
from target_util import digest, memdisk, salt_rng, target

from dmkit.block import MemoryDevice
from dmkit.dm import DeviceResolver, MappedDevice
from dmkit.errors import IntegrityError, TableError
from dmkit.keys import Keyring
from dmkit.targets.integrity.options import parse_args
from dmkit.targets.integrity.target import IntegrityTarget

KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"


def load(disk, args, nr_sectors=8, **kw):
    return IntegrityTarget(DeviceResolver({"disk": disk, "meta": kw.pop("meta", disk)}),
                           0, nr_sectors, args.split(), **kw)


BAD_ARGS = [
    ("disk 0 -", "expected <dev>"),
    ("disk x - J 0", "invalid reserved sectors"),
    ("disk 0 0 J 0", "invalid tag size 0"),
    ("disk 0 four J 0", "invalid tag size 'four'"),
    ("disk 0 4 X 0", "invalid mode 'X'"),
    ("disk 0 4 I 1 internal_hash:crc32c", "mode I"),
    ("disk 0 4 J 3 internal_hash:crc32c", "number of optional parameters"),
    ("disk 0 4 J 20 " + " ".join(["fix_padding"] * 20), "optional parameters 20"),
    ("disk 0 4 J 1 internal_hash:crc32c extra", "too many arguments"),
    ("disk 0 4 J 1 bogus", "invalid optional parameter 'bogus'"),
    ("disk 0 4 J 1 journal_sectors", "invalid optional parameter 'journal_sectors'"),
    ("disk 0 4 J 2 internal_hash:crc32c fix_padding:1", "invalid optional parameter"),
    ("disk 0 4 J 2 internal_hash:crc32c internal_hash:crc32", "duplicate feature 'internal_hash'"),
    ("disk 0 4 J 3 internal_hash:crc32c fix_hmac fix_hmac", "duplicate feature 'fix_hmac'"),
    ("disk 0 4 J 2 internal_hash:crc32c journal_watermark:101", "journal_watermark 101"),
    ("disk 0 4 J 2 internal_hash:crc32c journal_sectors:4294967296", "journal_sectors"),
    ("disk 0 4 J 2 internal_hash:crc32c commit_time:-1", "commit_time '-1'"),
    ("disk 0 4 J 2 internal_hash:crc32c block_size:1000", "block_size 1000"),
    ("disk 0 4 J 2 internal_hash:crc32c block_size:8192", "block_size 8192"),
    ("disk 0 4 J 2 internal_hash:crc32c meta_device:", "meta_device"),
    ("disk 0 4 J 1 internal_hash:", "no algorithm"),
    ("disk 0 4 J 1 internal_hash:crc32c:123", "even number of hex digits"),
    ("disk 0 4 J 1 internal_hash:crc32c:zz", "not hex"),
]


@pytest.mark.parametrize("args,message", BAD_ARGS)
def test_bad_arguments(args, message):
    with pytest.raises(TableError, match=message) as e:
        parse_args(args.split())
    assert "\n" not in str(e.value) and str(e.value).startswith("integrity: ")


BAD_TABLES = [
    ("disk 0 - J 0", "unknown tag size"),
    ("disk 0 4 B 0", "bitmap mode"),
    ("disk 0 4 D 1 allow_discards", "discards can only be used with internal_hash"),
    ("disk 0 4 D 1 zero_on_error", "zero_on_error can only be used with internal_hash"),
    ("disk 0 4 D 1 recalculate", "recalculate can only be used with internal_hash"),
    ("disk 0 - J 1 internal_hash:whirlpool9", "invalid internal_hash 'whirlpool9'"),
    ("disk 0 - J 1 internal_hash:hmac(sha256)", "error setting internal_hash key"),
    ("disk 0 - J 1 internal_hash:crc32c:001122", "error setting internal_hash key"),
    ("disk 0 - J 1 internal_hash:sha256:00", "error setting internal_hash key"),
    ("disk 0 4 J 2 internal_hash:crc32c journal_crypt:ecb(aes):" + "00" * 16,
     r"invalid journal cipher: journal encryption 'ecb\(aes\)' is not supported"),
    ("disk 0 4 J 2 internal_hash:crc32c journal_crypt:ctr(aes):" + "00" * 20,
     "error setting journal_crypt key: .*key of 20 bytes"),
    ("disk 0 4 J 2 internal_hash:crc32c journal_crypt:ctr(aes)",
     "error setting journal_crypt key: .*key of 0 bytes"),
    ("disk 0 4 J 2 internal_hash:crc32c journal_crypt:xts(aes):" + "00" * 64,
     "error setting journal_crypt key"),
    ("disk 0 4 B 2 internal_hash:crc32c journal_crypt:ctr(aes):" + "00" * 16,
     "journal_crypt cannot be used in bitmap mode"),
    ("disk 0 500 J 0", "tag size 500 is too big"),
    ("nosuch 0 4 J 1 internal_hash:crc32c", "cannot open device 'nosuch'"),
    ("disk 0 4 J 2 internal_hash:crc32c meta_device:nosuch", "cannot open meta_device"),
    ("disk 0 - J 1 internal_hash:hmac(sha256)::32:logon:absent", "logon:absent"),
    ("disk 4090 4 J 1 internal_hash:crc32c", "too small for a superblock"),
]


@pytest.mark.parametrize("args,message", BAD_TABLES)
def test_bad_tables_leave_the_device_untouched(args, message):
    disk = memdisk(4096)
    before = digest(disk)
    with pytest.raises(TableError, match=message) as e:
        load(disk, args)
    assert "\n" not in str(e.value)
    assert digest(disk) == before


def test_too_small_device():
    disk = memdisk(200)
    with pytest.raises(TableError, match="could not initialize the superblock"):
        load(disk, "disk 0 4 J 1 internal_hash:crc32c")
    assert not any(disk.buf)


def test_mapping_larger_than_provided():
    disk = memdisk(4096)
    with pytest.raises(TableError, match=r"not enough provided sectors \(3656\) for the "
                                         r"requested mapping size 4000"):
        load(disk, "disk 0 4 J 1 internal_hash:crc32c", 4000)
    assert not any(disk.buf), "nothing is written when the table is refused"


def test_not_initialized_device_is_refused_untouched():
    disk = memdisk(4096)
    disk.buf[100] = 1
    before = digest(disk)
    with pytest.raises(TableError, match="not initialized"):
        load(disk, "disk 0 4 J 1 internal_hash:crc32c")
    assert digest(disk) == before
    # mode R loads anything (in memory, as the kernel), and writes nothing
    t = load(disk, "disk 0 4 R 1 internal_hash:crc32c")
    t.close()
    assert digest(disk) == before


@pytest.fixture
def formatted():
    disk = memdisk(4096)
    load(disk, "disk 0 4 J 2 internal_hash:crc32c fix_padding").close()
    return disk


@pytest.mark.parametrize("args,message", [
    ("disk 0 8 J 1 internal_hash:crc32c", "tag size 8 does not match the superblock's 4"),
    ("disk 0 - J 1 internal_hash:sha256", "tag size 32 does not match the superblock's 4"),
    ("disk 0 4 J 2 internal_hash:crc32c block_size:4096", "block size 4096 does not match "
                                                          "the superblock's 512"),
    ("disk 0 4 J 2 internal_hash:crc32c meta_device:meta", "interleaved tags"),
    ("disk 0 4 J 2 internal_hash:crc32c journal_mac:crc32c", "journal_mac mismatch"),
    ("disk 8 4 J 1 internal_hash:crc32c", "not initialized"),
])
def test_table_checked_against_superblock(formatted, args, message):
    before = digest(formatted)
    with pytest.raises(TableError, match=message):
        load(formatted, args)
    assert digest(formatted) == before


def test_separate_metadata_superblock_needs_meta_device():
    data, meta = memdisk(4096), memdisk(2048)
    load(data, "disk 0 4 J 2 internal_hash:crc32c meta_device:meta", meta=meta).close()
    with pytest.raises(TableError, match="separate metadata device: give meta_device"):
        load(meta, "disk 0 4 J 1 internal_hash:crc32c")


def test_layout_with_tags_on_data_is_refused():
    disk = memdisk(4096)
    with pytest.raises(TableError, match="puts tags on data"):
        load(disk, "disk 0 4 J 2 internal_hash:crc32c interleave_sectors:8")
    assert not any(disk.buf)
    load(disk, "disk 0 4 J 3 internal_hash:crc32c interleave_sectors:8 buffer_sectors:8").close()


def test_hmac_recalculation_needs_legacy_recalculate():
    disk = memdisk(4096)
    args = f"disk 0 - J 2 internal_hash:hmac(sha256):{KEY} recalculate"
    with pytest.raises(TableError, match="legacy_recalculate"):
        load(disk, args)
    assert not any(disk.buf)
    load(disk, f"disk 0 - J 3 internal_hash:hmac(sha256):{KEY} recalculate "
               "legacy_recalculate").close()
    # with fix_hmac the salt binds tags to the device and it is allowed only with a
    # journal_mac key too (dm_integrity_disable_recalculate)
    disk2 = memdisk(4096)
    with pytest.raises(TableError, match="legacy_recalculate"):
        load(disk2, f"disk 0 - J 3 internal_hash:hmac(sha256):{KEY} recalculate fix_hmac")
    load(disk2, f"disk 0 - J 4 internal_hash:hmac(sha256):{KEY} recalculate fix_hmac "
                f"journal_mac:hmac(sha256):{KEY}").close()


def test_keyring_reference_key():
    ring = Keyring()
    key = bytes.fromhex(KEY)
    ring.add("logon", "vol:key", key)
    disk = memdisk(4096)
    args = "disk 0 - J 2 internal_hash:hmac(sha256)::32:logon:vol:key fix_hmac"
    res = DeviceResolver({"disk": disk}, keyring=ring)
    t = IntegrityTarget(res, 0, 1024, args.split(), rng=salt_rng())
    assert t.status("table").endswith("fix_hmac internal_hash:hmac(sha256)::32:logon:vol:key")
    dev = MappedDevice("x", [t], resolver=res)
    dev.write(0, b"k" * 4096)
    dev.close()
    # the same key given as hex reads it back; a wrong-size reference is refused
    hexargs = f"disk 0 - J 2 internal_hash:hmac(sha256):{KEY} fix_hmac"
    t2 = load(disk, hexargs, 1024)
    assert MappedDevice("y", [t2]).read(0, 8) == b"k" * 4096
    t2.close()
    with pytest.raises(TableError, match="says 16"):
        IntegrityTarget(DeviceResolver({"disk": disk}, keyring=ring), 0, 8,
                        "disk 0 - J 1 internal_hash:hmac(sha256)::16:logon:vol:key".split())


def test_wrong_key_fails_reads_not_load():
    disk = memdisk(4096)
    dev = MappedDevice("x", [load(disk, f"disk 0 - J 1 internal_hash:hmac(sha256):{KEY}",
                                  1024)])
    dev.write(0, os.urandom(8192))
    dev.close()
    other = KEY[::-1]
    dev = MappedDevice("y", [load(disk, f"disk 0 - J 1 internal_hash:hmac(sha256):{other}",
                                  1024)])
    with pytest.raises(IntegrityError, match="checksum mismatch at sector 0"):
        dev.read(0, 16)
    dev.close()


def test_status_and_messages(formatted):
    t = load(formatted, "disk 0 4 J 2 internal_hash:crc32c zero_on_error", 1024)
    assert t.status("info") == "0 3656 - zeroed_blocks:0"
    assert t.status("table") == ("disk 0 4 J 8 journal_sectors:176 interleave_sectors:32768 "
                                 "buffer_sectors:128 journal_watermark:50 commit_time:10000 "
                                 "fix_padding internal_hash:crc32c zero_on_error")
    t.number_of_mismatches = 3
    assert t.message(["clear_stats"]) == ""
    assert t.status("info").startswith("0 ")
    with pytest.raises(TableError, match="unrecognised message 'frobnicate'"):
        t.message(["frobnicate"])
    t.close()


def test_limits_and_profile():
    disk = memdisk(4096)
    t = load(disk, "disk 0 4 D 2 internal_hash:crc32c block_size:4096")
    assert t.limits().logical_block_size == 4096 and t.integrity_profile() is None
    t.close()
    disk = memdisk(4096)
    t = load(disk, "disk 0 8 D 1 block_size:1024")
    prof = t.integrity_profile()
    assert (prof.name, prof.tuple_size, prof.tag_size, prof.interval_bytes) == \
        ("DM-DIF-EXT-TAG", 8, 8, 1024)
    assert t.limits().logical_block_size == 1024 and not t.can_discard
    t.close()


def test_read_only_table_does_not_format():
    disk = memdisk(4096)
    with pytest.raises(TableError, match="read-only"):
        IntegrityTarget(DeviceResolver({"disk": disk}), 0, 8,
                        "disk 0 4 J 1 internal_hash:crc32c".split(), read_only=True)
    assert not any(disk.buf)


def test_unaligned_and_out_of_range_requests():
    from dmkit.block import Bio
    from dmkit.errors import InvalidBioError
    t = target({"disk": memdisk(4096)}, "disk 0 4 J 2 internal_hash:crc32c block_size:4096")
    with pytest.raises(InvalidBioError, match="not aligned to the 4096-byte block size"):
        t.map(Bio.read(4, bytearray(4096)))
    with pytest.raises(InvalidBioError, match="outside the target"):
        t.map(Bio.read(t.nr_sectors, bytearray(4096)))
    dev = MappedDevice("x", [t])
    with pytest.raises(InvalidBioError, match="logical block size"):
        dev.read(1, 8)
    dev.close()


def test_meta_device_too_small():
    data, meta = memdisk(8192), MemoryDevice(100, name="meta")
    with pytest.raises(TableError, match="could not initialize the superblock"):
        load(data, "disk 0 32 J 2 internal_hash:sha256 meta_device:meta", meta=meta)
