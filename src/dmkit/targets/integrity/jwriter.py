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
written home.  A commit pads the current section (its unused entries stay unused), stamps
every sector of every uncommitted section with ``commit_id(section, sector, commit_seq)``
(the sequence advances when the journal wraps) and writes those sections with FUA.
Write-home copies each committed block and its tag to their home places, then flushes;
only then are the sections free again, so a crash never loses a committed block.

``newest`` maps a logical sector to the journal position (``section * entries + entry``)
of its newest entry not yet written home: reads take blocks from there.
"""

from __future__ import annotations

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

__all__ = ["JournalWriter", "JournalMac", "first_bad_section_mac", "next_commit_seq",
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
    """The journal area of one open target (``geometry.journal``), kept whole in memory."""

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
        self.section_bytes = jg.section_sectors << SECTOR_SHIFT
        self.spb = jg.sectors_per_block
        self.block_bytes = self.spb << SECTOR_SHIFT
        self.tag_size = jg.tag_size
        self.mem = bytearray(jg.total_sectors << SECTOR_SHIFT)
        self.np = np.frombuffer(self.mem, dtype=np.uint8)
        n = np.arange(jg.section_entries, dtype=np.int64)
        #: byte offset of entry n inside its section
        self.entry_off = (n % JOURNAL_BLOCK_SECTORS) * 512 + (n // JOURNAL_BLOCK_SECTORS) * jg.entry_size
        self._lb_idx = 8 + np.arange(8 * self.spb, dtype=np.int64)
        self._tag_idx = 8 + 8 * self.spb + np.arange(self.tag_size, dtype=np.int64)
        self._sec_idx = np.arange(8, dtype=np.int64)
        self._sector_nr = np.arange(jg.section_sectors, dtype=np.uint64)
        self.newest: dict[int, int] = {}
        self.commits = 0
        self.home_writes = 0
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
        self._mark_all_unused()

    def _mark_all_unused(self) -> None:
        for i in range(self.n_sections):
            base = i * self.section_bytes + self.entry_off + 4
            idx = base[:, None] + np.arange(4)
            self.np[idx] = _UNUSED_HI

    @property
    def has_uncommitted(self) -> bool:
        return self.n_uncommitted_sections > 0 or self.free_section_entry > 0

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
            idx = (base + self.entry_off + 4)[:, None] + np.arange(4)
            self.np[idx] = _UNUSED_HI
        self.write_sections(start, n)

    def _stamp(self, section: int, seq: int) -> None:
        base = section * self.section_bytes
        ids = self.np[base:base + self.section_bytes].view("<u8").reshape(-1, 64)
        salt = (np.uint64(section) << np.uint64(32)) ^ self._sector_nr
        ids[:, 63] = np.uint64(self.commit_ids[seq]) ^ salt

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

    def write_sections(self, start: int, n: int) -> None:
        """``write_journal``: MACs, encryption, then one FUA write (two when the range
        wraps)."""
        for k in range(n):
            self._write_macs((start + k) % self.n_sections)
        if start + n <= self.n_sections:
            self._write(start, n)
        else:
            to_end = self.n_sections - start
            self._write(start, to_end)
            self._write(0, n - to_end)

    def _write(self, start: int, n: int) -> None:
        a, b = start * self.section_bytes, (start + n) * self.section_bytes
        sector = self.first_sector + (a >> SECTOR_SHIFT)
        data = memoryview(self.mem)[a:b]
        if self.crypt is not None:
            data = self.crypt.encrypt(data, start)
        self.dev.submit(Bio.write(sector, data, _FUA))

    # -- adding blocks --------------------------------------------------------------------
    def add(self, logical_sector: int, data, tags) -> int:
        """Put as many blocks of ``data`` (from ``logical_sector``) as there are free
        entries into the journal; ``tags`` holds their tags (or None: zero tags).
        Returns the number of blocks taken."""
        nb = min(len(data) // self.block_bytes, self.free_sectors)
        if nb <= 0:
            return 0
        mv = memoryview(data).cast("B")
        done = 0
        while done < nb:
            i, e0 = self.free_section, self.free_section_entry
            k = min(nb - done, self.section_entries - e0)
            self._fill(i, e0, k, logical_sector + done * self.spb,
                       mv[done * self.block_bytes:(done + k) * self.block_bytes],
                       None if tags is None else
                       tags[done * self.tag_size:(done + k) * self.tag_size])
            done += k
            e0 += k
            if e0 == self.section_entries:
                e0 = 0
                self.free_section = (i + 1) % self.n_sections
                self.n_uncommitted_sections += 1
            self.free_section_entry = e0
        self.free_sectors -= nb
        return nb

    def _fill(self, section: int, e0: int, k: int, sector: int, data: memoryview, tags) -> None:
        base = section * self.section_bytes
        E = base + self.entry_off[e0:e0 + k]
        d0 = base + ((JOURNAL_BLOCK_SECTORS + e0 * self.spb) << SECTOR_SHIFT)
        self.mem[d0:d0 + k * self.block_bytes] = data
        npd = np.frombuffer(data, dtype=np.uint8).reshape(k * self.spb, 512)
        self.np[E[:, None] + self._lb_idx] = npd[:, 504:].reshape(k, 8 * self.spb)
        if tags is None:
            self.np[E[:, None] + self._tag_idx] = 0
        else:
            self.np[E[:, None] + self._tag_idx] = \
                np.frombuffer(tags, dtype=np.uint8).reshape(k, self.tag_size)
        sectors = sector + np.arange(k, dtype=np.uint64) * np.uint64(self.spb)
        self.np[E[:, None] + self._sec_idx] = sectors.astype("<u8").view(np.uint8).reshape(k, 8)
        pos0 = section * self.section_entries + e0
        self.newest.update(zip(range(sector, sector + k * self.spb, self.spb),
                               range(pos0, pos0 + k)))

    # -- commit -----------------------------------------------------------------------------
    def commit(self) -> int:
        """``integrity_commit`` in journal mode: pad, stamp, write.  Returns the number of
        sections committed."""
        if self.free_section_entry:
            self.free_sectors -= self.section_entries - self.free_section_entry
            self.free_section_entry = 0
            self.free_section = (self.free_section + 1) % self.n_sections
            self.n_uncommitted_sections += 1
        n = self.n_uncommitted_sections
        if not n:
            return 0
        self.wrote_to_journal = True
        start = self.uncommitted_section
        i = start
        for _ in range(n):
            self._stamp(i, self.commit_seq)
            i += 1
            if i >= self.n_sections:
                self.commit_seq = next_commit_seq(self.commit_seq)
                i = 0
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
        found = 0
        out = memoryview(buf).cast("B")
        for k, s in enumerate(range(sector, sector + nr_sectors, spb)):
            p = newest.get(s)
            if p is None:
                continue
            i, e = divmod(p, self.section_entries)
            base = i * self.section_bytes
            d0 = base + ((JOURNAL_BLOCK_SECTORS + e * spb) << SECTOR_SHIFT)
            blk = out[k * bs:(k + 1) * bs]
            blk[:] = self.mem[d0:d0 + bs]
            eo = base + int(self.entry_off[e])
            for q in range(spb):
                blk[q * 512 + 504:(q + 1) * 512] = self.mem[eo + 8 + 8 * q:eo + 16 + 8 * q]
            if tags is not None:
                t0 = eo + 8 + 8 * spb
                tags[k * ts:(k + 1) * ts] = self.mem[t0:t0 + ts]
            found += 1
        return found

    def holds_any(self, sector: int, nr_sectors: int) -> bool:
        newest = self.newest
        if not newest:
            return False
        return any(s in newest for s in range(sector, sector + nr_sectors, self.spb))

    # -- write-home -----------------------------------------------------------------------
    def write_home(self, home: Callable[[int, bytes, bytes], None],
                   flush: Callable[[], None]) -> int:
        """``integrity_writer``: copy every committed block home (``home(sector, data,
        tags)`` per run of consecutive blocks), ``flush()``, then free the sections.
        Returns the number of blocks written.

        Per section, numpy finds the used entries, those a newer committed entry makes
        stale (the kernel's ``find_newer_committed_node``: they are skipped), and where runs
        of consecutive sectors break; runs that continue into the next section are joined,
        so a large write goes home as one request."""
        n = self.n_committed_sections
        if not n:
            return 0
        spb = self.spb
        newest = self.newest
        pending: list[tuple[int, int, list, list]] = []   # sector, blocks, data, tags
        done: list[tuple[list, np.ndarray]] = []
        for k in range(n):
            i = (self.committed_section + k) % self.n_sections
            base = i * self.section_bytes
            E = base + self.entry_off
            arr = self.np[E[:, None] + self._sec_idx].copy().view("<u8").ravel()
            used = np.flatnonzero((arr >> np.uint64(32)) != np.uint64(0xFFFFFFFF))
            if not used.size:
                continue
            secs = arr[used].tolist()
            pos = used + i * self.section_entries
            q = np.array([-1 if x is None else x for x in map(newest.get, secs)],
                         dtype=np.int64)
            done.append((secs, q == pos))
            q_off = (q // self.section_entries - self.committed_section) % self.n_sections
            keep = ~((q >= 0) & (q != pos) & (q_off < n))
            j = used[keep]
            if not j.size:
                continue
            sj = arr[j].astype(np.int64)
            breaks = np.flatnonzero((np.diff(j) != 1) | (np.diff(sj) != spb)) + 1
            for r0, r1 in zip([0, *breaks.tolist()], [*breaks.tolist(), len(j)]):
                j0, cnt, sector = int(j[r0]), r1 - r0, int(sj[r0])
                data, tags = self._run_data(base, j0, cnt)
                if pending and pending[-1][0] + pending[-1][1] * spb == sector:
                    pending[-1][2].append(data)
                    pending[-1][3].append(tags)
                    pending[-1] = (pending[-1][0], pending[-1][1] + cnt, pending[-1][2],
                                   pending[-1][3])
                else:
                    pending.append((sector, cnt, [data], [tags]))
        written = 0
        for sector, cnt, datas, tags in pending:
            data = datas[0] if len(datas) == 1 else np.concatenate(datas)
            home(sector, data.data, b"".join(tags))
            written += cnt
        flush()
        for secs, current in done:
            for s in np.asarray(secs, dtype=object)[current].tolist():
                del newest[s]
        for k in range(n):
            i = (self.committed_section + k) % self.n_sections
            idx = (i * self.section_bytes + self.entry_off + 4)[:, None] + np.arange(4)
            self.np[idx] = _UNUSED_HI
        self.committed_section = (self.committed_section + n) % self.n_sections
        self.n_committed_sections = 0
        self.free_sectors += n * self.section_entries
        self.home_writes += 1
        return written

    def _run_data(self, base: int, j0: int, k: int):
        """The home data (last bytes restored) and the tags of entries ``j0..j0+k``."""
        spb, bs = self.spb, self.block_bytes
        d0 = base + ((JOURNAL_BLOCK_SECTORS + j0 * spb) << SECTOR_SHIFT)
        data = self.np[d0:d0 + k * bs].copy()
        E = base + self.entry_off[j0:j0 + k]
        data.reshape(k * spb, 512)[:, 504:] = self.np[E[:, None] + self._lb_idx].reshape(k * spb, 8)
        return data, self.np[E[:, None] + self._tag_idx].tobytes()
