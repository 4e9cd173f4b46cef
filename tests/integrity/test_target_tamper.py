"""Tampering: single bit flips in data and tags fail the block with its sector named;
blocks moved within a device, or between devices with different salts under fix_hmac,
fail; bit flips in the superblock and the journal give a clear error or correct data,
never silently wrong data."""

import os
import random

import pytest
from target_util import mapped, memdisk, salt_rng

from dmkit.block import MemoryDevice
from dmkit.dm import DeviceResolver, MappedDevice
from dmkit.errors import DmkitError, IntegrityError
from dmkit.targets.integrity.target import IntegrityTarget

KEY = "7e" * 32
HMAC = f"internal_hash:hmac(sha256):{KEY}"


def make(args: str, nblocks_written: int | None = None, seed: bytes = b"salt"):
    disk = memdisk(2048)
    dev = mapped({"disk": disk}, args, rng=salt_rng(seed))
    n = dev.nr_sectors
    data = os.urandom(n * 512)
    dev.write(0, data)
    return disk, dev, data


def reopen(disk, args, n):
    t = IntegrityTarget(DeviceResolver({"disk": disk}), 0, n, args.split())
    return MappedDevice("re", [t], resolver=t.resolver)


@pytest.mark.parametrize("args", [
    "disk 0 - J 2 internal_hash:crc32c fix_padding",
    f"disk 0 - D 3 {HMAC} fix_hmac interleave_sectors:1024",
    "disk 0 - J 3 internal_hash:sha256 block_size:4096 interleave_sectors:1024",
])
def test_every_single_bit_flip_is_caught(args):
    disk, dev, data = make(args)
    dev.close()
    dev = reopen(disk, args, len(data) // 512)
    t = dev.targets[0]
    geo, spb, ts = t.geo, t.spb, t.tag_size
    rng = random.Random(1)
    for logical in (0, spb * 5, (t.nr_sectors // spb - 1) * spb):
        d_byte = geo.data_sector(logical) * 512
        t_byte = geo.tag_offset(logical)
        bits = [("data", d_byte * 8 + b) for b in rng.sample(range(spb * 4096), 256)]
        bits += [("tag", t_byte * 8 + b) for b in range(ts * 8)]
        for what, bit in bits:
            disk.buf[bit // 8] ^= 1 << (bit % 8)
            with pytest.raises(IntegrityError, match=f"checksum mismatch at sector {logical}$"):
                dev.read(logical, spb)
            disk.buf[bit // 8] ^= 1 << (bit % 8)
        assert dev.read(logical, spb) == data[logical * 512:(logical + spb) * 512]
    # the failed reads were counted, one per request, and the buffer was not left with data
    assert int(t.status("info").split()[0]) > 0
    buf = bytearray(b"\xaa" * spb * 512)
    disk.buf[geo.data_sector(0) * 512] ^= 1
    with pytest.raises(IntegrityError):
        from dmkit.block import Bio
        dev.submit(Bio.read(0, buf))
    assert not any(buf)
    dev.close()


def test_block_moved_within_device_fails():
    args = "disk 0 - J 2 internal_hash:crc32c fix_padding"
    disk, dev, data = make(args)
    t = dev.targets[0]
    geo = t.geo
    dev.close()
    # copy block 3 and its tag over block 9: the tag covers the sector number
    a, b = geo.data_sector(3) * 512, geo.data_sector(9) * 512
    disk.buf[b:b + 512] = disk.buf[a:a + 512]
    ta, tb = geo.tag_offset(3), geo.tag_offset(9)
    disk.buf[tb:tb + 4] = disk.buf[ta:ta + 4]
    dev = reopen(disk, args, len(data) // 512)
    with pytest.raises(IntegrityError, match="mismatch at sector 9$"):
        dev.read(8, 2)
    assert dev.read(3, 1) == data[3 * 512:4 * 512]
    dev.close()


@pytest.mark.parametrize("fix_hmac,caught", [(True, True), (False, False)])
def test_block_copied_to_another_device(fix_hmac, caught):
    """Under fix_hmac each device has its own salt: a block and its tag copied from one
    device to the same place on another (same key) fails.  Without fix_hmac it does not."""
    extra = " fix_hmac" if fix_hmac else ""
    args = f"disk 0 - J {3 + fix_hmac} {HMAC} fix_padding interleave_sectors:1024{extra}"
    disk1, dev1, data1 = make(args, seed=b"one")
    disk2, dev2, data2 = make(args, seed=b"two")
    geo = dev1.targets[0].geo
    dev1.close()
    dev2.close()
    a = geo.data_sector(40) * 512
    disk2.buf[a:a + 512] = disk1.buf[a:a + 512]
    t = geo.tag_offset(40)
    disk2.buf[t:t + 32] = disk1.buf[t:t + 32]
    dev2 = reopen(disk2, args, len(data2) // 512)
    if caught:
        with pytest.raises(IntegrityError, match="mismatch at sector 40$"):
            dev2.read(40, 1)
    else:
        assert dev2.read(40, 1) == data1[40 * 512:41 * 512]
    dev2.close()


def _flip_and_load(img: bytes, bit: int, args: str, n: int, want: bytes):
    disk = MemoryDevice(initial=img, name="disk")
    disk.buf[bit // 8] ^= 1 << (bit % 8)
    try:
        dev = reopen(disk, args, n)
    except DmkitError as e:
        assert "\n" not in str(e)
        return "refused"
    try:
        got = dev.read(0, n)
    except IntegrityError:
        return "read-failed"
    finally:
        try:
            dev.close()
        except DmkitError:
            pass
    assert got == want, f"bit {bit}: silently wrong data"
    return "same-data"


@pytest.mark.parametrize("args", [
    "disk 0 - J 2 internal_hash:crc32c fix_padding",
    f"disk 0 - J 4 {HMAC} fix_hmac interleave_sectors:1024 legacy_recalculate",
])
def test_superblock_bit_flips_never_give_wrong_data(args):
    disk, dev, data = make(args)
    dev.close()
    img = bytes(disk.buf)
    n = len(data) // 512
    outcomes = {}
    for bit in range(64 * 8):
        outcomes[bit] = _flip_and_load(img, bit, args, n, data)
    assert outcomes[0] == "refused"                     # the magic
    assert set(outcomes.values()) <= {"refused", "read-failed", "same-data"}
    assert "refused" in outcomes.values() and "read-failed" in outcomes.values()


def _crashed_journal(args):
    """A journal-mode image whose last writes are committed but not yet written home."""
    disk = memdisk(2048)
    dev = mapped({"disk": disk}, args, rng=salt_rng())
    n = dev.nr_sectors
    old = os.urandom(n * 512)
    dev.write(0, old)
    dev.close()
    dev = reopen(disk, args, n)
    new = bytearray(old)
    new[512 * 100:512 * 140] = os.urandom(40 * 512)
    dev.write(100, new[512 * 100:512 * 140])
    dev.flush()                               # committed; the journal is not written home
    img = bytes(disk.buf)                     # power cut: no close
    t = dev.targets[0]
    return img, n, bytes(old), bytes(new), t.geo


@pytest.mark.parametrize("journal_mac", [False, True])
def test_journal_bit_flips_never_give_wrong_data(journal_mac):
    words = ["internal_hash:crc32c", "fix_padding", "journal_sectors:200"]
    if journal_mac:
        words += [f"journal_mac:hmac(sha256):{KEY}", "fix_hmac"]
    args = f"disk 0 - J {len(words)} {' '.join(words)}"
    img, n, old, new, geo = _crashed_journal(args)
    disk = MemoryDevice(initial=img, name="disk")
    dev = reopen(disk, args, n)
    assert dev.read(0, n) == new                  # replayed
    dev.close()
    jg = geo.journal
    j0 = geo.journal_start_sector * 512
    rng = random.Random(4)
    section = jg.section_sectors * 512
    spots = {
        "commit id": [j0 + s * 512 + 504 for s in range(jg.section_sectors)],
        "entry": [j0 + k for k in range(0, 8 * 512, 1)],
        "journal data": [j0 + 8 * 512 + k for k in range(0, 40 * 512, 97)],
    }
    results = {}
    for what, offsets in spots.items():
        for off in rng.sample(offsets, min(len(offsets), 120)):
            bit = off * 8 + rng.randrange(8)
            disk = MemoryDevice(initial=img, name="disk")
            disk.buf[bit // 8] ^= 1 << (bit % 8)
            try:
                dev = reopen(disk, args, n)
            except DmkitError as e:
                assert "\n" not in str(e)
                results.setdefault(what, set()).add("refused")
                continue
            got = dev.read(0, n)
            dev.close()
            # replay never leaves garbage: each block is its old or its new content
            for b in range(n):
                blk = got[b * 512:(b + 1) * 512]
                assert blk in (old[b * 512:(b + 1) * 512], new[b * 512:(b + 1) * 512]), \
                    f"{what} flip at byte {off - j0} of the journal: block {b}"
            results.setdefault(what, set()).add("loaded")
    assert section > 0
    assert results["commit id"] == {"refused"}
    assert "refused" in results["journal data"]
    if journal_mac:
        assert "refused" in results["entry"]


def test_superblock_mac_is_checked():
    words = ["internal_hash:crc32c", f"journal_mac:hmac(sha256):{KEY}", "fix_hmac"]
    args = f"disk 0 - J {len(words)} {' '.join(words)}"
    disk, dev, data = make(args)
    dev.close()
    # sb_mac: the journal_mac of the first sector's bytes before the MAC, without the salt
    import hashlib
    import hmac
    assert bytes(disk.buf[480:512]) == hmac.new(bytes.fromhex(KEY), bytes(disk.buf[:480]),
                                                hashlib.sha256).digest()
    disk.buf[40] ^= 0x01                          # recalc_sector: not otherwise checked
    with pytest.raises(IntegrityError, match="superblock MAC mismatch"):
        reopen(disk, args, len(data) // 512)
    other = args.replace(KEY, "11" * 32)
    disk.buf[40] ^= 0x01
    with pytest.raises(IntegrityError, match="superblock MAC mismatch"):
        reopen(disk, other, len(data) // 512)
    reopen(disk, args, len(data) // 512).close()
