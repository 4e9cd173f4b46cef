"""The integrity target's request handling: reads, writes, discards, flushes, and the
background work the kernel does in worker threads (autocommit, the bitmap flush,
recalculation), run here synchronously, except journal write-home, which runs in a
writer thread on file backends (:mod:`.homewriter`).

Upstream (``drivers/md/dm-integrity.c``, Linux 6.1): ``dm_integrity_map``,
``dm_integrity_map_continue``, ``integrity_metadata`` (tags of a request, checked in one
pass), ``dm_integrity_rw_tag`` (the discard filler), ``integrity_commit``,
``dm_integrity_flush_buffers``, ``bitmap_block_work``, ``bitmap_flush_work``,
``integrity_recalc``.

A request is handled in batches: its extents (runs contiguous in data and tags, one per
interleave area) are read or written with one device request each, and all its tags are
computed and compared in one call.  The only per-block Python work is in the journal's
read overlay and write-home bookkeeping.
"""

from __future__ import annotations

import errno as _errno
import functools
import logging
import time

from ...block import SECTOR_SHIFT, Bio
from ...block.file import FileDevice
from ...block.parallel import default_workers
from ...block.bio import OP_DISCARD, OP_FLUSH, OP_READ, OP_WRITE, REQ_FUA, REQ_PREFLUSH
from ...errors import (
    BlockIOError,
    DmkitError,
    IntegrityError,
    InvalidBioError,
    NotSupportedError,
    ReadOnlyError,
)
from .layout import DISCARD_FILLER, SbFlags

__all__ = ["DataPath", "RECALC_SECTORS", "RECALC_WRITE_SUPER", "overlap_read_fd"]

log = logging.getLogger("dmkit.integrity")


def _writer_error(dev: str, e: BaseException) -> DmkitError:
    """What a failure in the writer thread becomes: the same class and errno, naming the
    write-home."""
    if isinstance(e, DmkitError):
        return type(e)(f"integrity {dev}: journal write-home failed: {e}", errno=e.errno)
    return BlockIOError(f"integrity {dev}: journal write-home failed: {e!r}")

#: ``RECALC_SECTORS`` (64-bit kernels) and ``RECALC_WRITE_SUPER``
RECALC_SECTORS = 32768
RECALC_WRITE_SUPER = 16
#: how long a request sleeps after handing a write-home to the writer thread
_HANDOFF_SECONDS = 1e-6
#: the flag as a plain int, tested against ``int(flags)`` once per read (``&`` on an
#: ``IntFlag`` goes through the enum machinery: 0.9 us against 0.08)
_RECALCULATING = int(SbFlags.RECALCULATING)
#: reads of at least this many sectors, of one extent, on a data device that is a plain
#: file, overlap the copy out of the page cache with the hashing (``_read_overlapped``);
#: below it, starting the helper thread costs about what the overlap saves
_OVERLAP_MIN_SECTORS = (512 << 10) >> SECTOR_SHIFT
#: the helper thread reads this much at a time; the hashing follows piece by piece
_OVERLAP_PIECE_BYTES = 128 << 10


def overlap_read_fd(dev, tag_fn) -> int | None:
    """The descriptor reads of ``dev`` can be overlapped with hashing through, or None:
    ``dev`` must be a plain :class:`FileDevice` (not a wrapper that changes what a read
    does), ``tag_fn`` must have the C accelerator's ``read_tags``, and there must be a
    second CPU for the helper thread."""
    if tag_fn is None or not tag_fn.can_read_tags or type(dev) is not FileDevice \
            or default_workers() < 2:
        return None
    return dev.fileno()


#: at most this many distinct zeroed sectors are remembered to log each only once
_MAX_LOGGED_ZEROED = 65536


class DataPath:
    """Mixed into :class:`~.target.IntegrityTarget`; uses its attributes (``geo``,
    ``tags``, ``journal``, ``tag_fn``, ``mode``...)."""

    # -- entry ------------------------------------------------------------------------------
    def map(self, bio: Bio) -> None:
        self._check_usable()
        if self._home_writer is not None and self._home_writer.done:
            self._reap_home()
        self._run_timers()
        op = bio.op
        if op is OP_FLUSH:
            self._flush_request()
            return
        if bio.flags & REQ_PREFLUSH:
            self._flush_request()
        self._check_request(bio)
        if op is OP_READ:
            self._read(bio)
            return
        if self.mode == "R":
            raise ReadOnlyError(f"integrity: {op.name.lower()} at sector {bio.sector}: "
                                "mode R (recovery) is read-only")
        if op is OP_WRITE:
            self._guarded(self._write, bio)
            if bio.flags & REQ_FUA:
                self._flush_request()
        elif op is OP_DISCARD:
            if not self.opts.allow_discards:
                raise NotSupportedError("integrity: discard needs allow_discards")
            self._guarded(self._discard, bio)
        else:
            raise NotSupportedError(f"integrity: {op.name.lower()} is not supported")

    def _guarded(self, fn, bio: Bio) -> None:
        try:
            fn(bio)
        except DmkitError as e:
            if not isinstance(e, (InvalidBioError, NotSupportedError)):
                self._fail(e)
            raise

    def _check_request(self, bio: Bio) -> None:
        s, n = bio.sector, bio.nr_sectors
        if s < 0 or n <= 0 or s + n > self.nr_sectors:
            raise InvalidBioError(f"integrity: request for sectors {s}+{n} is outside the "
                                  f"target ({self.nr_sectors} sectors)")
        if (s | n) & (self.spb - 1):
            raise InvalidBioError(f"integrity: request for sectors {s}+{n} is not aligned "
                                  f"to the {self.spb << SECTOR_SHIFT}-byte block size")
        if bio.integrity is not None:
            if self.tag_fn is not None:
                raise InvalidBioError("integrity: unexpected integrity data when using "
                                      "internal hash")
            want = (n >> self.log2_spb) * self.tag_size
            if len(bio.integrity.buf) != want:
                raise InvalidBioError(f"integrity: invalid integrity data size "
                                      f"{len(bio.integrity.buf)}, expected {want}")

    # -- reads ----------------------------------------------------------------------------------
    def _read(self, bio: Bio) -> None:
        s, n, buf = bio.sector, bio.nr_sectors, bio.data
        tag_fn = self.tag_fn
        want_tags = tag_fn is None or self.mode != "R"
        ts, l2 = self.tag_size, self.log2_spb
        dev, tags = self.data_dev, self.tags
        exts = self.geo.extents(s, n)
        if len(exts) == 1:   # the common case: one interleave area, one read of each
            ext = exts[0]
            if self._overlap_fd is not None and n >= _OVERLAP_MIN_SECTORS \
                    and self.mode != "R" and not (self.journal is not None
                                                  and self.journal.newest) \
                    and not self._unverifiable(s, n):
                self._read_overlapped(s, n, buf, ext)
                return
            dev.submit(Bio(OP_READ, ext.data_sector, n, buf))
            stored = tags.read(ext.tag_offset, (n >> l2) * ts) if want_tags else None
        else:
            stored = bytearray((n >> l2) * ts) if want_tags else None
            for ext in exts:
                off = ext.logical_sector - s
                dev.submit(Bio(OP_READ, ext.data_sector, ext.nr_sectors,
                               buf[off << SECTOR_SHIFT:(off + ext.nr_sectors) << SECTOR_SHIFT]))
                if want_tags:
                    t0 = (off >> l2) * ts
                    stored[t0:t0 + ext.nr_blocks * ts] = tags.read(ext.tag_offset,
                                                                   ext.nr_blocks * ts)
        if self.journal is not None and self.journal.newest:
            self.journal.overlay(s, n, buf, stored)
        if tag_fn is None:
            if bio.integrity is not None:
                bio.integrity.buf[:] = stored
            return
        if self.mode == "R" or self._unverifiable(s, n):
            return
        bad = tag_fn.bad_blocks(buf, s, stored, allow_discards=self.opts.allow_discards)
        if bad.size:
            self._bad_read(s, buf, bad)

    def _read_overlapped(self, s: int, n: int, buf: memoryview, ext) -> None:
        """A verified read whose data is copied out of the data file by a helper thread
        while this one hashes what has arrived (``TagFunction.read_tags``): the same
        checks as the other path, on the same bytes.  Only for one extent, with nothing in
        the journal to lay over it and tags that are verified (see ``_read``)."""
        tag_fn = self.tag_fn
        try:
            computed = tag_fn.read_tags(self._overlap_fd, ext.data_sector << SECTOR_SHIFT, buf,
                                        s, _OVERLAP_PIECE_BYTES)
        except OSError as e:
            raise BlockIOError(f"{self.data_dev.name}: read at sector {ext.data_sector} "
                               f"failed: {e.strerror}", errno=e.errno or _errno.EIO) from None
        stored = self.tags.read(ext.tag_offset, (n >> self.log2_spb) * self.tag_size)
        bad = tag_fn.mismatches(computed, stored, allow_discards=self.opts.allow_discards)
        if bad.size:
            self._bad_read(s, buf, bad)

    def _unverifiable(self, s: int, n: int) -> bool:
        """Tags not yet recalculated (kernel: reads there are not checked)."""
        sb = self.sb
        if int(sb.flags) & _RECALCULATING and s + n > sb.recalc_sector:
            return True
        return self.mode == "B" and not self._bm_recalc.all_clear(s, n)

    def _bad_read(self, s: int, buf: memoryview, bad) -> None:
        spb, bs = self.spb, self.spb << SECTOR_SHIFT
        first = s + int(bad[0]) * spb
        self.number_of_mismatches += 1
        if self.opts.zero_on_error:
            for k in bad.tolist():
                buf[k * bs:(k + 1) * bs] = bytes(bs)
                sector = s + k * spb
                if sector not in self._logged_zeroed and \
                        len(self._logged_zeroed) < _MAX_LOGGED_ZEROED:
                    self._logged_zeroed.add(sector)
                    log.warning("integrity %s: checksum mismatch at sector %d: read as zeros "
                                "(zero_on_error)", self.opts.dev, sector)
            self.zeroed_blocks += int(bad.size)
            return
        buf[:] = bytes(len(buf))
        more = f" and {bad.size - 1} more block(s)" if bad.size > 1 else ""
        log.error("integrity %s: checksum mismatch at sector %d%s", self.opts.dev, first, more)
        raise IntegrityError(f"integrity: checksum mismatch at sector {first}")

    # -- writes -----------------------------------------------------------------------------------
    def _write(self, bio: Bio) -> None:
        s, n, data = bio.sector, bio.nr_sectors, bio.data
        if self.tag_fn is not None:
            tags = self.tag_fn.tags(data, s)
        elif bio.integrity is not None:
            tags = bytes(bio.integrity.buf)
        else:
            tags = None
        if self.mode == "J":
            self._journal_write(s, data, tags)
            return
        if self.mode == "B":
            self._bitmap_mark(s, n)
        self._write_home(s, data, tags)
        self._schedule_autocommit()

    def _write_home(self, s: int, data, tags, write_behind: bool = False) -> None:
        """Data and tags to their places (tags through the cache).  ``write_behind``: the
        data device starts writing the data out at once (see ``start_writeback``)."""
        ts, l2 = self.tag_size, self.log2_spb
        dev, store = self.data_dev, self.tags
        mv = memoryview(data).cast("B")
        for ext in self.geo.extents(s, len(mv) >> SECTOR_SHIFT):
            off = ext.logical_sector - s
            dev.submit(Bio.write(ext.data_sector,
                                 mv[off << SECTOR_SHIFT:(off + ext.nr_sectors) << SECTOR_SHIFT]))
            if write_behind:
                dev.start_writeback(ext.data_sector, ext.nr_sectors)
            if tags is not None:
                t0 = (off >> l2) * ts
                store.write(ext.tag_offset, tags[t0:t0 + ext.nr_blocks * ts])

    def _write_home_pieces(self, s: int, pieces: list, tags, write_behind: bool = False) -> None:
        """:meth:`_write_home` for data given in pieces (a journal run spanning sections):
        one vectored request per extent."""
        if len(pieces) == 1:
            self._write_home(s, pieces[0], tags, write_behind)
            return
        ts, l2 = self.tag_size, self.log2_spb
        dev, store = self.data_dev, self.tags
        nbytes = sum(len(p) for p in pieces)
        for ext in self.geo.extents(s, nbytes >> SECTOR_SHIFT):
            off = (ext.logical_sector - s) << SECTOR_SHIFT
            end = off + (ext.nr_sectors << SECTOR_SHIFT)
            bufs, pos = [], 0
            for p in pieces:
                a, b = max(off, pos), min(end, pos + len(p))
                if a < b:
                    bufs.append(p[a - pos:b - pos])
                pos += len(p)
            dev.submit_vec(OP_WRITE, ext.data_sector, bufs)
            if write_behind:
                dev.start_writeback(ext.data_sector, ext.nr_sectors)
            if tags is not None:
                t0 = ((ext.logical_sector - s) >> l2) * ts
                store.write(ext.tag_offset, tags[t0:t0 + ext.nr_blocks * ts])

    def _journal_write(self, s: int, data, tags) -> None:
        jw, hw = self.journal, self._home_writer
        mv = memoryview(data).cast("B")
        spb, bs, ts = self.spb, self.spb << SECTOR_SHIFT, self.tag_size
        done, total = 0, len(mv) // bs
        while done < total:
            if jw.free_sectors == 0:
                self._journal_full()
            if hw is None:
                k = jw.add(s + done * spb, mv[done * bs:],
                           None if tags is None else tags[done * ts:])
            else:       # a chunk at a time, to keep the writer thread fed
                k = jw.add(s + done * spb, mv[done * bs:],
                           None if tags is None else tags[done * ts:],
                           self.home_chunk_sections * jw.section_entries
                           - jw.uncommitted_entries)
            done += k
            if jw.uncommitted_entries >= self.commit_watermark_entries:
                # the watermark: commit the full sections, without waiting for them to
                # be durable (a FLUSH/FUA, commit_time or a full journal commits the
                # rest, padded, and flushes both)
                self._commit(pad=False, durable=False)
            elif hw is not None:
                # the writer thread takes the journal in chunks of a few sections
                if jw.n_uncommitted_sections >= self.home_chunk_sections:
                    self._commit(pad=False, durable=False)
                if hw.done:
                    self._reap_home()
        if jw.has_uncommitted:
            self._schedule_autocommit()

    # -- discards -------------------------------------------------------------------------------
    def _discard(self, bio: Bio) -> None:
        s, n = bio.sector, bio.nr_sectors
        self._drain_home()
        if self.mode == "J" and self.journal.holds_any(s, n):
            self._commit()
            self._write_journal_home()
        if self.mode == "B":
            self._bitmap_mark(s, n)
        filler = bytes([DISCARD_FILLER]) * ((n >> self.log2_spb) * self.tag_size)
        if self.mode == "D":
            self._discard_data(s, n)
            self._write_tags(s, n, filler)
        else:
            self._write_tags(s, n, filler)
            self._flush_buffers(False)
            self._discard_data(s, n)
        self._schedule_autocommit()

    def _write_tags(self, s: int, n: int, tags: bytes) -> None:
        ts, l2 = self.tag_size, self.log2_spb
        for ext in self.geo.extents(s, n):
            t0 = ((ext.logical_sector - s) >> l2) * ts
            self.tags.write(ext.tag_offset, tags[t0:t0 + ext.nr_blocks * ts])

    def _discard_data(self, s: int, n: int) -> None:
        if not self.data_dev.can_discard:
            return          # the tags say "discarded"; any data verifies
        for ext in self.geo.extents(s, n):
            self.data_dev.submit(Bio.discard(ext.data_sector, ext.nr_sectors))

    # -- flushes and commits ---------------------------------------------------------------------
    def _flush_request(self) -> None:
        """What a FLUSH (or FUA) request makes the kernel do (``integrity_commit``)."""
        if self.mode == "R":
            return
        self._autocommit_at = None
        if self.mode == "J":
            self._commit()
        else:
            self._flush_buffers(True)

    def _commit(self, *, pad: bool = True, durable: bool = True) -> None:
        """``integrity_commit``.  With the writer thread (:mod:`.homewriter`), every
        commit starts a write-home of the committed sections if none is under way, as the
        kernel queues its writer.  Without it, the journal goes home lazily: when the
        journal has no free entry left for a write, before a discard of journaled blocks,
        and at close (see :meth:`_journal_write`)."""
        self._autocommit_at = None
        try:
            self.journal.commit(pad=pad, durable=durable)
        except DmkitError as e:
            self._fail(e)
            raise
        if self._home_writer is not None:
            self._start_home()

    def _journal_full(self) -> None:
        """No free entry for a write.  With the writer thread: the jobs under way end,
        oldest first (as each ends, the plans before its own finish: their sections are
        free, and the next job starts), until one frees something; failing that, what is
        uncommitted is committed, and its job's flush frees the sections before it;
        failing that, everything is written home now."""
        hw, jw = self._home_writer, self.journal
        if hw is not None:
            while hw.busy:
                self._reap_home()
                if jw.free_sectors:
                    return
            self._commit(durable=False)
            while hw.busy:
                self._reap_home()
                if jw.free_sectors:
                    return
            self._drain_home()
            if jw.free_sectors:
                return
        self._commit()
        self._write_journal_home()

    def _write_journal_home(self) -> None:
        """Every committed section home, now (after the writer thread's)."""
        self._drain_home()
        self.journal.write_home(self._write_home_pieces, lambda: self._flush_buffers(True))

    # -- the writer thread (mode J on file backends: see .homewriter) -----------------------------
    #
    # A write-home job first flushes (the tags, the devices): that makes its own sections
    # durable (they were written without FUA) and the blocks the previous job wrote home
    # durable, so the previous plan finishes (its sections are free) when this job ends.
    # Then it writes its blocks home, unflushed; the next job's flush, or a drain, makes
    # them durable.  One flush per write-home, as in the synchronous path.
    def _start_home(self) -> None:
        """A write-home of the committed sections not planned yet.  When the queue is
        full and the thread has not started the newest job, that job is withdrawn and
        planned again with the new sections: one job, one flush, for both."""
        jw, hw = self.journal, self._home_writer
        if not jw.unplanned_sections:
            return
        if hw.full:
            pending = hw.withdraw_pending()
            if pending is None:
                return
            jw.unplan(pending)
        idle = not hw.busy
        plan = jw.plan_home()
        flush_first = plan.needs_flush or len(jw.homing) > 1
        hw.start(functools.partial(self._home_job, plan, flush_first), plan)
        if idle:
            # Let the thread take the GIL now and reach its flush (which releases it);
            # otherwise it waits for the switch interval (5 ms) or for this path to block.
            time.sleep(_HANDOFF_SECONDS)

    def _home_job(self, plan, flush_first: bool) -> None:
        """In the writer thread: flush (``plan``'s sections and the previous plan's blocks
        durable), then ``plan``'s blocks home."""
        if flush_first:
            self._flush_buffers(True)
        for s, pieces, tags in plan.runs:
            self._write_home_pieces(s, pieces, tags, True)

    def _reap_home(self, *, start_next: bool = True) -> None:
        """Wait for the job under way; the plans before its plan finish (their sections are
        free), and the next job starts if sections are committed after it.  A failure in
        the thread fails the target, and this request with it."""
        try:
            plan = self._home_writer.take()
        except BaseException as e:
            err = _writer_error(self.opts.dev, e)
            self._fail(err)
            raise err from e
        jw = self.journal
        while jw.homing[0] is not plan:
            jw.finish_home(jw.homing[0])
        if start_next:
            self._start_home()

    def _drain_home(self) -> None:
        """Wait for the writer thread, then flush, so that every plan finishes: the
        sections planned are home and free."""
        hw = self._home_writer
        if hw is None:
            return
        while hw.busy:
            self._reap_home(start_next=False)
        jw = self.journal
        if jw.homing:
            try:
                self._flush_buffers(True)
            except DmkitError as e:
                self._fail(e)
                raise
            while jw.homing:
                jw.finish_home(jw.homing[0])

    def _flush_buffers(self, flush_data: bool) -> None:
        """``dm_integrity_flush_buffers``: dirty tags to disk, then a flush of the metadata
        device (and of the data device when it is separate and ``flush_data``)."""
        if self.meta_dev is not self.data_dev and flush_data:
            self.data_dev.flush()
        self.tags.writeback()
        self.meta_dev.flush()

    # -- timers (the kernel's autocommit timer and delayed bitmap flush) -------------------------
    def _schedule_autocommit(self) -> None:
        if self._autocommit_at is None:
            self._autocommit_at = self.clock() + self.opts.commit_time / 1000.0

    def tick(self) -> None:
        """Run the work whose time has come (an autocommit after ``commit_time``, the bitmap
        flush after ``bitmap_flush_interval``, taking a finished write-home).  Requests
        call this; so may an idle owner."""
        self._check_usable()
        if self._home_writer is not None and self._home_writer.done:
            self._reap_home()
        self._run_timers()

    def _run_timers(self) -> None:
        if self._autocommit_at is None and self._bitmap_flush_at is None:
            return
        now = self.clock()
        if self._autocommit_at is not None and now >= self._autocommit_at:
            self._autocommit_at = None
            if self.mode == "J":
                self._commit()
            elif self.mode != "R":
                self._flush_buffers(True)
        if self._bitmap_flush_at is not None and now >= self._bitmap_flush_at:
            self._bitmap_flush()

    # -- bitmap mode ------------------------------------------------------------------------------
    def _bitmap_mark(self, s: int, n: int) -> None:
        """``bitmap_block_work``: before a write, its region's bits go to disk (FUA)."""
        if self._bm_may_write.all_set(s, n):
            return
        self._bm_journal.set(s, n)
        self._write_bitmap_range(s, n)
        self._bm_may_write.set(s, n)
        if self._bitmap_flush_at is None:
            self._bitmap_flush_at = self.clock() + self.opts.bitmap_flush_interval / 1000.0

    def _write_bitmap_range(self, s: int, n: int) -> None:
        shift = self._bm_journal.shift
        first = (s >> shift) // (4096 * 8)
        last = ((s + n - 1) >> shift) // (4096 * 8)
        self._write_bitmap_blocks(first, last - first + 1)

    def _write_bitmap_blocks(self, first: int, count: int) -> None:
        jw = self.journal
        a, b = first * 4096, (first + count) * 4096
        jw.dev.submit(Bio.write(jw.first_sector + (a >> SECTOR_SHIFT),
                                memoryview(jw.mem)[a:b], REQ_FUA))

    def _bitmap_flush(self) -> None:
        """``bitmap_flush_work``: make data and tags durable, then clear the bits."""
        self._bitmap_flush_at = None
        self._flush_buffers(False)
        self._flush_buffers(True)
        limit = self.provided_data_sectors
        if self.sb.flags & SbFlags.RECALCULATING:
            shift = self._bm_journal.shift
            limit = self.sb.recalc_sector >> shift << shift
        self._bm_journal.clear(0, limit)
        self._bm_may_write.clear(0, limit)
        self._write_bitmap_blocks(0, self.n_bitmap_blocks)

    # -- recalculation ------------------------------------------------------------------------------
    @property
    def recalculating(self) -> bool:
        return bool(self.sb.flags & SbFlags.RECALCULATING) and \
            self.sb.recalc_sector < self.provided_data_sectors

    def recalc_step(self, max_chunks: int | None = None) -> bool:
        """``integrity_recalc``: recompute tags from ``recalc_sector`` on, at most
        ``max_chunks`` chunks of ``RECALC_SECTORS``.  The position is saved in the
        superblock every ``RECALC_WRITE_SUPER`` chunks and at the end, so an interrupted
        recalculation resumes.  Returns True when finished."""
        self._check_usable()
        if not self.sb.flags & SbFlags.RECALCULATING or self.tag_fn is None:
            return True
        self._drain_home()
        geo, spb = self.geo, self.spb
        done = 0
        try:
            while max_chunks is None or done < max_chunks:
                ls = self.sb.recalc_sector
                if ls >= self.provided_data_sectors:
                    if self.mode == "B":
                        self._bm_recalc.clear(0, self.provided_data_sectors)
                        self._bitmap_flush()
                    self._recalc_write_super()
                    return True
                n = min(RECALC_SECTORS, self.provided_data_sectors - ls)
                if not geo.separate_metadata:
                    il = 1 << geo.log2_interleave_sectors
                    n = min(n, il - (ls & (il - 1)))
                self._recalc_chunk(ls, n, spb)
                self._set_recalc_sector(ls + n)
                done += 1
        except DmkitError as e:
            self._fail(e)
            raise
        return False        # the position reaches the superblock every 16 chunks, and at close

    def _recalc_chunk(self, ls: int, n: int, spb: int) -> None:
        logical, count = ls, n
        if self.mode == "B":
            bm = self._bm_recalc
            if bm.all_clear(ls, n):
                return
            first = bm.first_set(ls, n)
            end = bm.last_set_end(ls, n)
            logical, count = first, end - first
        self._recalc_counter += 1
        if self._recalc_counter == RECALC_WRITE_SUPER:
            self._recalc_write_super()
            if self.mode == "B" and self._bitmap_flush_at is None:
                self._bitmap_flush_at = self.clock() + self.opts.bitmap_flush_interval / 1000.0
            self._recalc_counter = 0
        data = bytearray(count << SECTOR_SHIFT)
        for ext in self.geo.extents(logical, count):
            off = ext.logical_sector - logical
            self.data_dev.submit(Bio.read(
                ext.data_sector, memoryview(data)[off << SECTOR_SHIFT:
                                                  (off + ext.nr_sectors) << SECTOR_SHIFT]))
        self._write_tags(logical, count, self.tag_fn.tags(data, logical))
        if self.mode == "B":
            shift = self._bm_recalc.shift
            start = ls >> shift << shift
            end = (ls + n) >> shift << shift
            self._bm_recalc.clear(start, end - start)

    def _recalc_write_super(self) -> None:
        """``recalc_write_super``: tags first, then the superblock (no FUA, as the kernel)."""
        self._flush_buffers(False)
        self._write_sb(fua=False)
