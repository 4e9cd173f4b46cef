"""Journal mode's write side: the journal in memory, entries, commits, write-home.

Upstream (``drivers/md/dm-integrity.c``, Linux 6.1): ``dm_integrity_map_continue`` and
``__journal_read_write`` (allocating entries and copying blocks in), ``pad_uncommitted``
and ``integrity_commit`` (commit ids, ``write_journal`` with FUA), ``integrity_writer``
and ``do_journal_write`` (copying committed blocks home), ``init_journal``,
``section_mac``/``rw_section_mac`` (journal_mac), ``write_journal`` and
``encrypt_journal`` (journal_crypt: :mod:`.jcrypt`).  The replay decision is
:func:`.journal.scan_journal`'s.

As in the kernel, the journal in memory is plain text, with the commit ids of the journal
cipher (the defaults without one); sections are MACed in plain text and encrypted only on
their way to the disk, and the journal read back is decrypted as a whole.

The kernel's state, with its names: entries are allocated from ``free_section`` /
``free_section_entry`` (``free_sectors`` entries are free in all); sections from
``uncommitted_section`` (``n_uncommitted_sections``) hold entries not yet committed,
sections from ``committed_section`` (``n_committed_sections``) are committed but not yet
written home.  A commit pads the current section (its unused entries stay unused; a
watermark commit may instead leave it uncommitted), stamps every sector of every
uncommitted section with ``commit_id(section, sector, commit_seq)`` (the sequence advances
when the journal wraps) and writes those sections with FUA.  Write-home copies each
committed block and its tag to their home places, then flushes; only then are the sections
free again, so a crash never loses a committed block.  When write-home happens is the
target's choice (:mod:`.datapath`: in the writer thread after each commit, or when the
journal is full); it is planned here (:meth:`JournalWriter.plan_home`), done by the
target, and finished here (:meth:`JournalWriter.finish_home`).

``newest`` maps a logical sector to the journal position (``section * entries + entry``)
of its newest entry not yet written home: reads take blocks from there.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Callable

import numpy as np

from ...block import SECTOR_SHIFT, Bio, BioFlags, BlockDevice
from .geometry import Geometry
from .layout import (
    COMMIT_IDS,
    JOURNAL_BLOCK_SECTORS,
    JOURNAL_MAC_PER_SECTOR,
    JOURNAL_MAC_SIZE,
    JOURNAL_SECTOR_DATA,
    N_COMMIT_IDS,
)
from .jcrypt import JournalCrypt
from .tags import TagAlgorithm

__all__ = ["HomePlan", "JournalMac", "JournalWriter", "first_bad_section_mac", "next_commit_seq",
           "prev_commit_seq"]

_FUA = int(BioFlags.FUA)
_UNUSED_HI = np.uint8(0xFF)
_LE64 = struct.Struct("<Q")


def next_commit_seq(seq: int) -> int:
    return (seq + 1) % N_COMMIT_IDS


def prev_commit_seq(seq: int) -> int:
    return (seq + N_COMMIT_IDS - 1) % N_COMMIT_IDS


class JournalMac:
    """``journal_mac``: a MAC over the sector numbers of a section's entries, spread over
    the 8-byte ``mac`` slots of its first 8 sectors (``section_mac``).  With fix_hmac the
    salt and the section number come first."""

    def __init__(self, alg: TagAlgorithm, key: bytes | None, salt: bytes | None):
        alg.check_key(key)
        self.alg = alg
        self.size = alg.digest_size
        key = bytes(key) if key else None
        self._state = alg._prime(key, salt)
        self._plain = alg._prime(key, None)
        self._salted = salt is not None

    def digest(self, data: bytes) -> bytes:
        """A MAC of ``data`` alone (``sb_mac``: the superblock's MAC has no salt)."""
        st = self._plain.copy()
        st.update(data)
        return self.alg._finish(st)

    def section(self, section: int, sector_fields: bytes) -> bytes:
        """The 64 bytes (``JOURNAL_MAC_SIZE``) for one section."""
        st = self._state.copy()
        if self._salted:
            st.update(_LE64.pack(section))
        st.update(sector_fields)
        d = self.alg._finish(st)
        if len(d) >= JOURNAL_MAC_SIZE:
            return d[:JOURNAL_MAC_SIZE]
        return d + bytes(JOURNAL_MAC_SIZE - len(d))


def first_bad_section_mac(journal, jg, mac: JournalMac, start: int, n: int) -> int | None:
    """``rw_section_mac(ic, i, false)`` for sections ``start..start+n`` (wrapping) of the
    plain journal area ``journal``: the first whose stored MAC is not ``mac``'s, or None.
    (The replay checks the sections it replays; a mismatch fails the kernel's device.)"""
    buf = np.frombuffer(memoryview(journal).cast("B"), dtype=np.uint8)
    n_entries = np.arange(jg.section_entries, dtype=np.int64)
    entry_off = ((n_entries % JOURNAL_BLOCK_SECTORS) * 512
                 + (n_entries // JOURNAL_BLOCK_SECTORS) * jg.entry_size)
    section_bytes = jg.section_sectors << SECTOR_SHIFT
    slots = (np.arange(JOURNAL_BLOCK_SECTORS, dtype=np.int64)[:, None] * 512
             + JOURNAL_SECTOR_DATA - JOURNAL_MAC_PER_SECTOR
             + np.arange(JOURNAL_MAC_PER_SECTOR, dtype=np.int64)).ravel()
    eight = np.arange(8, dtype=np.int64)
    for k in range(n):
        i = (start + k) % jg.journal_sections
        base = i * section_bytes
        want = mac.section(i, buf[(base + entry_off)[:, None] + eight].tobytes())
        if buf[base + slots].tobytes() != want[:JOURNAL_BLOCK_SECTORS * JOURNAL_MAC_PER_SECTOR]:
            return i
    return None


class JournalWriter:
    """The journal area of one open target (``geometry.journal``), kept whole in memory.

    Entry positions ``p = section * section_entries + entry`` number the entries in
    journal order; ``pos_sector[p]`` is the logical sector of the entry at ``p`` (-1 when
    unused), ``newest`` the position of each sector's newest entry not yet home."""

    def __init__(self, meta_dev: BlockDevice, geometry: Geometry, *,
                 mac: JournalMac | None = None, crypt: JournalCrypt | None = None):
        jg = geometry.journal
        self.dev = meta_dev
        self.geometry = geometry
        self.jg = jg
        self.mac = mac
        self.crypt = crypt
        self.commit_ids = tuple(crypt.commit_ids if crypt is not None else COMMIT_IDS)
        self.first_sector = geometry.journal_start_sector
        self.n_sections = jg.journal_sections
        self.section_entries = jg.section_entries
        self.total_entries = jg.entries
        self.section_bytes = jg.section_sectors << SECTOR_SHIFT
        self.spb = jg.sectors_per_block
        self.block_bytes = self.spb << SECTOR_SHIFT
        self.tag_size = jg.tag_size
        self.entry_size = jg.entry_size
        self.mem = bytearray(jg.total_sectors << SECTOR_SHIFT)
        self.np = np.frombuffer(self.mem, dtype=np.uint8)
        n = np.arange(jg.section_entries, dtype=np.int64)
        #: byte offset of entry n inside its section
        self.entry_off = ((n % JOURNAL_BLOCK_SECTORS) * 512
                          + (n // JOURNAL_BLOCK_SECTORS) * jg.entry_size)
        #: byte offset in ``mem`` of the entry at each position
        self._pos_entry = (np.arange(self.n_sections, dtype=np.int64)[:, None]
                           * self.section_bytes + self.entry_off[None, :]).ravel()
        self._entry_idx = np.arange(jg.entry_size, dtype=np.int64)
        self._sec_idx = np.arange(8, dtype=np.int64)
        self._hi_idx = np.arange(4, 8, dtype=np.int64)
        #: ``(section << 32) ^ sector`` of every journal sector (what a commit id is xored
        #: with), as (sections, section sectors)
        self._id_salt = ((np.arange(self.n_sections, dtype=np.uint64)[:, None]
                          << np.uint64(32))
                         ^ np.arange(jg.section_sectors, dtype=np.uint64)[None, :])
        #: the journal as 64-bit words; in a section's first 8 sectors, entry n is row
        #: n % 8, column n // 8 of (8, entries_per_sector, entry_size / 8) words
        self._words = self.np.view("<u8")
        #: the same, one row per section
        self._sec_words = self._words.reshape(self.n_sections, -1)
        self._ent_words = jg.entries_per_sector * (jg.entry_size >> 3)
        self._ent_word_idx = np.arange(jg.entry_size >> 3, dtype=np.int64)
        #: the word holding the last 8 bytes of each sector of a block (from its first)
        self._tail_words = np.arange(self.spb, dtype=np.int64) * 64 + 63
        self._ent_row = n % JOURNAL_BLOCK_SECTORS
        self._ent_col = n // JOURNAL_BLOCK_SECTORS
        self._lb_idx = 8 + np.arange(8 * self.spb, dtype=np.int64)
        self._tag_idx = 8 + 8 * self.spb + np.arange(self.tag_size, dtype=np.int64)
        #: byte offset in ``mem`` of the first data byte of the entry at each position
        self._pos_data = (np.arange(self.n_sections, dtype=np.int64)[:, None]
                          * self.section_bytes
                          + ((JOURNAL_BLOCK_SECTORS + np.arange(self.section_entries,
                                                                dtype=np.int64)
                              * self.spb) << SECTOR_SHIFT)[None, :]).ravel()
        #: the last 8 bytes of each sector of a block, relative to its first byte
        self._tail_idx = ((np.arange(self.spb, dtype=np.int64) << SECTOR_SHIFT)[:, None]
                          + 504 + np.arange(8, dtype=np.int64)).ravel()
        self.pos_sector = np.full(self.total_entries, -1, dtype=np.int64)
        self.newest: dict[int, int] = {}
        self.commits = 0
        self.home_writes = 0
        #: start writing sections written without FUA to the device at once (the flush
        #: that makes them durable, in the writer thread, then waits for less)
        self.write_behind = False
        #: calls of :meth:`_fill` so far (a write-home plan notes it)
        self.fills = 0
        #: the write-homes planned and not finished, oldest first: they cover the
        #: first committed sections, in order
        self.homing: list[HomePlan] = []
        self.reset_state(0, 0)

    # -- state ------------------------------------------------------------------------------
    def reset_state(self, continue_section: int, commit_seq: int) -> None:
        """After a replay: continue from ``continue_section`` with ``commit_seq``, every
        entry unused (``replay_journal``'s tail)."""
        self.commit_seq = commit_seq
        self.committed_section = self.uncommitted_section = continue_section
        self.free_section = continue_section
        self.n_committed_sections = self.n_uncommitted_sections = 0
        self.free_section_entry = 0
        self.free_sectors = self.jg.entries
        self.newest.clear()
        self.wrote_to_journal = False
        self.unflushed = False
        self.homing = []
        self._mark_unused(np.arange(self.total_entries, dtype=np.int64))

    def _mark_unused(self, positions: np.ndarray) -> None:
        """``journal_entry_set_unused`` for the entries at ``positions``."""
        self.pos_sector[positions] = -1
        self.np[(self._pos_entry[positions])[:, None] + self._hi_idx] = _UNUSED_HI

    def _section_positions(self, start: int, n: int) -> np.ndarray:
        """Entry positions of sections ``start..start+n`` (wrapping), in journal order."""
        E, total = self.section_entries, self.total_entries
        a, b = start * E, (start + n) * E
        if b <= total:
            return np.arange(a, b, dtype=np.int64)
        return np.concatenate((np.arange(a, total, dtype=np.int64),
                               np.arange(0, b - total, dtype=np.int64)))

    @property
    def has_uncommitted(self) -> bool:
        return self.n_uncommitted_sections > 0 or self.free_section_entry > 0

    @property
    def uncommitted_entries(self) -> int:
        """Entries taken and not yet committed (a part-filled section counts its used
        entries)."""
        return self.n_uncommitted_sections * self.section_entries + self.free_section_entry

    # -- disk ---------------------------------------------------------------------------------
    def read_from_disk(self, *, decrypt: bool = True) -> None:
        """The journal area into memory, decrypted (``decrypt=False``: as it is on disk,
        for a bitmap kept there)."""
        self.dev.submit(Bio.read(self.first_sector, self.mem))
        if decrypt and self.crypt is not None:
            self.crypt.decrypt_into(self.mem)

    def init_sections(self, start: int, n: int, seq: int) -> None:
        """``init_journal``: sections ``start..start+n`` (wrapping) become empty, stamped with
        ``seq``, and are written with FUA."""
        if n <= 0:
            return
        for k in range(n):
            i = (start + k) % self.n_sections
            base = i * self.section_bytes
            sec = self.np[base:base + self.section_bytes].reshape(-1, 512)
            sec[:, :JOURNAL_SECTOR_DATA] = 0
            self._stamp(i, seq)
        self._mark_unused(self._section_positions(start % self.n_sections, n))
        self.write_sections(start, n)

    def _stamp(self, section: int, seq: int, count: int = 1) -> None:
        """Every sector of sections ``section..section+count`` (not wrapping) gets the
        commit id of ``seq``."""
        if count <= 0:
            return
        a, b = section * self.section_bytes, (section + count) * self.section_bytes
        ids = self.np[a:b].view("<u8").reshape(count, -1, 64)
        np.bitwise_xor(self._id_salt[section:section + count], np.uint64(self.commit_ids[seq]),
                       out=ids[:, :, 63])

    def _write_macs(self, section: int) -> None:
        if self.mac is None:
            return
        base = section * self.section_bytes
        fields = self.np[(base + self.entry_off)[:, None] + self._sec_idx].tobytes()
        m = self.mac.section(section, fields)
        for j in range(JOURNAL_BLOCK_SECTORS):
            p = base + j * 512 + JOURNAL_SECTOR_DATA - JOURNAL_MAC_PER_SECTOR
            self.mem[p:p + JOURNAL_MAC_PER_SECTOR] = m[j * 8:(j + 1) * 8]

    def check_macs(self, start: int, n: int) -> int | None:
        """The first section of ``start..start+n`` whose stored MAC is wrong, or None."""
        if self.mac is None:
            return None
        return first_bad_section_mac(self.mem, self.jg, self.mac, start, n)

    def write_sections(self, start: int, n: int, *, fua: bool = True) -> None:
        """``write_journal``: MACs, encryption, then one FUA write (two when the range
        wraps)."""
        for k in range(n):
            self._write_macs((start + k) % self.n_sections)
        if start + n <= self.n_sections:
            self._write(start, n, fua)
        else:
            to_end = self.n_sections - start
            self._write(start, to_end, fua)
            self._write(0, n - to_end, fua)

    def _write(self, start: int, n: int, fua: bool = True) -> None:
        a, b = start * self.section_bytes, (start + n) * self.section_bytes
        sector = self.first_sector + (a >> SECTOR_SHIFT)
        data = memoryview(self.mem)[a:b]
        if self.crypt is not None:
            data = self.crypt.encrypt(data, start)
        self.dev.submit(Bio.write(sector, data, _FUA if fua else 0))
        if not fua and self.write_behind:
            self.dev.start_writeback(sector, (b - a) >> SECTOR_SHIFT)

    def make_durable(self) -> None:
        """Flush the journal device if committed sections were written without FUA."""
        if self.unflushed:
            self.dev.flush()
            self.unflushed = False

    # -- adding blocks --------------------------------------------------------------------
    def add(self, logical_sector: int, data, tags, max_blocks: int | None = None) -> int:
        """Put as many blocks of ``data`` (from ``logical_sector``) as there are free
        entries into the journal (at most ``max_blocks``); ``tags`` holds their tags (or
        None: zero tags).  Returns the number of blocks taken."""
        nb = min(len(data) // self.block_bytes, self.free_sectors)
        if max_blocks is not None:
            nb = min(nb, max_blocks)
        if nb <= 0:
            return 0
        mv = memoryview(data).cast("B")
        E, bs, ts = self.section_entries, self.block_bytes, self.tag_size
        done = 0
        while done < nb:
            p0 = self.free_section * E + self.free_section_entry
            k = min(nb - done, self.total_entries - p0)      # up to the journal's end
            self._fill(p0, k, logical_sector + done * self.spb,
                       mv[done * bs:(done + k) * bs],
                       None if tags is None else tags[done * ts:(done + k) * ts])
            done += k
            e = self.free_section_entry + k
            self.n_uncommitted_sections += e // E
            self.free_section = (self.free_section + e // E) % self.n_sections
            self.free_section_entry = e % E
        self.free_sectors -= nb
        return nb

    def _fill(self, p0: int, k: int, sector: int, data: memoryview, tags) -> None:
        """Entries ``p0..p0+k`` (not wrapping): the blocks into the journal (one copy per
        section), the entries (sector, last bytes, tag) built as rows of 64-bit words and
        placed with one assignment per section."""
        E, spb, bs, ts = self.section_entries, self.spb, self.block_bytes, self.tag_size
        sectors = sector + np.arange(k, dtype=np.int64) * spb
        self.pos_sector[p0:p0 + k] = sectors
        ent = np.zeros((k, self.entry_size >> 3), dtype="<u8")
        ent[:, 0] = sectors
        ent[:, 1:1 + spb] = np.frombuffer(data, dtype="<u8").reshape(k * spb, 64)[:, 63] \
            .reshape(k, spb)
        if tags is not None:
            t0 = 8 + 8 * spb
            ent.view(np.uint8)[:, t0:t0 + ts] = np.frombuffer(tags, dtype=np.uint8,
                                                              count=k * ts).reshape(k, ts)
        words = self._words
        i = 0
        while i < k:
            sec, e = divmod(p0 + i, E)
            c = min(k - i, E - e)
            base = sec * self.section_bytes
            d0 = base + ((JOURNAL_BLOCK_SECTORS + e * spb) << SECTOR_SHIFT)
            self.mem[d0:d0 + c * bs] = data[i * bs:(i + c) * bs]
            entries = words[base >> 3:(base >> 3) + 512].reshape(JOURNAL_BLOCK_SECTORS, 64)[
                :, :self._ent_words].reshape(JOURNAL_BLOCK_SECTORS, -1, self.entry_size >> 3)
            entries[self._ent_row[e:e + c], self._ent_col[e:e + c]] = ent[i:i + c]
            i += c
        self.newest.update(zip(range(sector, sector + k * spb, spb), range(p0, p0 + k)))
        self.fills += 1

    # -- commit -----------------------------------------------------------------------------
    def commit(self, *, pad: bool = True, durable: bool = True) -> int:
        """``integrity_commit`` in journal mode: pad, stamp, write.  Returns the number of
        sections committed.  ``pad=False`` commits the full sections only and leaves a
        part-filled one to fill on (unless it is all there is).

        ``durable=False`` writes the sections without FUA (``unflushed``): they replay if
        they reached the disk, and nothing relies on them yet; a durable commit (or
        :meth:`make_durable`, which write-home calls first) then flushes them together with
        its own, so every section is durable before any of its blocks goes home."""
        if self.free_section_entry and (pad or not self.n_uncommitted_sections):
            self.free_sectors -= self.section_entries - self.free_section_entry
            self.free_section_entry = 0
            self.free_section = (self.free_section + 1) % self.n_sections
            self.n_uncommitted_sections += 1
        n = self.n_uncommitted_sections
        if not n:
            if durable:
                self.make_durable()
            return 0
        self.wrote_to_journal = True
        start = self.uncommitted_section
        first = min(n, self.n_sections - start)
        self._stamp(start, self.commit_seq, first)
        if start + n >= self.n_sections:     # the sequence advances as the journal wraps
            self.commit_seq = next_commit_seq(self.commit_seq)
            self._stamp(0, self.commit_seq, n - first)
        if not durable:
            self.write_sections(start, n, fua=False)
            self.unflushed = True
        elif self.unflushed:
            self.write_sections(start, n, fua=False)
            self.make_durable()
        else:
            self.write_sections(start, n)
        self.uncommitted_section = (start + n) % self.n_sections
        self.n_uncommitted_sections = 0
        self.n_committed_sections += n
        self.commits += 1
        return n

    # -- reading ------------------------------------------------------------------------------
    def overlay(self, sector: int, nr_sectors: int, buf, tags: bytearray | None) -> int:
        """Copy the journal's newest version of every block of ``[sector, +nr)`` it holds
        into ``buf`` (and their tags into ``tags``).  Returns how many blocks."""
        newest = self.newest
        if not newest:
            return 0
        spb, bs, ts = self.spb, self.block_bytes, self.tag_size
        ks, ps = [], []
        for k, s in enumerate(range(sector, sector + nr_sectors, spb)):
            p = newest.get(s)
            if p is not None:
                ks.append(k)
                ps.append(p)
        if not ks:
            return 0
        out = np.frombuffer(memoryview(buf).cast("B"), dtype=np.uint8)
        kk, pp = np.array(ks, dtype=np.int64), np.array(ps, dtype=np.int64)
        blocks = out.reshape(-1, bs)
        d0 = self._pos_data[pp]
        blocks[kk] = self.np[d0[:, None] + np.arange(bs, dtype=np.int64)]
        e0 = self._pos_entry[pp]
        blocks[kk[:, None], self._tail_idx] = self.np[e0[:, None] + self._lb_idx]
        if tags is not None:
            t = np.frombuffer(tags, dtype=np.uint8).reshape(-1, ts)
            t[kk] = self.np[e0[:, None] + self._tag_idx]
        return len(ks)

    def holds_any(self, sector: int, nr_sectors: int) -> bool:
        newest = self.newest
        if not newest:
            return False
        return any(s in newest for s in range(sector, sector + nr_sectors, self.spb))

    # -- write-home -----------------------------------------------------------------------
    def write_home(self, home: Callable[[int, list, bytes], None],
                   flush: Callable[[], None]) -> int:
        """``integrity_writer``, synchronously: :meth:`plan_home`, make the sections
        durable, copy every committed block home (``home(sector, pieces, tags)`` per run),
        ``flush()``, then :meth:`finish_home`.  Returns the number of blocks written."""
        if self.homing:
            raise RuntimeError("journal: a write-home is under way")
        plan = self.plan_home()
        if plan is None:
            return 0
        self.make_durable()
        for run in plan.runs:
            home(*run)
        flush()
        self.finish_home(plan)
        return plan.blocks

    @property
    def unplanned_sections(self) -> int:
        """Committed sections that no write-home plan covers yet."""
        return self.n_committed_sections - sum(p.n_sections for p in self.homing)

    def plan_home(self) -> HomePlan | None:
        """What writing the committed sections home takes (those after the plans not yet
        finished), as ``do_journal_write``:
        numpy finds the used entries, those a newer entry in the same range makes stale
        (the kernel's ``find_newer_committed_node``: they are skipped; an entry whose newer
        version is not committed yet goes home, the newer one follows later), and where
        runs of consecutive positions and sectors break; the last bytes of the blocks are
        put back in place in the journal (``restore_last_bytes``: the sections were
        already written) so that each run goes home from there, one request per section
        it spans.

        The sections stay committed (and their entries stay where reads find them) until
        :meth:`finish_home`, which the caller runs once the runs are home and flushed;
        meanwhile new entries may fill the free sections and be committed, and more plans
        made.  None when no committed section is left to plan."""
        planned = sum(p.n_sections for p in self.homing)
        n = self.n_committed_sections - planned
        if n <= 0:
            return None
        spb, bs, E = self.spb, self.block_bytes, self.section_entries
        start = (self.committed_section + planned) % self.n_sections
        pieces = [(start, min(n, self.n_sections - start))]
        if start + n > self.n_sections:
            pieces.append((0, start + n - self.n_sections))
        ents, secs = [], []
        for s0, c in pieces:
            # the entries as rows of words, in entry order; their last bytes back in place
            e = self._entries(s0, c)
            self._data_tails(s0, c)[:] = e[:, 1:1 + spb].reshape(c, E, spb)
            ents.append(e)
            secs.append(self.pos_sector[s0 * E:(s0 + c) * E])
        if len(pieces) == 1:
            ents, secs = ents[0], secs[0]
            pos = np.arange(start * E, (start + n) * E, dtype=np.int64)
        else:
            ents, secs = np.concatenate(ents), np.concatenate(secs)
            pos = self._section_positions(start, n)
        ds = np.diff(secs)
        if secs.size and secs[0] >= 0 and (ds > 0).all():
            # the usual case: every entry used, each sector once, in increasing order
            pk, sk, ek = pos, secs.copy(), ents
            # runs break where sectors are not consecutive (or positions, at a wrap);
            # a run is cut where a section ends
            jump = ds != spb
            if len(pieces) > 1:
                jump[pieces[0][1] * E - 1] = True
            breaks = (np.flatnonzero(jump) + 1).tolist()
            cut_list = list(range(E, int(pk.size), E))
        else:
            idx = np.flatnonzero(secs >= 0)
            s_used = secs[idx]
            if s_used.size > 1 and not (np.diff(s_used) > 0).all():
                # a sector more than once: its last entry in the range goes home
                _, last = np.unique(s_used[::-1], return_index=True)
                keep = np.zeros(idx.size, dtype=bool)
                keep[idx.size - 1 - last] = True
                idx = idx[keep]
            pk, sk, ek = pos[idx], secs[idx], ents[idx]
            breaks = (np.flatnonzero((np.diff(pk) != 1) | (np.diff(sk) != spb)) + 1).tolist()
            cut_list = (np.flatnonzero(np.diff(pk // E) != 0) + 1).tolist()
        runs: list = []
        if pk.size:
            t0 = 8 + 8 * spb
            tags = ek.view(np.uint8)[:, t0:t0 + self.tag_size].tobytes()
            # a run is one request, in one piece per section it spans
            edges = [0, *breaks, int(pk.size)]
            offs = self._pos_data[pk].tolist()
            first_secs = sk.tolist()
            mem, ts = memoryview(self.mem), self.tag_size
            ci = 0
            for r0, r1 in zip(edges[:-1], edges[1:]):
                parts = []
                a = r0
                while ci < len(cut_list) and cut_list[ci] <= a:
                    ci += 1
                while ci < len(cut_list) and cut_list[ci] < r1:
                    b = cut_list[ci]
                    parts.append(mem[offs[a]:offs[a] + (b - a) * bs])
                    a = b
                    ci += 1
                parts.append(mem[offs[a]:offs[a] + (r1 - a) * bs])
                runs.append((first_secs[r0], parts, tags[r0 * ts:r1 * ts]))
        plan = HomePlan(start, n, runs, sk, pk, int(pk.size), self.unflushed,
                        not self.has_uncommitted and not self.homing, self.fills)
        self.homing.append(plan)
        return plan

    def unplan(self, plan: HomePlan) -> None:
        """Forget ``plan``, the newest plan, which was never carried out (its sections are
        planned again by the next :meth:`plan_home`; putting the last bytes back in place
        twice changes nothing)."""
        if not self.homing or self.homing[-1] is not plan:
            raise RuntimeError("journal: only the newest write-home plan can be withdrawn")
        self.homing.pop()

    def _entries(self, section: int, count: int) -> np.ndarray:
        """The entries of sections ``section..section+count`` (not wrapping), a copy, as
        rows of 64-bit words in entry order (entry n of a section is slot n // 8 of its
        metadata sector n % 8)."""
        w = self._sec_words[section:section + count, :JOURNAL_BLOCK_SECTORS * 64]
        w = w.reshape(count, JOURNAL_BLOCK_SECTORS, 64)[:, :, :self._ent_words]
        w = w.reshape(count, JOURNAL_BLOCK_SECTORS, self.jg.entries_per_sector, -1)
        return w.transpose(0, 2, 1, 3).reshape(count * self.section_entries, -1)

    def _data_tails(self, section: int, count: int) -> np.ndarray:
        """A view of the last 8 bytes (one word) of every sector of every data block of
        sections ``section..section+count`` (not wrapping), as (count, entries, spb)."""
        w = self._sec_words[section:section + count, JOURNAL_BLOCK_SECTORS * 64:]
        return w.reshape(count, self.section_entries, self.spb, 64)[:, :, :, 63]

    def finish_home(self, plan: HomePlan) -> None:
        """After ``plan``'s runs are home and flushed: its entries leave ``newest`` (unless
        a newer entry of the same sector came since), its sections become free.  Plans
        finish in the order they were made."""
        if not self.homing or plan is not self.homing[0]:
            raise RuntimeError("journal: finishing a write-home out of order")
        newest = self.newest
        if plan.clear_all and plan.fills == self.fills:
            newest.clear()          # every newest entry was in the range
        else:
            get = newest.get
            for x, p in zip(plan.sectors.tolist(), plan.positions.tolist()):
                if get(x) == p:
                    del newest[x]
        n = plan.n_sections
        self._mark_unused(self._section_positions(plan.start, n))
        self.committed_section = (plan.start + n) % self.n_sections
        self.n_committed_sections -= n
        self.free_sectors += n * self.section_entries
        self.home_writes += 1
        del self.homing[0]


@dataclasses.dataclass(eq=False)
class HomePlan:
    """One write-home (:meth:`JournalWriter.plan_home`): sections ``start..start+n_sections``
    (wrapping); ``runs`` of ``(logical sector, pieces of journal memory, tags)`` to write
    home; the ``sectors`` and journal ``positions`` of the entries that go home
    (``blocks`` of them); ``needs_flush``: some of the sections were written without FUA
    and not flushed when the plan was made."""

    start: int
    n_sections: int
    runs: list
    sectors: np.ndarray
    positions: np.ndarray
    blocks: int
    needs_flush: bool
    #: every entry in ``newest`` was in the range when planned (a finish with no entry
    #: added since clears it)
    clear_all: bool
    #: :attr:`JournalWriter.fills` when planned
    fills: int
