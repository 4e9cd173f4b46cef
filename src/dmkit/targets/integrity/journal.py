"""Reading a dm-integrity journal: what the kernel would replay, and the bitmap.

Upstream: ``replay_journal``, ``do_journal_write`` (with ``from_replay``),
``find_commit_seq``, ``dm_integrity_commit_id`` and ``init_journal`` in
``drivers/md/dm-integrity.c`` (Linux 6.1).  This module only *reads*: it decides, exactly as
the kernel's replay does, which journal sections are committed and which entries a replay
would copy home, and returns them.  Writing them back (a real replay) belongs with the
write path.

How the kernel decides (restated):

1. Every 512-byte journal sector ends with a commit id, ``commit_ids[seq] ^ ((section <<
   32) ^ sector)`` for one of four sequence numbers.  A sector whose id matches none makes
   the whole journal unreadable: the kernel then *clears* it and replays nothing.
2. From which sequence numbers occur, it finds the first unused one; the one before it is
   the last used, the one before that the sequence wanted for replay.  Replay starts after
   the last section written with the last used sequence, and runs while every sector of a
   section carries the wanted id (the sequence advances when it wraps around the end).
3. If every entry of the whole journal is unused, or the sequence pattern says the journal
   was cleared, nothing is replayed.
4. Replayed entries go home in journal order (later entries win); entries whose sector is
   past the provided size, or in progress (sector high word 0xFFFFFFFE), are dropped.  With
   an internal hash each entry's tag is checked against its data first; a mismatch, like a
   misaligned sector, fails the device.

In bitmap mode (``SB_FLAG_DIRTY_BITMAP``) the journal area holds instead a bitmap of
regions whose tags may be stale, one bit per ``2**log2_blocks_per_bitmap_bit`` blocks,
bits in little-endian order.
"""

from __future__ import annotations

import enum
import errno as _errno
import struct
from dataclasses import dataclass, field

import numpy as np

from ...block import BlockDevice
from ...errors import DmkitError
from .geometry import BITMAP_BLOCK_SIZE, Geometry
from .layout import COMMIT_IDS, N_COMMIT_IDS, JournalEntry, SbFlags, commit_id

__all__ = [
    "JournalStatus",
    "ReplayEntry",
    "JournalScan",
    "UnreplayedJournalError",
    "read_journal_area",
    "scan_journal",
    "dirty_bitmap_ranges",
]

_U64 = struct.Struct("<Q")


class UnreplayedJournalError(DmkitError, OSError):
    """The device holds committed journal entries (or a dirty bitmap) that have not
    reached their home blocks: reading the data area alone would be out of date."""

    default_errno = _errno.EUCLEAN


class JournalStatus(enum.Enum):
    #: nothing to replay (a cleanly closed device)
    EMPTY = "empty"
    #: committed sections hold entries the kernel would copy home on the next load
    REPLAY_NEEDED = "replay-needed"
    #: a commit id matches no sequence (torn, encrypted, or not a journal): the kernel
    #: clears such a journal without replaying it
    UNREADABLE = "unreadable"
    #: the journal area is a dirty bitmap (bitmap mode, not closed cleanly)
    DIRTY_BITMAP = "dirty-bitmap"


@dataclass(frozen=True)
class ReplayEntry:
    """One block a replay would write home: its data (last bytes restored) and tag."""

    logical_sector: int
    section: int
    entry: int
    data: bytes
    tag: bytes


@dataclass(frozen=True)
class JournalScan:
    status: JournalStatus
    message: str
    #: which of the four commit sequences occur
    used_commit_seqs: tuple[bool, ...] = ()
    write_start: int = 0
    write_sections: int = 0
    #: in replay order (later entries for the same sector win)
    entries: tuple[ReplayEntry, ...] = ()
    #: entries in the replayed sections that replay drops (past the end, in progress)
    dropped_entries: int = 0
    #: bitmap mode: dirty (start_sector, nr_sectors) ranges
    dirty_ranges: tuple[tuple[int, int], ...] = field(default=())
    #: What the kernel does after the replay (``replay_journal``'s tail), for the table
    #: target: every entry of the journal unused, or the sequence pattern says cleared
    #: (the kernel's ``journal_empty``) ...
    journal_empty: bool = False
    #: ... the number of consecutive sections from ``write_start`` that carry the wanted
    #: commit sequence (``write_sections`` before the empty case zeroes it above) ...
    consistent_sections: int = 0
    #: ... the last commit sequence in use (``last_used``) ...
    last_used_seq: int = 0
    #: ... and the wanted sequence where that walk stopped (``want_commit_seq``).  With
    #: ``consistent_sections == journal_sections`` the kernel continues the journal from
    #: ``write_start`` with this sequence; otherwise it clears the journal.
    resume_commit_seq: int = 0

    @property
    def replay_needed(self) -> bool:
        return self.status is JournalStatus.REPLAY_NEEDED

    def overlay(self) -> dict[int, ReplayEntry]:
        """Logical sector -> the entry a replay leaves there (the last one)."""
        return {e.logical_sector: e for e in self.entries}


def read_journal_area(meta_dev: BlockDevice, geometry: Geometry) -> bytearray:
    """The raw journal (or bitmap) area from the metadata device."""
    return meta_dev.read(geometry.journal_start_sector, geometry.journal_sectors)


def _commit_seq(cid: int, section: int, sector: int, commit_ids) -> int:
    for k in range(N_COMMIT_IDS):
        if commit_id(section, sector, k, commit_ids) == cid:
            return k
    return -1


def scan_journal(raw, geometry: Geometry, commit_ids=COMMIT_IDS) -> JournalScan:
    """Decide, as the kernel's ``replay_journal`` does, what the journal in ``raw`` (the
    whole journal area) would replay.  Tags are not checked here (see the reader)."""
    sb = geometry.superblock
    jg = geometry.journal
    mv = memoryview(raw).cast("B")
    if len(mv) < jg.total_sectors * 512:
        raise ValueError("journal area truncated")
    if sb.has(SbFlags.DIRTY_BITMAP):
        ranges = dirty_bitmap_ranges(mv, geometry)
        what = (f"{len(ranges)} dirty region(s)" if ranges else "no dirty regions")
        return JournalScan(JournalStatus.DIRTY_BITMAP,
                           f"the journal area holds a dirty bitmap (bitmap mode, not closed "
                           f"cleanly) with {what}", dirty_ranges=tuple(ranges))
    nsec, ssec = jg.journal_sections, jg.section_sectors
    # The commit id of every sector: one numpy gather instead of a Python loop per sector.
    tails = np.frombuffer(mv[:nsec * ssec * 512], dtype="<u8").reshape(nsec * ssec, 64)[:, 63]
    sec_idx = np.arange(nsec * ssec, dtype=np.uint64)
    section_of = sec_idx // np.uint64(ssec)
    sector_of = sec_idx % np.uint64(ssec)
    salt = (section_of << np.uint64(32)) ^ sector_of
    seq_of = np.full(nsec * ssec, -1, dtype=np.int64)
    for k in range(N_COMMIT_IDS):
        seq_of[(tails ^ salt) == np.uint64(commit_ids[k])] = k
    bad = np.flatnonzero(seq_of < 0)
    if bad.size:
        i, j = divmod(int(bad[0]), ssec)
        return JournalScan(JournalStatus.UNREADABLE,
                           f"journal commit id at section {i} sector {j} matches no commit "
                           "sequence (torn write, encrypted journal, or not a journal); the "
                           "kernel would clear the journal without replaying it")
    used = [False] * N_COMMIT_IDS
    max_section = [0] * N_COMMIT_IDS
    seq_by_section = seq_of.reshape(nsec, ssec)
    for k in range(N_COMMIT_IDS):
        rows = np.flatnonzero(np.any(seq_by_section == k, axis=1))
        if rows.size:
            used[k] = True
            max_section[k] = int(rows[-1])
    journal_empty = not _any_entry_used(mv, jg)

    if not used[N_COMMIT_IDS - 1]:
        unused = N_COMMIT_IDS - 1
        while unused and not used[unused - 1]:
            unused -= 1
    else:
        unused = next((k for k in range(N_COMMIT_IDS) if not used[k]), N_COMMIT_IDS)
        if unused == N_COMMIT_IDS:
            return JournalScan(JournalStatus.UNREADABLE,
                               "all four journal commit sequences are in use; the kernel "
                               "would clear the journal without replaying it",
                               used_commit_seqs=tuple(used))
    last_used = (unused + N_COMMIT_IDS - 1) % N_COMMIT_IDS
    want = (last_used + N_COMMIT_IDS - 1) % N_COMMIT_IDS
    if not used[want] and used[(want + N_COMMIT_IDS - 1) % N_COMMIT_IDS]:
        journal_empty = True
    write_start = max_section[last_used] + 1
    if write_start >= nsec:
        want = (want + 1) % N_COMMIT_IDS
        write_start -= nsec
    i = write_start
    write_sections = 0
    while write_sections < nsec:
        if not np.all(seq_by_section[i] == want):
            break  # a torn or older section: replay stops here
        write_sections += 1
        i += 1
        if i >= nsec:
            want = (want + 1) % N_COMMIT_IDS
            i -= nsec
    tail = dict(journal_empty=journal_empty, consistent_sections=write_sections,
                last_used_seq=last_used, resume_commit_seq=want)
    if journal_empty or write_sections == 0:
        return JournalScan(JournalStatus.EMPTY, "the journal holds nothing to replay",
                           used_commit_seqs=tuple(used), write_start=write_start,
                           write_sections=write_sections if not journal_empty else 0, **tail)
    entries, dropped = _replay_entries(mv, geometry, write_start, write_sections)
    if not entries:
        return JournalScan(JournalStatus.EMPTY,
                           "the committed journal sections hold no usable entries",
                           used_commit_seqs=tuple(used), write_start=write_start,
                           write_sections=write_sections, dropped_entries=dropped, **tail)
    return JournalScan(JournalStatus.REPLAY_NEEDED,
                       f"the journal holds {len(entries)} committed block(s) in "
                       f"{write_sections} section(s) from section {write_start} that have "
                       "not been written home; the journal must be replayed",
                       used_commit_seqs=tuple(used), write_start=write_start,
                       write_sections=write_sections, entries=tuple(entries),
                       dropped_entries=dropped, **tail)


def _any_entry_used(mv: memoryview, jg) -> bool:
    """Whether any entry of the whole journal is not marked unused (sector_hi != ~0)."""
    n = np.arange(jg.section_entries)
    in_section = (n % 8) * 512 + (n // 8) * jg.entry_size + 4
    pos = (np.arange(jg.journal_sections)[:, None] * (jg.section_sectors * 512)
           + in_section[None, :]).ravel()
    buf = np.frombuffer(mv, dtype=np.uint8)
    hi = (buf[pos].astype(np.uint32) | (buf[pos + 1].astype(np.uint32) << 8)
          | (buf[pos + 2].astype(np.uint32) << 16) | (buf[pos + 3].astype(np.uint32) << 24))
    return bool(np.any(hi != 0xFFFFFFFF))


def _entry(mv: memoryview, jg, section: int, n: int) -> JournalEntry:
    rel_sector, off = jg.entry_position(n)
    pos = (section * jg.section_sectors + rel_sector) * 512 + off
    return JournalEntry.from_bytes(mv[pos:pos + jg.entry_size], jg.sectors_per_block,
                                   jg.tag_size)


def _replay_entries(mv, geometry: Geometry, write_start: int, write_sections: int):
    jg = geometry.journal
    spb = jg.sectors_per_block
    provided = geometry.provided_data_sectors
    out: list[ReplayEntry] = []
    dropped = 0
    i = write_start
    for _ in range(write_sections):
        for j in range(jg.section_entries):
            je = _entry(mv, jg, i, j)
            if je.is_unused:
                continue
            sec = je.sector
            if sec >= provided:  # also catches in-progress entries
                dropped += 1
                continue
            if sec & (spb - 1):
                raise UnreplayedJournalError(
                    f"journal entry {j} of section {i} has sector {sec}, not at a "
                    f"{geometry.block_size}-byte block (the kernel fails the device)")
            d0 = (i * jg.section_sectors + jg.entry_data_sector(j)) * 512
            block = bytearray(mv[d0:d0 + spb * 512])
            for s in range(spb):
                block[s * 512 + 504:(s + 1) * 512] = je.last_bytes[s]
            out.append(ReplayEntry(sec, i, j, bytes(block), je.tag))
        i = (i + 1) % jg.journal_sections
    return out, dropped


def dirty_bitmap_ranges(raw, geometry: Geometry) -> list[tuple[int, int]]:
    """Bitmap mode: the (start_sector, nr_sectors) ranges whose bits are set, clipped to
    the provided size."""
    sb = geometry.superblock
    shift = sb.log2_sectors_per_block + sb.log2_blocks_per_bitmap_bit
    provided = geometry.provided_data_sectors
    n_bits = (provided + (1 << shift) - 1) >> shift
    n_blocks = -(-n_bits // (BITMAP_BLOCK_SIZE * 8))
    mv = memoryview(raw).cast("B")[:n_blocks * BITMAP_BLOCK_SIZE]
    bits = np.unpackbits(np.frombuffer(mv, dtype=np.uint8), bitorder="little")[:n_bits]
    ranges: list[tuple[int, int]] = []
    if not bits.any():
        return ranges
    padded = np.concatenate(([0], bits.astype(np.int8), [0]))
    edges = np.flatnonzero(np.diff(padded))
    for a, b in zip(edges[::2], edges[1::2]):
        start = int(a) << shift
        end = min(int(b) << shift, provided)
        ranges.append((start, end - start))
    return ranges
