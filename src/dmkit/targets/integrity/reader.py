"""A read-only, verified view of a dm-integrity device (kernel format, no kernel).

:class:`IntegrityReader` is a :class:`~dmkit.block.BlockDevice` of the provided sectors.
Every read is checked against the stored tags in batches (one tag computation pass and one
comparison per extent); a block that fails makes the request fail with
:class:`~dmkit.errors.IntegrityError` naming its sector, and the request's buffer is zeroed
rather than left holding unverified data.

The device's journal is read when it is opened.  Committed entries that have not reached
their home blocks (a crash in journal mode) make the data area out of date: by default the
open fails with :class:`~.journal.UnreplayedJournalError` saying so; with
``replay_journal=True`` the reader applies them in memory, as the kernel's replay would,
checking each entry's tag, and leaves the image untouched.  A dirty bitmap (bitmap mode, not
closed cleanly) and a recalculation in progress leave some tags stale; reads there fail with
an IntegrityError that says why (the kernel would return such blocks unchecked).

An encrypted journal (``journal_crypt``) is decrypted in memory before it is read, given
its :class:`~.jcrypt.JournalCipher`.  With ``journal_mac`` (the algorithm and key), the
superblock MAC (fix_hmac) and the MACs of the journal sections a replay would use are
checked as the kernel checks them; a mismatch is an IntegrityError naming the section.

What a table line gives and the superblock does not record must be given again here: the
algorithm and key (``internal_hash``), the journal's cipher and MAC, the separate metadata
device, the reserved ``start_sector``, ``buffer_sectors`` (it matters only for old-padding
layouts) and ``allow_discards``.
"""

from __future__ import annotations

import bisect
import logging

from ...block import SECTOR_SHIFT, Bio, BioOp, BlockDevice, QueueLimits, read_bytes
from ...errors import FormatError, IntegrityError, InvalidBioError
from .geometry import DEFAULT_BUFFER_SECTORS, Geometry
from .journal import (
    JournalScan,
    JournalStatus,
    UnreplayedJournalError,
    read_journal_area,
    scan_journal,
)
from .jcrypt import JournalCipher
from .jwriter import JournalMac, first_bad_section_mac
from .layout import COMMIT_IDS, SB_SECTORS, SbFlags, Superblock
from .tags import TagFunction, algorithm

__all__ = ["IntegrityReader", "read_superblock"]

log = logging.getLogger("dmkit.integrity")

#: largest run verified in one batch (bounds the tag buffer of one pass)
_BATCH_SECTORS = 2048


def read_superblock(meta_dev: BlockDevice, start_sector: int = 0) -> Superblock:
    """Read and validate the superblock at ``start_sector`` of ``meta_dev``."""
    if meta_dev.nr_sectors < start_sector + SB_SECTORS:
        raise FormatError(f"{meta_dev.name}: {meta_dev.nr_sectors} sectors is too small to "
                          "hold a dm-integrity superblock")
    raw = meta_dev.read(start_sector, SB_SECTORS)
    return Superblock.from_bytes(raw, device=meta_dev.name)


class IntegrityReader(BlockDevice):
    """Verified read-only access to the provided sectors of a dm-integrity device.

    ``data_dev`` holds the data (and, without ``meta_dev``, everything else);
    ``internal_hash`` is the kernel's or cryptsetup's algorithm name (``crc32c``,
    ``hmac(sha256)``, ``hmac-sha256``...), ``key`` its key.  ``tag_size`` and
    ``block_size``, when given, must match the superblock (as the table's must).
    """

    def __init__(self, data_dev: BlockDevice, meta_dev: BlockDevice | None = None, *,
                 internal_hash: str, key: bytes | None = None, tag_size: int | None = None,
                 block_size: int | None = None, start_sector: int = 0,
                 buffer_sectors: int = DEFAULT_BUFFER_SECTORS, allow_discards: bool = False,
                 replay_journal: bool = False, name: str | None = None,
                 journal_crypt: JournalCipher | None = None,
                 journal_mac: str | None = None, journal_mac_key: bytes | None = None):
        self.data_dev = data_dev
        self.meta_dev = meta_dev if meta_dev is not None else data_dev
        self.name = name or f"integrity({data_dev.name})"
        md = self.meta_dev
        sb = read_superblock(md, start_sector)
        if tag_size is not None and tag_size != sb.integrity_tag_size:
            raise FormatError(f"{md.name}: tag size {tag_size} does not match the "
                              f"superblock's {sb.integrity_tag_size}")
        if block_size is not None and block_size != sb.block_size:
            raise FormatError(f"{md.name}: block size {block_size} does not match the "
                              f"superblock's {sb.block_size}")
        self.superblock = sb
        self.geometry = Geometry.from_superblock(
            sb, data_dev.nr_sectors, meta_dev.nr_sectors if meta_dev is not None else None,
            start_sector=start_sector, buffer_sectors=buffer_sectors, device=md.name)
        self.tag_fn = TagFunction(internal_hash, key=key, tag_size=sb.integrity_tag_size,
                                  block_size=sb.block_size,
                                  salt=sb.salt if sb.has(SbFlags.FIXED_HMAC) else None)
        self.allow_discards = allow_discards
        mac = self._journal_mac(journal_mac, journal_mac_key) if journal_mac else None
        raw = read_journal_area(md, self.geometry)
        commit_ids = COMMIT_IDS
        if journal_crypt is not None and not sb.has(SbFlags.DIRTY_BITMAP):
            crypt = journal_crypt.bind(self.geometry.journal)
            crypt.decrypt_into(raw)
            commit_ids = crypt.commit_ids
        self.journal: JournalScan = scan_journal(raw, self.geometry, commit_ids=commit_ids)
        if mac is not None:
            self._check_journal_macs(raw, mac)
        self._overlay: dict[int, tuple[bytes, bytes]] = {}
        self._overlay_keys: list[int] = []
        self._stale: list[tuple[int, int, str]] = []
        status = self.journal.status
        if status is JournalStatus.REPLAY_NEEDED:
            if not replay_journal:
                raise UnreplayedJournalError(f"{md.name}: {self.journal.message} (open with "
                                             "replay_journal=True to apply it in memory)")
            self._apply_replay()
        elif status is JournalStatus.DIRTY_BITMAP:
            for start, n in self.journal.dirty_ranges:
                self._stale.append((start, n, "its bitmap region is dirty (bitmap mode, not "
                                              "closed cleanly): tags await recalculation"))
        if sb.has(SbFlags.RECALCULATING) and sb.recalc_sector < sb.provided_data_sectors:
            self._stale.append((sb.recalc_sector, sb.provided_data_sectors - sb.recalc_sector,
                                f"tags are being recalculated (recalc_sector "
                                f"{sb.recalc_sector})"))
        self.nr_sectors = sb.provided_data_sectors
        self.limits = QueueLimits(logical_block_size=sb.block_size,
                                  physical_block_size=max(sb.block_size,
                                                          data_dev.limits.physical_block_size),
                                  io_min=sb.block_size)
        self.read_only = True
        self.number_of_mismatches = 0

    # -- the journal MAC ----------------------------------------------------------------------
    def _journal_mac(self, name: str, key: bytes | None) -> JournalMac:
        sb, md = self.superblock, self.meta_dev
        if not sb.has(SbFlags.HAVE_JOURNAL_MAC):
            raise FormatError(f"{md.name}: journal MAC given, but the superblock has no "
                              "journal MAC")
        mac = JournalMac(algorithm(name), key, sb.salt if sb.has(SbFlags.FIXED_HMAC) else None)
        if sb.has(SbFlags.FIXED_HMAC):      # sb_mac: the first sector's last bytes
            if Superblock.SIZE + mac.size > 512:
                raise FormatError(f"{md.name}: the journal MAC is too long for the "
                                  "superblock MAC")
            first = bytes(md.read(self.geometry.start_sector, 1))
            if first[512 - mac.size:] != mac.digest(first[:512 - mac.size]):
                raise IntegrityError(f"{md.name}: superblock MAC mismatch (wrong journal MAC "
                                     "key, or the superblock was modified)")
        return mac

    def _check_journal_macs(self, raw, mac: JournalMac) -> None:
        """The sections a replay would use (the kernel's ``do_journal_write`` from the
        replay checks each one's MAC and fails the device on a mismatch)."""
        scan = self.journal
        if scan.status is JournalStatus.DIRTY_BITMAP or scan.journal_empty \
                or not scan.consistent_sections:
            return
        bad = first_bad_section_mac(raw, self.geometry.journal, mac, scan.write_start,
                                    scan.consistent_sections)
        if bad is not None:
            raise IntegrityError(f"{self.meta_dev.name}: journal MAC mismatch in journal "
                                 f"section {bad} (the journal was modified, or the journal "
                                 "MAC key is wrong): the kernel refuses to replay it")

    # -- journal replay, in memory ----------------------------------------------------------
    def _apply_replay(self) -> None:
        tf = self.tag_fn
        for e in self.journal.entries:
            bad = tf.verify(e.data, e.logical_sector, e.tag)
            if bad is not None:
                raise IntegrityError(f"{self.meta_dev.name}: journal replay: tag mismatch for "
                                     f"sector {e.logical_sector} (journal section {e.section} "
                                     f"entry {e.entry})")
            self._overlay[e.logical_sector] = (e.data, e.tag)
        self._overlay_keys = sorted(self._overlay)

    @property
    def replayed_sectors(self) -> list[int]:
        """Logical sectors whose content comes from the journal (after ``replay_journal``)."""
        return list(self._overlay_keys)

    # -- the BlockDevice side ------------------------------------------------------------------
    def _submit(self, bio: Bio) -> None:
        if bio.op is BioOp.FLUSH:
            return
        if bio.op is not BioOp.READ:  # check_bio already refused writes
            raise InvalidBioError(f"{self.name}: {bio.op.name.lower()} not supported")
        try:
            self._read_verified(bio.sector, bio.data)
        except IntegrityError:
            bio.data[:] = bytes(len(bio.data))
            raise

    def _check_stale(self, sector: int, nr_sectors: int) -> None:
        for start, n, why in self._stale:
            if sector < start + n and start < sector + nr_sectors:
                first = max(sector, start)
                raise IntegrityError(f"{self.name}: sector {first} cannot be verified: {why}")

    def _read_verified(self, sector: int, buf: memoryview) -> None:
        self._check_stale(sector, len(buf) >> SECTOR_SHIFT)
        for ext in self.geometry.extents(sector, len(buf) >> SECTOR_SHIFT):
            pos = ext.logical_sector
            end = pos + ext.nr_sectors
            while pos < end:
                n = min(end - pos, _BATCH_SECTORS)
                self._read_run(pos, n, buf, sector, ext)
                pos += n

    def _read_run(self, pos: int, n: int, buf: memoryview, buf_sector: int, ext) -> None:
        geo = self.geometry
        delta = pos - ext.logical_sector
        out = buf[(pos - buf_sector) << SECTOR_SHIFT:(pos - buf_sector + n) << SECTOR_SHIFT]
        self.data_dev.submit(Bio.read(ext.data_sector + delta, out))
        ts = geo.tag_size
        first_block = delta >> self.superblock.log2_sectors_per_block
        nblocks = n >> self.superblock.log2_sectors_per_block
        stored = read_bytes(self.meta_dev, ext.tag_offset + first_block * ts, nblocks * ts)
        if self._overlay_keys:
            self._apply_overlay(pos, n, out, stored)
        bad = self.tag_fn.verify(out, pos, stored, allow_discards=self.allow_discards)
        if bad is not None:
            bad_sector = pos + bad * geo.sectors_per_block
            self.number_of_mismatches += 1
            log.error("%s: checksum mismatch at sector %d", self.name, bad_sector)
            raise IntegrityError(f"{self.name}: checksum mismatch at sector {bad_sector}")

    def _apply_overlay(self, pos: int, n: int, out: memoryview, stored: bytearray) -> None:
        keys = self._overlay_keys
        i = bisect.bisect_left(keys, pos)
        geo = self.geometry
        bs, ts, spb = geo.block_size, geo.tag_size, geo.sectors_per_block
        while i < len(keys) and keys[i] < pos + n:
            s = keys[i]
            data, tag = self._overlay[s]
            k = (s - pos) // spb
            out[k * bs:(k + 1) * bs] = data
            stored[k * ts:(k + 1) * ts] = tag
            i += 1

    # -- whole-device checks ------------------------------------------------------------------
    def scrub(self, *, progress=None, chunk_sectors: int = 8192) -> list[int]:
        """Verify every provided block; the sectors of all blocks that fail (stale regions
        are skipped and not listed).  ``progress(done_sectors, total)`` is called per chunk."""
        bad_sectors: list[int] = []
        total = self.nr_sectors
        spb = self.geometry.sectors_per_block
        chunk_sectors = max(chunk_sectors // spb * spb, spb)
        buf = bytearray(chunk_sectors << SECTOR_SHIFT)
        pos = 0
        while pos < total:
            n = min(chunk_sectors, total - pos)
            view = memoryview(buf)[:n << SECTOR_SHIFT]
            for ext in self.geometry.extents(pos, n):
                bad_sectors.extend(self._scrub_extent(ext, view, pos))
            pos += n
            if progress is not None:
                progress(pos, total)
        return bad_sectors

    def _scrub_extent(self, ext, view: memoryview, view_sector: int) -> list[int]:
        geo = self.geometry
        out = view[(ext.logical_sector - view_sector) << SECTOR_SHIFT:
                   (ext.logical_sector - view_sector + ext.nr_sectors) << SECTOR_SHIFT]
        self.data_dev.submit(Bio.read(ext.data_sector, out))
        stored = read_bytes(self.meta_dev, ext.tag_offset, ext.nr_blocks * geo.tag_size)
        if self._overlay_keys:
            self._apply_overlay(ext.logical_sector, ext.nr_sectors, out, stored)
        idx = self.tag_fn.bad_blocks(out, ext.logical_sector, stored,
                                     allow_discards=self.allow_discards)
        found = []
        for k in idx:
            s = ext.logical_sector + int(k) * geo.sectors_per_block
            if not any(a <= s < a + m for a, m, _ in self._stale):
                found.append(s)
        self.number_of_mismatches += len(found)
        return found

    def close(self) -> None:
        """The reader does not own the devices; closing it releases nothing."""
