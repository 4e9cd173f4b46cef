"""Which tag algorithm made a dm-integrity device's tags?  The superblock does not say.

The tag of a block is ``H([salt] || le64(sector) || data)`` truncated or zero-padded to
the superblock's tag size (:mod:`.tags`).  :func:`detect_algorithm` reads a sample of
blocks with their stored tags and recomputes them with every algorithm dmkit knows —
keyed ones (``hmac(...)``, ``cmac(aes)``, keyed crc32c/xxhash64/blake2b) only when a key is
given — each with and without the superblock's salt (fix_hmac).  The candidate that
reproduces the most stored tags wins; how many it matched is the confidence.

Which blocks: written blocks (non-zero data) first, spread over the device, then zero
blocks (a wiped block's tag depends on the algorithm and sector as much as any other).
Blocks whose tag is all 0xF6 (discarded with ``allow_discards``) or all zero (never
written: ``--no-wipe``) are skipped.  The data area is read as it is on disk; committed
journal entries not yet written home leave their old block and tag there, which still
agree with each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...block import BlockDevice, read_bytes
from .geometry import DEFAULT_BUFFER_SECTORS, Geometry
from .layout import DISCARD_FILLER, SbFlags
from .reader import read_superblock
from .tags import TagFunction, algorithm, algorithm_names

__all__ = ["Candidate", "DetectResult", "detect_algorithm"]

#: how many places of the device are looked at for sample blocks
_WINDOWS = 64
#: sectors read per window
_WINDOW_SECTORS = 64


@dataclass(frozen=True)
class Candidate:
    algorithm: str          # the kernel's name
    keyed: bool
    salted: bool            # the superblock's salt mixed in (fix_hmac)
    matched: int


@dataclass
class DetectResult:
    tag_size: int
    block_size: int
    superblock_fix_hmac: bool
    sampled: int = 0
    data_blocks: int = 0
    zero_blocks: int = 0
    skipped_discarded: int = 0
    skipped_blank: int = 0
    #: every candidate that matched at least one block, best first
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def best(self) -> Candidate | None:
        """The winner, if it matches more than half of the sampled blocks."""
        if not self.candidates:
            return None
        c = self.candidates[0]
        return c if 2 * c.matched > self.sampled else None

    @property
    def ambiguous(self) -> bool:
        return (len(self.candidates) > 1
                and self.candidates[1].matched == self.candidates[0].matched)

    def as_dict(self, device: str | None = None) -> dict:
        best = self.best
        d = {"device": device} if device is not None else {}
        d.update({
            "algorithm": best.algorithm if best else None,
            "keyed": best.keyed if best else None,
            "fix_hmac": best.salted if best else None,
            "matched": best.matched if best else 0,
            "sampled": self.sampled,
            "data_blocks": self.data_blocks,
            "zero_blocks": self.zero_blocks,
            "skipped_discarded": self.skipped_discarded,
            "skipped_blank": self.skipped_blank,
            "tag_size": self.tag_size,
            "block_size": self.block_size,
            "superblock_fix_hmac": self.superblock_fix_hmac,
            "ambiguous": self.ambiguous,
            "candidates": [{"algorithm": c.algorithm, "keyed": c.keyed, "fix_hmac": c.salted,
                            "matched": c.matched} for c in self.candidates],
        })
        return d


def _samples(data_dev: BlockDevice, meta_dev: BlockDevice, geo: Geometry, max_samples: int,
             res: DetectResult) -> list[tuple[int, bytes, bytes]]:
    """(logical sector, block, stored tag) of the blocks to test."""
    provided = geo.provided_data_sectors
    spb = geo.sectors_per_block
    bs, ts = geo.block_size, geo.tag_size
    window = max(_WINDOW_SECTORS // spb * spb, spb)
    if provided > window:
        starts = sorted({min(provided - window, (provided * k // _WINDOWS) // spb * spb)
                         for k in range(_WINDOWS)})
    else:
        starts = [0]
    want_data = max(1, max_samples * 3 // 4)
    data, zero = [], []
    blank_tag, filler = bytes(ts), bytes([DISCARD_FILLER]) * ts
    seen = set()
    for start in starts:
        n = min(window, provided - start)
        for ext in geo.extents(start, n):
            if ext.logical_sector in seen:
                continue
            seen.add(ext.logical_sector)
            blocks = data_dev.read(ext.data_sector, ext.nr_sectors)
            tags = read_bytes(meta_dev, ext.tag_offset, ext.nr_blocks * ts)
            for k in range(ext.nr_blocks):
                tag = bytes(tags[k * ts:(k + 1) * ts])
                block = bytes(blocks[k * bs:(k + 1) * bs])
                sector = ext.logical_sector + k * spb
                if tag == filler:
                    res.skipped_discarded += 1
                elif tag == blank_tag:
                    res.skipped_blank += 1
                elif block.count(0) == bs:
                    zero.append((sector, block, tag))
                else:
                    data.append((sector, block, tag))
    # spread the chosen ones over the device rather than taking the first
    def spread(items, n):
        if len(items) <= n:
            return items
        return [items[i * len(items) // n] for i in range(n)]
    chosen_data = spread(data, want_data)
    chosen_zero = spread(zero, max_samples - len(chosen_data))
    res.data_blocks, res.zero_blocks = len(chosen_data), len(chosen_zero)
    res.sampled = len(chosen_data) + len(chosen_zero)
    return chosen_data + chosen_zero


def _candidates(key: bytes | None):
    """(kernel name, key or None) of every algorithm worth trying."""
    for name in algorithm_names():
        alg = algorithm(name)
        if alg.key != "required":
            yield name, None
        if key is not None and alg.key != "none":
            try:
                alg.check_key(key)
            except ValueError:
                continue
            yield name, key


def detect_algorithm(data_dev: BlockDevice, meta_dev: BlockDevice | None = None, *,
                     key: bytes | None = None, start_sector: int = 0,
                     buffer_sectors: int = DEFAULT_BUFFER_SECTORS,
                     max_samples: int = 64) -> DetectResult:
    """Test every candidate algorithm on up to ``max_samples`` blocks of the device."""
    md = meta_dev if meta_dev is not None else data_dev
    sb = read_superblock(md, start_sector)
    geo = Geometry.from_superblock(sb, data_dev.nr_sectors,
                                   meta_dev.nr_sectors if meta_dev is not None else None,
                                   start_sector=start_sector, buffer_sectors=buffer_sectors,
                                   device=md.name)
    res = DetectResult(tag_size=sb.integrity_tag_size, block_size=sb.block_size,
                       superblock_fix_hmac=sb.has(SbFlags.FIXED_HMAC))
    samples = _samples(data_dev, md, geo, max_samples, res)
    if not samples:
        return res
    found: list[Candidate] = []
    for name, k in _candidates(key):
        digest = algorithm(name).digest_size
        for salted in (True, False) if res.superblock_fix_hmac else (False,):
            tf = TagFunction(name, key=k, tag_size=sb.integrity_tag_size,
                             block_size=sb.block_size, salt=sb.salt if salted else None)
            matched = 0
            for sector, block, tag in samples:
                if digest < len(tag) and tag[digest:].count(0) != len(tag) - digest:
                    continue  # a shorter digest is zero-padded
                if tf.tag(block, sector) == tag:
                    matched += 1
            if matched:
                found.append(Candidate(name, k is not None, salted, matched))
    # most matches first; on a tie prefer the superblock's salting, then unkeyed
    found.sort(key=lambda c: (-c.matched, c.salted != res.superblock_fix_hmac, c.keyed,
                              c.algorithm))
    res.candidates = found
    return res

