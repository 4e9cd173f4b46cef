"""integrity: the dm-integrity table target, in userspace, on the kernel's on-disk format.

Kernel: ``Documentation/admin-guide/device-mapper/dm-integrity.rst``;
``drivers/md/dm-integrity.c`` (Linux 6.1, target v1.10.0): ``dm_integrity_ctr`` (arguments,
formatting a zeroed device, checking the superblock against the table),
``dm_integrity_resume`` (grow, the dirty bitmap, ``replay_journal``, recalculation),
``dm_integrity_postsuspend`` (what closing writes), ``dm_integrity_status``.

The kernel does some work in threads (commits on a timer, the journal writer, the bitmap
flush, recalculation); dmkit does the same work synchronously: at load, inside requests,
in :meth:`IntegrityTarget.tick`, and on close, except the journal writer, which has a
thread on file backends (:mod:`.homewriter`).  See ``docs/targets/integrity.md``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Callable, Sequence

from ...block import SECTOR_SHIFT, Bio, FileDevice, IntegrityProfile, QueueLimits
from ...block.bio import REQ_FUA
from ...dm.target import Target
from ...errors import DmkitError, FormatError, IntegrityError, TableError
from .bitmap import SectorBitmap
from .datapath import DataPath, overlap_read_fd
from .geometry import (
    BITMAP_BLOCK_SIZE,
    Geometry,
    bitmap_log2_blocks_per_bit,
    compute_provided_data_sectors,
    format_superblock,
)
from .homewriter import HomeWriter
from .jcrypt import JournalCipher
from .journal import JournalStatus, scan_journal
from .jwriter import JournalMac, JournalWriter, next_commit_seq, prev_commit_seq
from .layout import (
    MAX_TAG_SIZE,
    SB_MAGIC,
    SB_SECTORS,
    SbFlags,
    Superblock,
    required_version,
)
from .options import AlgSpec, IntegrityOptions, format_table, parse_args
from .tags import TagFunction, algorithm
from .tagstore import TagStore

__all__ = ["IntegrityTarget"]

log = logging.getLogger("dmkit.integrity")

_SB_AREA = SB_SECTORS << SECTOR_SHIFT
#: Journal mode's writer thread (file backends): how many write-homes may be queued, and
#: the chunk of the journal a write-home takes (journal_sections // HOME_CHUNK_DIVISOR).
#: Each write-home costs one flush, so bigger chunks mean fewer flushes; but up to
#: depth + 1 chunks are held (the queued ones, and the one whose blocks the next flush
#: makes durable), and requests fill the rest meanwhile.  Chosen by measurement
#: (``integrity-journal-*-write``, integritysetup's default journal of 10 sections):
#: depth 2 with a third of the journal beat depth 1 with a quarter (the old setting) by
#: about 30%, and depth 2 or 3 with smaller chunks.
HOME_QUEUE_DEPTH = 2
HOME_CHUNK_DIVISOR = 3


class IntegrityTarget(DataPath, Target):
    """integrity <dev> <reserved_sectors> <tag_size|-> <J|B|D|R> <#opt_params> [params]

    Options: ``journal_sectors:N interleave_sectors:N buffer_sectors:N
    journal_watermark:N commit_time:N meta_device:DEV block_size:N sectors_per_bit:N
    bitmap_flush_interval:N internal_hash:ALG[:KEY] journal_crypt:ALG:KEY
    journal_mac:ALG[:KEY] recalculate reset_recalculate allow_discards fix_padding fix_hmac
    legacy_recalculate``, and dmkit's
    ``zero_on_error`` and ``:<size>:<type>:<description>`` keys.

    Python-only keyword arguments: ``clock`` (seconds, monotonic; drives commit_time and
    bitmap_flush_interval), ``rng`` (``rng(n) -> n random bytes``: the salt of a newly
    formatted device), ``defer_recalc`` (leave a recalculation to :meth:`recalc_step`
    instead of finishing it at load), ``max_dirty_tag_bytes`` (the tag cache's size),
    ``background_writeback`` (mode J: write the journal home in a thread, see
    :mod:`.homewriter`; None, the default, does when the devices are files or block
    devices (:class:`~dmkit.block.FileDevice`), False never, True always).
    """

    name = "integrity"
    version = (1, 10, 0)
    num_flush_bios = 1

    def __init__(self, resolver, start_sector: int, nr_sectors: int, args: Sequence[str], *,
                 read_only: bool = False, clock: Callable[[], float] = time.monotonic,
                 rng: Callable[[int], bytes] = os.urandom, defer_recalc: bool = False,
                 max_dirty_tag_bytes: int = 8 << 20,
                 background_writeback: bool | None = None):
        super().__init__(resolver, start_sector, nr_sectors, args, read_only=read_only)
        self.opts = o = parse_args(args, self.name)
        self.mode = o.mode
        self.clock = clock
        self.number_of_mismatches = 0
        self.zeroed_blocks = 0
        self._logged_zeroed: set[int] = set()
        self._autocommit_at: float | None = None
        self._bitmap_flush_at: float | None = None
        self._recalc_counter = 0
        self._failed: DmkitError | None = None
        self._closed = False
        self.journal: JournalWriter | None = None
        self._home_writer: HomeWriter | None = None
        self._check_table_rules(o)
        try:
            self.data_dev = self.get_device(o.dev, "device")
            self.meta_dev = (self.get_device(o.meta_device, "meta_device")
                             if o.meta_device is not None else self.data_dev)
            self._load(o, rng, max_dirty_tag_bytes)
            if background_writeback is None:
                background_writeback = all(isinstance(d, FileDevice)
                                           for d in (self.data_dev, self.meta_dev))
            if background_writeback and self.mode == "J" and not read_only:
                # two write-homes queued, so that the thread goes from one to the next
                # without waiting for a request to take the first
                self._home_writer = HomeWriter(f"integrity {o.dev}", HOME_QUEUE_DEPTH)
                #: the writer thread takes the journal in chunks of this many sections
                self.home_chunk_sections = max(
                    1, self.geo.journal.journal_sections // HOME_CHUNK_DIVISOR)
                # the writer thread's flushes are most of a journal write's time: the
                # page cache starts writing the journal and the blocks home at once
                self.journal.write_behind = True
            if not defer_recalc and self.mode != "R" and not read_only:
                self.recalc_step()
        except BaseException:
            Target.close(self)
            raise

    # -- construction ---------------------------------------------------------------------------
    def _err(self, message: str) -> TableError:
        return TableError(f"{self.name}: {message}")

    def _check_table_rules(self, o: IntegrityOptions) -> None:
        if o.journal_crypt is not None and o.mode == "B":
            # The kernel accepts it but keeps the bitmap in the plain journal buffer and
            # writes the (stale) encrypted one: the bitmap on disk would be noise.
            raise self._err("journal_crypt cannot be used in bitmap mode (B): the journal "
                            "area holds the bitmap there, which the kernel does not encrypt")
        if o.internal_hash is None:
            for flag, what in (("allow_discards", "discards"), ("zero_on_error", "zero_on_error"),
                               ("recalculate", "recalculate")):
                if getattr(o, flag):
                    raise self._err(f"{what} can only be used with internal_hash")
            if o.mode == "B":
                raise self._err("bitmap mode (B) can only be used with internal_hash")
            if o.tag_size is None:
                raise self._err("unknown tag size: give <tag_size> or internal_hash")

    def _key(self, spec: AlgSpec, what: str) -> bytes | None:
        if spec.key_text is None:
            return None
        if not spec.key_is_reference:
            return spec.hex_key()
        try:
            return self.resolver.resolve_key(spec.key_text)
        except DmkitError as e:
            raise self._err(f"{what} key {spec.key_text}: {e}") from None
        except Exception as e:  # the keyring is not available at all
            raise self._err(f"{what} key {spec.key_text}: keyring not available: {e}") from None

    def _algorithm(self, spec: AlgSpec, what: str):
        try:
            alg = algorithm(spec.alg)
        except ValueError:
            raise self._err(f"invalid {what} {spec.alg!r}: unknown or unavailable "
                            "algorithm") from None
        key = self._key(spec, what)
        try:
            alg.check_key(key)
        except ValueError as e:
            raise self._err(f"error setting {what} key: {e}") from None
        return alg, key

    def _journal_cipher(self, spec: AlgSpec) -> JournalCipher:
        key = self._key(spec, "journal_crypt")
        try:
            return JournalCipher(spec.alg, key)
        except ValueError as e:
            what = "invalid journal cipher" if "not supported" in str(e) \
                else "error setting journal_crypt key"
            raise self._err(f"{what}: {e}") from None

    def _load(self, o: IntegrityOptions, rng, max_dirty_tag_bytes: int) -> None:
        hash_alg = hash_key = mac_alg = mac_key = None
        if o.internal_hash is not None:
            hash_alg, hash_key = self._algorithm(o.internal_hash, "internal_hash")
        if o.journal_mac is not None:
            mac_alg, mac_key = self._algorithm(o.journal_mac, "journal_mac")
        cipher = self._journal_cipher(o.journal_crypt) if o.journal_crypt is not None else None
        tag_size = o.tag_size if o.tag_size is not None else hash_alg.digest_size
        if tag_size > MAX_TAG_SIZE:
            raise self._err(f"tag size {tag_size} is too big (at most {MAX_TAG_SIZE})")
        self.tag_size = tag_size
        self.spb = o.sectors_per_block
        self.log2_spb = self.spb.bit_length() - 1
        self.separate = separate = o.meta_device is not None

        area = self.meta_dev.read(o.start, SB_SECTORS) \
            if self.meta_dev.nr_sectors >= o.start + SB_SECTORS else None
        if area is None:
            raise self._err(f"{o.meta_device or o.dev}: too small for a superblock at sector "
                            f"{o.start}")
        self._sb_area = area
        self.just_formatted = False
        should_write_sb = False
        if bytes(area[:8]) != SB_MAGIC:
            if o.mode != "R" and any(area):
                raise self._err(f"{o.meta_device or o.dev}: the device is not initialized: the "
                                "superblock area is neither a dm-integrity superblock nor "
                                "zeroed")
            sb = self._format(o, tag_size, separate, hash_alg is not None,
                              mac_alg is not None, rng)
            area[:] = sb.to_area_bytes()
            should_write_sb = o.mode != "R"
        else:
            try:
                sb = Superblock.from_bytes(area, device=o.meta_device or o.dev)
            except FormatError as e:
                raise self._err(str(e)) from None
        self._check_superblock(sb, o, tag_size, separate, mac_alg is not None)
        if hash_alg is None and sb.has(SbFlags.RECALCULATING):
            raise self._err("the superblock says a recalculation is in progress, and "
                            "recalculate can only be used with internal_hash")
        salt = sb.salt if sb.has(SbFlags.FIXED_HMAC) else None
        self.journal_mac = JournalMac(mac_alg, mac_key, salt) if mac_alg is not None else None
        if self.journal_mac is not None and sb.has(SbFlags.FIXED_HMAC) and o.mode != "R" \
                and not should_write_sb:
            self._check_sb_mac(area)
        self.tag_fn = None
        if hash_alg is not None:
            self.tag_fn = TagFunction(hash_alg, key=hash_key, tag_size=tag_size,
                                      block_size=o.block_size, salt=salt)

        # the size the kernel would provide on these devices now (it grows with them)
        provided = compute_provided_data_sectors(
            data_device_sectors=self.data_dev.nr_sectors,
            meta_device_sectors=self.meta_dev.nr_sectors if separate else None,
            tag_size=tag_size, log2_sectors_per_block=sb.log2_sectors_per_block,
            log2_interleave_sectors=sb.log2_interleave_sectors,
            journal_sections=sb.journal_sections,
            have_journal_mac=sb.has(SbFlags.HAVE_JOURNAL_MAC),
            fixed_padding=sb.has(SbFlags.FIXED_PADDING), start_sector=o.start,
            buffer_sectors=o.buffer_sectors)
        if not provided:
            raise self._err("the device is too small")
        if provided < sb.provided_data_sectors:
            raise self._err(f"{o.dev}: the device shrank: it provides {provided} sectors, the "
                            f"superblock says {sb.provided_data_sectors}; refusing to lose data")
        self.provided_data_sectors = provided
        try:
            self.geo = Geometry.from_superblock(
                dataclasses.replace(sb, provided_data_sectors=provided),
                self.data_dev.nr_sectors, self.meta_dev.nr_sectors if separate else None,
                start_sector=o.start, buffer_sectors=o.buffer_sectors,
                device=o.meta_device or o.dev)
        except FormatError as e:
            raise self._err(str(e)) from None
        self.sb = sb
        self._check_tag_overlap(should_write_sb)
        jg = self.geo.journal
        self.log2_blocks_per_bitmap_bit = bitmap_log2_blocks_per_bit(
            provided, jg, sb.log2_sectors_per_block, o.sectors_per_bit)
        if should_write_sb:
            self.sb = sb = dataclasses.replace(
                sb, log2_blocks_per_bitmap_bit=self.log2_blocks_per_bitmap_bit)
        n_bits = ((provided >> sb.log2_sectors_per_block)
                  + (1 << self.log2_blocks_per_bitmap_bit) - 1) >> self.log2_blocks_per_bitmap_bit
        self.n_bitmap_blocks = -(-n_bits // (BITMAP_BLOCK_SIZE * 8))
        if self.nr_sectors > provided:
            raise self._err(f"not enough provided sectors ({provided}) for the requested "
                            f"mapping size {self.nr_sectors}")
        threshold = jg.entries * (100 - o.journal_watermark) + 50
        self.free_sectors_threshold = threshold // 100
        #: uncommitted entries that make a commit (the kernel's "free entries at or under
        #: the threshold", with nothing waiting to go home)
        self.commit_watermark_entries = max(1, jg.entries - self.free_sectors_threshold)
        if o.recalculate and not sb.has(SbFlags.RECALCULATING):
            self._set_flags(sb.flags | SbFlags.RECALCULATING, recalc_sector=0)
        if self.sb.has(SbFlags.RECALCULATING) and self.sb.recalc_sector < provided \
                and self._recalculate_disabled(hash_key, mac_key):
            raise self._err('recalculating with HMAC is disabled for security reasons - if '
                            'you really need it, use the argument "legacy_recalculate"')
        self.tags = TagStore(self.meta_dev, max_dirty_bytes=max_dirty_tag_bytes)
        #: where large reads get their data with the copy overlapped with the hashing
        #: (``DataPath._read_overlapped``), or None
        self._overlap_fd = overlap_read_fd(self.data_dev, self.tag_fn)
        if o.mode != "R":
            self.journal = JournalWriter(self.meta_dev, self.geo, mac=self.journal_mac,
                                         crypt=cipher.bind(jg) if cipher else None)
        if o.mode == "B":
            jmem = memoryview(self.journal.mem)[:self.n_bitmap_blocks * BITMAP_BLOCK_SIZE]
            shift = sb.log2_sectors_per_block + self.log2_blocks_per_bitmap_bit
            self._bm_journal = SectorBitmap(jmem, shift, sb.log2_sectors_per_block)
            size = self.n_bitmap_blocks * BITMAP_BLOCK_SIZE
            self._bm_may_write = SectorBitmap(bytearray(size), shift, sb.log2_sectors_per_block)
            self._bm_recalc = SectorBitmap(bytearray(size), shift, sb.log2_sectors_per_block)
        if self.read_only and o.mode != "R" and should_write_sb:
            raise self._err(f"{o.dev}: the device is zeroed and would be formatted, but the "
                            "table is read-only")
        if should_write_sb:
            self.journal.init_sections(0, self.journal.n_sections, 0)
            self._write_sb(fua=True)
            self.just_formatted = True
        if o.mode != "R" and not self.read_only:
            self._resume()
        elif o.mode != "R":
            self._check_read_only_load()

    def _check_read_only_load(self) -> None:
        """A read-only table cannot replay, recalculate or take a dirty bitmap into use:
        say so instead of reading stale blocks."""
        where = self.opts.meta_device or self.opts.dev
        if self.sb.has(SbFlags.DIRTY_BITMAP):
            raise self._err(f"{where}: the bitmap is dirty (not closed cleanly); load it "
                            "read-write to recalculate, or in mode R")
        if self.provided_data_sectors != self.sb.provided_data_sectors:
            raise self._err(f"{where}: the device grew; load it read-write once")
        jw = self.journal
        jw.read_from_disk()
        scan = scan_journal(jw.mem, self.geo, commit_ids=jw.commit_ids)
        if scan.status is not JournalStatus.EMPTY:
            raise self._err(f"{where}: journal: {scan.message}; load it read-write to replay "
                            "it, or in mode R")

    def _format(self, o: IntegrityOptions, tag_size: int, separate: bool, internal: bool,
                mac: bool, rng) -> Superblock:
        """``initialize_superblock`` on a zeroed device (or in memory for mode R)."""
        salt = None
        if o.fix_hmac and (internal or mac):
            salt = bytes(rng(16))
        try:
            return format_superblock(
                self.data_dev.nr_sectors, self.meta_dev.nr_sectors if separate else None,
                tag_size=tag_size, block_size=o.block_size, journal_sectors=o.journal_sectors,
                interleave_sectors=o.interleave_sectors, buffer_sectors=o.buffer_sectors,
                sectors_per_bit=o.sectors_per_bit, start_sector=o.start,
                internal_hash=internal, journal_mac=mac, fix_padding=o.fix_padding,
                fix_hmac=o.fix_hmac, bitmap_mode=o.mode == "B", salt=salt)
        except ValueError as e:
            raise self._err(f"could not initialize the superblock: {e}") from None

    def _check_superblock(self, sb: Superblock, o: IntegrityOptions, tag_size: int,
                          separate: bool, mac: bool) -> None:
        dev = o.meta_device or o.dev
        if sb.integrity_tag_size != tag_size:
            raise self._err(f"{dev}: tag size {tag_size} does not match the superblock's "
                            f"{sb.integrity_tag_size}")
        if sb.log2_sectors_per_block != self.log2_spb:
            raise self._err(f"{dev}: block size {o.block_size} does not match the "
                            f"superblock's {sb.block_size}")
        if separate and sb.log2_interleave_sectors:
            raise self._err(f"{dev}: the superblock has interleaved tags "
                            f"(interleave_sectors {sb.interleave_sectors}): no meta_device")
        if not separate and not sb.log2_interleave_sectors:
            raise self._err(f"{dev}: the superblock is for a separate metadata device: give "
                            "meta_device")
        if sb.has(SbFlags.HAVE_JOURNAL_MAC) != mac:
            have = "has" if sb.has(SbFlags.HAVE_JOURNAL_MAC) else "has no"
            raise self._err(f"{dev}: journal_mac mismatch: the superblock {have} a journal "
                            "MAC")

    def _check_tag_overlap(self, formatting: bool) -> None:
        """With the old padding and an interleave smaller than the tag buffer, the kernel
        rounds each area's tag position down to a buffer boundary, onto the previous area's
        data (see :mod:`.geometry`): writing there destroys data.  dmkit refuses to make
        such a layout and to write to one; reading one (mode R, read-only) is allowed."""
        geo = self.geo
        if geo.separate_metadata or geo.log2_interleave_sectors >= geo.log2_buffer_sectors:
            return
        if not formatting and (self.mode == "R" or self.read_only):
            return
        what = "would create" if formatting else "holds"
        raise self._err(f"{self.opts.dev}: the device {what} a layout where the kernel puts "
                        f"tags on data (old padding, interleave_sectors "
                        f"{1 << geo.log2_interleave_sectors} < buffer_sectors "
                        f"{1 << geo.log2_buffer_sectors}): use fix_padding, a larger "
                        "interleave, or buffer_sectors no larger than the interleave")

    def _check_sb_mac(self, area: bytearray) -> None:
        m = self.journal_mac
        if Superblock.SIZE + m.size > 512:
            raise self._err("journal_mac digest is too long for the superblock MAC")
        want = m.digest(bytes(area[:512 - m.size]))
        if bytes(area[512 - m.size:512]) != want:
            raise IntegrityError(f"{self.name}: {self.opts.meta_device or self.opts.dev}: "
                                 "superblock MAC mismatch (wrong journal_mac key, or the "
                                 "superblock was modified)")

    def _recalculate_disabled(self, hash_key, mac_key) -> bool:
        """``dm_integrity_disable_recalculate``."""
        if self.opts.legacy_recalculate:
            return False
        if not self.sb.has(SbFlags.FIXED_HMAC):
            return bool(hash_key) or bool(mac_key)
        return bool(hash_key) and not mac_key

    # -- the superblock ------------------------------------------------------------------------------
    def _set_flags(self, flags, **changes) -> None:
        self.sb = dataclasses.replace(self.sb, flags=SbFlags(flags), **changes)

    def _set_recalc_sector(self, sector: int) -> None:
        self.sb = dataclasses.replace(self.sb, recalc_sector=sector)

    def _write_sb(self, *, fua: bool) -> None:
        """``sync_rw_sb(WRITE)``: the lowest version the flags need, the MAC, 8 sectors."""
        version = required_version(int(self.sb.flags), meta_device=self.separate,
                                   bitmap_mode=self.mode == "B")
        self.sb = dataclasses.replace(self.sb, version=version)
        area = self._sb_area
        area[:Superblock.SIZE] = self.sb.to_bytes()
        m = self.journal_mac
        if m is not None and self.sb.has(SbFlags.FIXED_HMAC):
            area[512 - m.size:512] = m.digest(bytes(area[:512 - m.size]))
        self.meta_dev.submit(Bio.write(self.opts.start, area, REQ_FUA if fua else 0))

    # -- resume: grow, dirty bitmap, replay, recalculation ------------------------------------------
    def _resume(self) -> None:
        sb, o = self.sb, self.opts
        old = sb.provided_data_sectors
        provided = self.provided_data_sectors
        if provided != old:
            if provided > old and self.mode == "B" and \
                    sb.log2_blocks_per_bitmap_bit == self.log2_blocks_per_bitmap_bit:
                self._read_bitmap()
                self._bm_journal.set(old, provided - old)
                self._write_bitmap_blocks(0, self.n_bitmap_blocks)
            self.sb = dataclasses.replace(self.sb, provided_data_sectors=provided)
            self._write_sb(fua=True)
        if self.sb.has(SbFlags.DIRTY_BITMAP):
            self._resume_dirty_bitmap()
        else:
            self._replay_journal()
            if o.reset_recalculate:
                self._set_flags(self.sb.flags | SbFlags.RECALCULATING, recalc_sector=0)
            if self.mode == "B":
                self._set_flags(self.sb.flags | SbFlags.DIRTY_BITMAP,
                                log2_blocks_per_bitmap_bit=self.log2_blocks_per_bitmap_bit)
                self._write_sb(fua=True)
                for bm in (self._bm_journal, self._bm_recalc, self._bm_may_write):
                    bm.clear(0, provided)
                rs = self.sb.recalc_sector
                if self.sb.has(SbFlags.RECALCULATING) and rs < provided:
                    for bm in (self._bm_journal, self._bm_recalc, self._bm_may_write):
                        bm.set(rs, provided - rs)
                self._write_bitmap_blocks(0, self.n_bitmap_blocks)
        if self.sb.has(SbFlags.RECALCULATING) and self.sb.recalc_sector > provided:
            self._set_recalc_sector(provided)
            self._recalc_write_super()

    def _read_bitmap(self) -> None:
        jw = self.journal
        n = self.n_bitmap_blocks * BITMAP_BLOCK_SIZE
        self.meta_dev.submit(Bio.read(jw.first_sector, memoryview(jw.mem)[:n]))

    def _resume_dirty_bitmap(self) -> None:
        """The superblock says the journal area is a dirty bitmap (bitmap mode that was not
        closed cleanly): recalculate what it marks."""
        provided = self.provided_data_sectors
        same_bpb = self.sb.log2_blocks_per_bitmap_bit == self.log2_blocks_per_bitmap_bit
        recalc_all = dict(recalc_sector=0)
        if self.mode == "B":
            self._read_bitmap()
            if same_bpb and not self.opts.reset_recalculate:
                self._bm_recalc.copy_from(self._bm_journal)
                self._bm_may_write.copy_from(self._bm_journal)
                if not self._bm_journal.all_clear(0, provided):
                    self._set_flags(self.sb.flags | SbFlags.RECALCULATING, **recalc_all)
            else:
                self.sb = dataclasses.replace(
                    self.sb, log2_blocks_per_bitmap_bit=self.log2_blocks_per_bitmap_bit)
                for bm in (self._bm_recalc, self._bm_may_write, self._bm_journal):
                    bm.set(0, provided)
                self._write_bitmap_blocks(0, self.n_bitmap_blocks)
                self._set_flags(self.sb.flags | SbFlags.RECALCULATING, **recalc_all)
        else:
            shift = self.sb.log2_sectors_per_block + self.sb.log2_blocks_per_bitmap_bit
            jw = self.journal
            jw.read_from_disk(decrypt=False)      # a bitmap, not a journal
            bm = SectorBitmap(memoryview(jw.mem)[:self.n_bitmap_blocks * BITMAP_BLOCK_SIZE],
                              shift, self.sb.log2_sectors_per_block)
            clean = same_bpb and bm.all_clear(0, provided)
            if not clean or self.opts.reset_recalculate:
                self._set_flags(self.sb.flags | SbFlags.RECALCULATING, **recalc_all)
            jw.init_sections(0, jw.n_sections, 0)
            self._set_flags(self.sb.flags & ~SbFlags.DIRTY_BITMAP)
            self._replay_journal()
        self._write_sb(fua=True)

    def _replay_journal(self) -> None:
        """``replay_journal``: committed blocks go home, then the journal continues (journal
        mode, every section consistent) or is cleared.  Unlike the kernel, a journal that
        cannot be replayed correctly (bad commit id, tag or MAC mismatch) refuses the load
        before anything is written, instead of failing the device afterwards."""
        jw = self.journal
        if not self.just_formatted:
            jw.read_from_disk()
        geo = self.geo
        if geo.superblock.has(SbFlags.DIRTY_BITMAP):
            geo = dataclasses.replace(geo, superblock=dataclasses.replace(
                geo.superblock, flags=geo.superblock.flags & ~SbFlags.DIRTY_BITMAP))
        where = self.opts.meta_device or self.opts.dev
        try:
            scan = scan_journal(jw.mem, geo, commit_ids=jw.commit_ids)
        except DmkitError as e:
            raise self._err(f"{where}: journal: {e}") from None
        if scan.status is JournalStatus.UNREADABLE:
            raise self._err(f"{where}: journal: {scan.message}; load it in mode R to salvage "
                            "the data area")
        n = jw.n_sections
        if not scan.journal_empty and scan.consistent_sections:
            bad = jw.check_macs(scan.write_start, scan.consistent_sections)
            if bad is not None:
                raise IntegrityError(f"{self.name}: {where}: journal MAC mismatch in section "
                                     f"{bad}")
        if scan.entries:
            self._replay_entries(scan.entries, where)
        if scan.consistent_sections == n and (self.mode == "J" or scan.journal_empty):
            jw.reset_state(scan.write_start, scan.resume_commit_seq)
            return
        erase = prev_commit_seq(prev_commit_seq(scan.last_used_seq))
        s = scan.write_start
        jw.init_sections(s, 1, erase)
        s = (s + 1) % n
        if n >= 2:
            jw.init_sections(s, n - 2, erase)
            s = (s + n - 2) % n
            jw.init_sections(s, 1, erase)
        jw.reset_state(0, next_commit_seq(erase))

    def _replay_entries(self, entries, where: str) -> None:
        if self.tag_fn is not None:
            for e in entries:
                if self.tag_fn.verify(e.data, e.logical_sector, e.tag) is not None:
                    raise IntegrityError(
                        f"{self.name}: {where}: journal replay: tag mismatch for sector "
                        f"{e.logical_sector} (journal section {e.section} entry {e.entry}); "
                        "nothing was written")
        spb = self.spb
        run: list = []
        for e in entries:
            if run and not (e.section == run[-1].section and e.entry == run[-1].entry + 1
                            and e.logical_sector == run[-1].logical_sector + spb):
                self._replay_run(run)
                run = []
            run.append(e)
        if run:
            self._replay_run(run)
        self._flush_buffers(True)

    def _replay_run(self, run) -> None:
        self._write_home(run[0].logical_sector, b"".join(e.data for e in run),
                         b"".join(e.tag for e in run))

    # -- state ------------------------------------------------------------------------------------------
    def _fail(self, e: DmkitError) -> None:
        if self._failed is None:
            self._failed = e

    def _check_usable(self) -> None:
        if self._closed:
            raise DmkitError(f"{self.name}: target is closed")
        if self._failed is not None:
            raise type(self._failed)(f"{self.name}: the device failed earlier "
                                     f"({self._failed}); close and reload it",
                                     errno=self._failed.errno)

    # -- what the mapped device stacks ----------------------------------------------------------------
    def limits(self) -> QueueLimits:
        base = self.data_dev.limits
        bs = self.spb << SECTOR_SHIFT
        if self.spb == 1:
            return base
        return QueueLimits(logical_block_size=max(base.logical_block_size, bs),
                           physical_block_size=max(base.physical_block_size, bs),
                           io_min=max(base.io_min, bs), io_opt=base.io_opt)

    def integrity_profile(self) -> IntegrityProfile | None:
        if self.tag_fn is not None:
            return None
        return IntegrityProfile("DM-DIF-EXT-TAG", self.tag_size, self.tag_size,
                                self.spb << SECTOR_SHIFT)

    @property
    def can_discard(self) -> bool:
        return self.opts.allow_discards and self.mode != "R" and not self.read_only

    # -- reporting --------------------------------------------------------------------------------------
    def status(self, kind: str) -> str:
        sb = self.sb
        if kind == "table":
            entries = self.geo.journal.entries
            pct = ((entries - self.free_sectors_threshold) * 100 + entries // 2) // entries
            return format_table(
                self.opts, tag_size=self.tag_size,
                recalculating=sb.has(SbFlags.RECALCULATING),
                journal_sectors=self.geo.journal_sectors,
                log2_interleave_sectors=sb.log2_interleave_sectors,
                log2_buffer_sectors=self.geo.log2_buffer_sectors, journal_watermark=pct,
                sectors_per_bit=self.spb << self.log2_blocks_per_bitmap_bit,
                fixed_padding=sb.has(SbFlags.FIXED_PADDING),
                fixed_hmac=sb.has(SbFlags.FIXED_HMAC))
        recalc = str(sb.recalc_sector) if sb.has(SbFlags.RECALCULATING) else "-"
        out = f"{self.number_of_mismatches} {self.provided_data_sectors} {recalc}"
        if self.opts.zero_on_error:
            out += f" zeroed_blocks:{self.zeroed_blocks}"
        return out

    def message(self, argv: Sequence[str]) -> str:
        """The kernel's dm-integrity takes no messages.  dmkit's own: ``clear_stats``
        (zero the mismatch and zeroed-block counters)."""
        if list(argv) == ["clear_stats"]:
            self.number_of_mismatches = 0
            self.zeroed_blocks = 0
            return ""
        raise TableError(f"{self.name}: unrecognised message {' '.join(argv)!r} "
                         "(dmkit accepts clear_stats)")

    # -- close (the kernel's postsuspend) ----------------------------------------------------------------
    def close(self) -> None:
        """Write everything home and leave the journal empty (the kernel's postsuspend);
        raises what failed, the writer thread's failure included."""
        if self._closed:
            return
        try:
            if self._failed is None and self.mode != "R" and not self.read_only \
                    and hasattr(self, "tags"):
                self._postsuspend()
        finally:
            self._closed = True
            try:
                self._stop_home_writer()
            finally:
                Target.close(self)

    def _stop_home_writer(self) -> None:
        hw, self._home_writer = self._home_writer, None
        if hw is None:
            return
        error = hw.close()      # a write-home is under way only if close failed before
        if error is not None:
            log.error("integrity %s: journal write-home failed at close: %s", self.opts.dev,
                      error)

    def _postsuspend(self) -> None:
        self._autocommit_at = None
        if self.sb.has(SbFlags.RECALCULATING) and self.tag_fn is not None \
                and self.sb.recalc_sector < self.provided_data_sectors:
            self._recalc_write_super()
        if self.mode == "B":
            self._bitmap_flush_at = None
        self._flush_request()
        jw = self.journal
        if self.mode == "J":
            self._write_journal_home()
            self._flush_buffers(True)
            if jw.wrote_to_journal:
                jw.init_sections(jw.free_section, jw.n_sections - jw.free_section,
                                 jw.commit_seq)
                if jw.free_section:
                    jw.init_sections(0, jw.free_section, next_commit_seq(jw.commit_seq))
        elif self.mode == "B":
            self._flush_buffers(True)
            jw.init_sections(0, jw.n_sections, 0)
            self._set_flags(self.sb.flags & ~SbFlags.DIRTY_BITMAP)
            self._write_sb(fua=True)
