"""Behaviour of the integrity target by feature: external tags, discards, zero_on_error,
logging, mode R, commits (flush, FUA, commit_time, watermark), the bitmap, recalculation
(resumable), and growing the device."""

import logging
import os

import pytest
from target_util import FakeClock, mapped, memdisk, target

from dmkit.block import Bio, BioIntegrityPayload, MemoryDevice
from dmkit.block.bio import REQ_FUA, REQ_PREFLUSH
from dmkit.dm import DeviceResolver, MappedDevice
from dmkit.errors import IntegrityError, NotSupportedError, ReadOnlyError
from dmkit.targets.integrity import IntegrityReader, JournalStatus, read_superblock, scan_journal
from dmkit.targets.integrity import datapath
from dmkit.targets.integrity.journal import read_journal_area
from dmkit.targets.integrity.layout import DISCARD_FILLER, SbFlags
from dmkit.targets.integrity.target import IntegrityTarget
from dmkit.targets.linear import LinearTarget


def reopen(devs, args, n, **kw):
    t = IntegrityTarget(DeviceResolver(devs), 0, n, args.split(), **kw)
    return MappedDevice("re", [t], resolver=t.resolver)


# -- external tags ---------------------------------------------------------------------------

def _payload(tags: bytes, ts: int, bs: int) -> BioIntegrityPayload:
    return BioIntegrityPayload(memoryview(bytearray(tags)), ts, bs)


@pytest.mark.parametrize("mode,layout", [("J", "interleave_sectors:64 fix_padding"),
                                         ("D", "interleave_sectors:64 fix_padding"),
                                         ("J", "meta_device:meta block_size:4096"),
                                         ("D", "block_size:1024")])
def test_external_tags_round_trip(mode, layout):
    """No internal hash: the device stores the tags bios carry (dm-crypt's AEAD tags) and
    hands them back, also through a stacked linear target and after a reload."""
    devs = {"disk": memdisk(4096), "meta": memdisk(1024)}
    args = f"disk 0 16 {mode} {len(layout.split())} {layout}"
    t = target(devs, args)
    prof = t.integrity_profile()
    bs = prof.interval_bytes
    assert (prof.name, prof.tuple_size, prof.tag_size) == ("DM-DIF-EXT-TAG", 16, 16)
    lower = MappedDevice("lower", [t], resolver=t.resolver)
    t.resolver.register("lower", lower)
    top = MappedDevice("top", [LinearTarget(t.resolver, 0, lower.nr_sectors, ["lower", "0"])])
    assert top.integrity == prof
    n = lower.nr_sectors
    nb = n * 512 // bs
    data = os.urandom(n * 512)
    tags = os.urandom(nb * 16)
    # in pieces that straddle interleave areas
    step = 24 * bs // 512
    for s in range(0, n, step):
        k = min(step, n - s)
        b0, b1 = s * 512 // bs, (s + k) * 512 // bs
        bio = Bio.write(s, data[s * 512:(s + k) * 512])
        bio.integrity = _payload(tags[b0 * 16:b1 * 16], 16, bs)
        top.submit(bio)
    top.flush()
    got = bytearray(n * 512)
    bio = Bio.read(0, got)
    bio.integrity = _payload(bytes(nb * 16), 16, bs)
    top.submit(bio)
    assert got == data and bytes(bio.integrity.buf) == tags
    # a write without a payload: journal mode stores zero tags, direct mode leaves them
    top.write(0, data[:bs])
    top.close()
    lower.close()
    dev = reopen(devs, args, n)
    bio = Bio.read(0, bytearray(n * 512))
    bio.integrity = _payload(bytes(nb * 16), 16, bs)
    dev.submit(bio)
    want = (bytes(16) if mode == "J" else tags[:16]) + tags[16:]
    assert bytes(bio.data) == data and bytes(bio.integrity.buf) == want
    with pytest.raises(Exception, match="integrity"):
        bad = Bio.write(0, data[:bs])
        bad.integrity = _payload(bytes(8), 8, bs)
        dev.submit(bad)
    dev.close()


def test_internal_hash_refuses_integrity_payloads():
    t = target({"disk": memdisk(2048)}, "disk 0 - D 1 internal_hash:crc32c")
    bio = Bio.write(0, bytes(512))
    bio.integrity = _payload(bytes(4), 4, 512)
    with pytest.raises(Exception, match="unexpected integrity data"):
        t.map(bio)
    t.close()


# -- discards -----------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["J", "D", "B"])
def test_discard_fills_tags_and_reads_verify(mode):
    disk = memdisk(2048)
    args = f"disk 0 - {mode} 3 internal_hash:crc32c allow_discards fix_padding"
    dev = mapped({"disk": disk}, args)
    t = dev.targets[0]
    assert dev.can_discard
    n = dev.nr_sectors
    data = os.urandom(n * 512)
    dev.write(0, data)
    dev.discard(64, 32)
    assert dev.read(64, 32) == bytes(32 * 512)           # discarded: any data verifies
    assert dev.read(0, 64) == data[:64 * 512]
    dev.close()
    geo = t.geo
    assert bytes(disk.buf[geo.tag_offset(64):geo.tag_offset(64) + 32 * 4]) == \
        bytes([DISCARD_FILLER]) * 128
    dev = reopen({"disk": disk}, args, n)
    assert dev.read(60, 40) == data[60 * 512:64 * 512] + bytes(32 * 512) + data[96 * 512:100 * 512]
    dev.write(70, b"x" * 512)
    assert dev.read(70, 1) == b"x" * 512
    dev.close()
    # without allow_discards a filler tag is just a wrong tag
    plain = args.replace(" 3 internal_hash:crc32c allow_discards", " 2 internal_hash:crc32c")
    dev = reopen({"disk": disk}, plain, n)
    assert not dev.can_discard
    with pytest.raises(IntegrityError, match="at sector 64$"):
        dev.read(64, 1)
    with pytest.raises(NotSupportedError):
        dev.targets[0].map(Bio.discard(0, 8))
    dev.close()


# -- errors, logging, zero_on_error ---------------------------------------------------------------

def test_failed_read_logged_once_per_request_and_counted(caplog):
    disk = memdisk(2048)
    args = "disk 0 - J 1 internal_hash:crc32c"
    dev = mapped({"disk": disk}, args)
    dev.write(0, os.urandom(dev.nr_sectors * 512))
    geo = dev.targets[0].geo
    for s in (10, 11, 40):
        disk.buf[geo.data_sector(s) * 512] ^= 0xFF
    with caplog.at_level(logging.WARNING, logger="dmkit.integrity"):
        with pytest.raises(IntegrityError, match="checksum mismatch at sector 10$"):
            dev.read(0, 64)
    assert [r.getMessage() for r in caplog.records] == \
        ["integrity disk: checksum mismatch at sector 10 and 2 more block(s)"]
    assert dev.status().split()[3] == "1"
    dev.close()


def test_zero_on_error(caplog):
    disk = memdisk(2048)
    args = "disk 0 - D 2 internal_hash:crc32c zero_on_error"
    dev = mapped({"disk": disk}, args)
    data = os.urandom(dev.nr_sectors * 512)
    dev.write(0, data)
    dev.flush()                                            # the tags reach the disk
    geo = dev.targets[0].geo
    disk.buf[geo.data_sector(5) * 512 + 9] ^= 1
    disk.buf[geo.tag_offset(7)] ^= 1
    with caplog.at_level(logging.WARNING, logger="dmkit.integrity"):
        for _ in range(3):
            got = dev.read(0, 16)
    want = bytearray(data[:16 * 512])
    want[5 * 512:6 * 512] = bytes(512)
    want[7 * 512:8 * 512] = bytes(512)
    assert got == want
    assert sorted(r.getMessage() for r in caplog.records) == [
        "integrity disk: checksum mismatch at sector 5: read as zeros (zero_on_error)",
        "integrity disk: checksum mismatch at sector 7: read as zeros (zero_on_error)"]
    assert dev.status().split()[3:] == ["3", str(dev.nr_sectors), "-", "zeroed_blocks:6"]
    dev.close()


# -- mode R ------------------------------------------------------------------------------------

def test_recovery_mode_reads_without_checks_or_replay():
    disk = memdisk(2048)
    args = "disk 0 - J 2 internal_hash:crc32c journal_sectors:600"
    dev = mapped({"disk": disk}, args)
    n = dev.nr_sectors
    old = os.urandom(n * 512)
    dev.write(0, old)
    dev.close()
    dev = reopen({"disk": disk}, args, n)
    dev.write(0, b"new!" * 128 * 8)
    dev.flush()                            # committed to the journal only
    crashed = bytes(disk.buf)
    geo = dev.targets[0].geo
    dev.targets[0]._failed = IntegrityError("simulated crash")  # no clean close
    dev.close()
    disk2 = MemoryDevice(initial=crashed, name="disk")
    disk2.buf[geo.data_sector(20) * 512] ^= 0xFF          # and a bad block
    r_args = args.replace(" J ", " R ")
    dev = reopen({"disk": disk2}, r_args, n)
    got = dev.read(0, n)
    assert got[:8 * 512] == old[:8 * 512]                  # the journal is not replayed
    assert got[20 * 512] == old[20 * 512] ^ 0xFF           # no checks
    with pytest.raises(ReadOnlyError, match="mode R"):
        dev.write(0, bytes(512))
    dev.close()
    assert bytes(disk2.buf) == crashed[:geo.data_sector(20) * 512] + \
        bytes([old[20 * 512] ^ 0xFF]) + crashed[geo.data_sector(20) * 512 + 1:]


# -- commits ------------------------------------------------------------------------------------

def _journal_status(disk, args_sb_dev=None):
    sb = read_superblock(disk)
    from dmkit.targets.integrity import Geometry
    geo = Geometry.from_superblock(sb, disk.nr_sectors)
    return scan_journal(read_journal_area(disk, geo), geo).status


def test_commit_time_flush_fua_and_watermark():
    disk = memdisk(8192)
    clock = FakeClock()
    args = ("disk 0 - J 4 internal_hash:crc32c journal_sectors:3000 commit_time:2000 "
            "journal_watermark:50")
    dev = mapped({"disk": disk}, args, clock=clock)
    t = dev.targets[0]
    jw = t.journal
    dev.write(0, os.urandom(4096))
    assert jw.commits == 0 and _journal_status(disk) is JournalStatus.EMPTY
    clock.advance(1.9)
    t.tick()
    assert jw.commits == 0
    clock.advance(0.2)
    t.tick()
    assert jw.commits == 1 and _journal_status(disk) is JournalStatus.REPLAY_NEEDED
    dev.write(8, os.urandom(4096), REQ_FUA)
    assert jw.commits == 2
    dev.write(16, os.urandom(4096), REQ_PREFLUSH)
    assert jw.commits == 2                     # the preflush found nothing to commit
    dev.flush()
    assert jw.commits == 3 and jw.home_writes == 0       # a flush does not write home
    # past the watermark: the full sections are committed (the part-filled one waits for
    # more, or for commit_time), nothing goes home yet (the journal goes home when it has
    # no room left for a write)
    entries = t.geo.journal.entries
    commits = jw.commits
    dev.write(64, os.urandom(entries // 2 * 512 + 4096))
    assert jw.commits == commits + 1 and jw.home_writes == 0
    assert 0 < jw.uncommitted_entries < jw.section_entries
    assert _journal_status(disk) is JournalStatus.REPLAY_NEEDED
    clock.advance(2.0)
    t.tick()
    assert jw.commits == commits + 2 and not jw.has_uncommitted
    # another half: the journal fills, is committed and goes home, and takes the rest
    dev.write(64, os.urandom(entries // 2 * 512 + 4096))
    assert jw.home_writes == 1 and jw.free_sectors > t.free_sectors_threshold
    assert jw.newest and all(jw.pos_sector[p] == s for s, p in jw.newest.items())
    dev.close()
    assert _journal_status(disk) is JournalStatus.EMPTY


def test_direct_mode_autocommit_flushes_tags():
    disk = memdisk(2048)
    clock = FakeClock()
    dev = mapped({"disk": disk}, "disk 0 - D 2 internal_hash:crc32c commit_time:1000",
                 clock=clock)
    t = dev.targets[0]
    dev.write(0, os.urandom(4096))
    assert t.tags.dirty
    clock.advance(1.0)
    t.tick()
    assert not t.tags.dirty
    dev.close()


# -- bitmap mode ----------------------------------------------------------------------------------

def test_bitmap_marks_before_writes_and_clears_after_the_interval():
    disk = memdisk(4096)
    clock = FakeClock()
    args = ("disk 0 - B 4 internal_hash:crc32c sectors_per_bit:64 bitmap_flush_interval:3000 "
            "fix_padding")
    dev = mapped({"disk": disk}, args, clock=clock)
    t = dev.targets[0]
    assert read_superblock(disk).has(SbFlags.DIRTY_BITMAP)
    j0 = t.geo.journal_start_sector * 512

    def bits():
        import numpy as np
        raw = np.frombuffer(bytes(disk.buf[j0:j0 + 4096]), dtype=np.uint8)
        nbits = -(-t.provided_data_sectors // 64)
        return set(np.flatnonzero(np.unpackbits(raw, bitorder="little")[:nbits]).tolist())

    assert bits() == set()
    dev.write(130, os.urandom(512 * 70))                   # sectors 130..199: bits 2, 3
    assert bits() == {2, 3}
    dev.write(1000, os.urandom(512))
    assert bits() == {2, 3, 15}
    clock.advance(2.9)
    t.tick()
    assert bits() == {2, 3, 15}
    clock.advance(0.2)
    t.tick()
    assert bits() == set()
    dev.write(0, os.urandom(512))
    assert bits() == {0}
    dev.close()
    assert not read_superblock(disk).has(SbFlags.DIRTY_BITMAP)
    assert _journal_status(disk) is JournalStatus.EMPTY


# -- recalculation ---------------------------------------------------------------------------------

def test_recalculate_resumes_from_the_saved_position(monkeypatch):
    monkeypatch.setattr(datapath, "RECALC_SECTORS", 64)
    disk = memdisk(4096)
    args = "disk 0 - D 2 internal_hash:crc32c fix_padding"
    dev = mapped({"disk": disk}, args)
    n = dev.nr_sectors
    dev.close()
    # data written behind the target's back: every tag is wrong
    data = os.urandom(n * 512)
    geo = IntegrityTarget(DeviceResolver({"disk": disk}), 0, 8, args.split()).geo
    for ext in geo.extents(0, n):
        a = ext.data_sector * 512
        disk.buf[a:a + ext.nr_sectors * 512] = data[ext.logical_sector * 512:
                                                    (ext.logical_sector + ext.nr_sectors) * 512]
    rargs = "disk 0 - D 3 internal_hash:crc32c fix_padding recalculate"
    t = IntegrityTarget(DeviceResolver({"disk": disk}), 0, n, rargs.split(), defer_recalc=True)
    assert t.status("info").endswith(" 0")
    assert not t.recalc_step(max_chunks=20)
    assert t.status("info").split()[2] == str(20 * 64)
    # a power cut now: the superblock holds the position saved after 15 chunks
    crashed = bytes(disk.buf)
    t._failed = IntegrityError("simulated crash")
    t.close()
    disk2 = MemoryDevice(initial=crashed, name="disk")
    assert read_superblock(disk2).recalc_sector == 15 * 64
    dev = reopen({"disk": disk2}, args, n, defer_recalc=True)
    t = dev.targets[0]
    assert t.recalculating and t.status("table").split()[5] == "recalculate"
    assert dev.read(15 * 64, 64) == data[15 * 64 * 512:16 * 64 * 512]   # not checked yet
    assert t.recalc_step()
    assert t.status("info").split()[2] == str(n)
    assert dev.read(0, n) == data
    dev.close()
    sb = read_superblock(disk2)
    assert sb.has(SbFlags.RECALCULATING) and sb.recalc_sector == n     # as the kernel
    assert IntegrityReader(disk2, internal_hash="crc32c").read(0, n) == data


def test_reset_recalculate_starts_over():
    disk = memdisk(4096)
    args = "disk 0 - J 1 internal_hash:crc32c"
    dev = mapped({"disk": disk}, args)
    n = dev.nr_sectors
    data = os.urandom(n * 512)
    dev.write(0, data)
    dev.close()
    dev = reopen({"disk": disk}, "disk 0 - J 2 internal_hash:crc32c reset_recalculate", n)
    assert dev.targets[0].status("table").split()[5:7] == ["recalculate", "reset_recalculate"]
    assert dev.read(0, n) == data
    dev.close()


# -- grow ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["J", "B", "D"])
def test_grow(mode):
    small = memdisk(2048)
    args = f"disk 0 - {mode} 2 internal_hash:crc32c fix_padding"
    dev = mapped({"disk": small}, args)
    n = dev.nr_sectors
    data = os.urandom(n * 512)
    dev.write(0, data)
    dev.close()
    big = MemoryDevice(initial=bytes(small.buf) + bytes(2048 * 512), name="disk")
    dev = mapped({"disk": big}, args)
    n2 = dev.nr_sectors
    assert n2 > n and read_superblock(big).provided_data_sectors == n2
    assert dev.read(0, n) == data
    extra = os.urandom((n2 - n) * 512)
    dev.write(n, extra)
    assert dev.read(0, n2) == data + extra
    dev.close()
    shrunk = MemoryDevice(initial=bytes(big.buf[:2048 * 512]), name="disk")
    with pytest.raises(Exception, match="shrank"):
        reopen({"disk": shrunk}, args, 8)
