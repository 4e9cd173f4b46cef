"""flakey: a linear mapping that is unreliable for part of every period.

Kernel doc: Documentation/admin-guide/device-mapper/dm-flakey.rst.  Semantics follow
drivers/md/dm-flakey.c as of Linux 6.x (target version 1.5.0 with ``error_reads`` and the
random corruption features): in the down interval a bio with no feature to handle it
fails; a flush counts as a write, as it does there (an empty ``REQ_OP_WRITE|REQ_PREFLUSH``).
"""

from __future__ import annotations

import random
import time
from typing import Callable, Sequence

from ..block import Bio
from ..block.bio import OP_FLUSH, OP_READ, OP_WRITE
from ..dm.args import ArgReader, FeatureSet
from ..dm.table import join_args
from ..dm.target import Target
from ..errors import BlockIOError

__all__ = ["FlakeyTarget"]

PROBABILITY_BASE = 1_000_000_000
_U32_MAX = 0xFFFF_FFFF
_MAX_FEATURE_ARGS = 11
_FEATURES = ("error_reads", "drop_writes", "error_writes", "corrupt_bio_byte",
             "random_read_corrupt", "random_write_corrupt")


class FlakeyTarget(Target):
    """flakey <dev path> <offset> <up interval> <down interval> [<num_features> [<feature arguments>]]

    Available for ``up interval`` seconds from construction, then unreliable for ``down
    interval`` seconds, and so on.  Features (any order, names case-insensitive):
    ``error_reads``, ``drop_writes``, ``error_writes``, ``corrupt_bio_byte <Nth_byte> <r|w>
    <value> <flags>``, ``random_read_corrupt <p>``, ``random_write_corrupt <p>`` (``p`` out
    of 1000000000).  Without an effective feature the down interval fails all I/O, and the
    table reads back ``2 error_reads error_writes``, as the kernel prints it.

    ``clock`` (seconds, monotonic) and ``rng`` (a ``random.Random``) are injectable;
    assigning ``clock`` restarts the up/down cycle at the new clock's current time.
    """

    name = "flakey"
    version = (1, 5, 0)
    passes_crypto = True
    num_flush_bios = 1

    def __init__(self, resolver, start_sector: int, nr_sectors: int, args: Sequence[str],
                 *, read_only: bool = False, clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None):
        super().__init__(resolver, start_sector, nr_sectors, args, read_only=read_only)
        self.clock = clock
        self.rng = rng if rng is not None else random.Random()
        self.error_reads = self.drop_writes = self.error_writes = False
        self.corrupt_bio_byte = 0  # 1-based; 0 means the feature is off
        self.corrupt_bio_rw = OP_READ
        self.corrupt_bio_value = 0
        self.corrupt_bio_flags = 0
        self.random_read_corrupt = self.random_write_corrupt = 0
        self.dropped_writes = self.errored = self.corrupted = 0

        r = ArgReader(self.name, args)
        if len(args) < 4:
            raise r.error(f"expected <dev path> <offset> <up interval> <down interval> "
                          f"[<num_features> [<feature arguments>]], got {len(args)} arguments")
        self.dev_spec = r.shift("device path")
        self.offset = r.uint("device sector")
        self.up_interval = r.uint("up interval", 0, _U32_MAX)
        self.down_interval = r.uint("down interval", 0, _U32_MAX)
        period = self.up_interval + self.down_interval
        if period == 0:
            raise r.error("total (up + down) interval is zero")
        if period > _U32_MAX:
            raise r.error(f"up + down interval {period} overflows 32 bits")
        self._parse_features(r)
        r.done()
        self.dev = self.get_device(self.dev_spec)
        try:
            self.check_within(self.dev, self.offset, nr_sectors, "device")
        except BaseException:
            self.close()
            raise

    def _parse_features(self, r: ArgReader) -> None:
        g = r.group("feature arguments")
        if g.remaining > _MAX_FEATURE_ARGS:
            raise r.error(f"invalid number of feature arguments {g.remaining}: "
                          f"must be in 0..{_MAX_FEATURE_ARGS}")
        seen = FeatureSet(g, [frozenset({"drop_writes", "error_writes"})])
        while g.remaining:
            word = g.shift("feature")
            feature = word.lower()
            if feature not in _FEATURES:
                raise g.error(f"unknown feature {word!r}")
            seen.add(feature)
            if feature == "corrupt_bio_byte":
                if g.remaining < 4:
                    raise g.error("feature 'corrupt_bio_byte' needs 4 arguments: "
                                  "<Nth_byte> <r|w> <value> <flags>")
                self.corrupt_bio_byte = g.uint("corrupt_bio_byte byte number", 1, _U32_MAX)
                direction = g.shift("corrupt_bio_byte direction")
                if direction.lower() not in ("r", "w"):
                    raise g.error(f"invalid corrupt_bio_byte direction {direction!r}: "
                                  "must be r or w")
                self.corrupt_bio_rw = OP_WRITE if direction.lower() == "w" else OP_READ
                self.corrupt_bio_value = g.uint("corrupt_bio_byte value", 0, 255)
                self.corrupt_bio_flags = g.uint("corrupt_bio_byte flags", 0, _U32_MAX)
            elif feature.startswith("random_"):
                if not g.remaining:
                    raise g.error(f"feature {feature!r} needs a <probability>")
                setattr(self, feature, g.uint(f"{feature} probability", 0, PROBABILITY_BASE))
            else:
                setattr(self, feature, True)
        self._check_combinations(r)

    def _check_combinations(self, r: ArgReader) -> None:
        # The kernel checks the effective settings: a zero probability enables nothing.
        corrupts_writes = ((self.corrupt_bio_byte and self.corrupt_bio_rw is OP_WRITE)
                           or self.random_write_corrupt)
        corrupts_reads = ((self.corrupt_bio_byte and self.corrupt_bio_rw is OP_READ)
                          or self.random_read_corrupt)
        for feature, clash, what in (
                ("drop_writes", corrupts_writes, "write"),
                ("error_writes", corrupts_writes, "write"),
                ("error_reads", corrupts_reads, "read")):
            if getattr(self, feature) and clash:
                raise r.error(f"feature {feature!r} conflicts with {what} corruption "
                              f"(random_{what}_corrupt, or corrupt_bio_byte with "
                              f"direction {what[0]})")
        if not (self.error_reads or self.drop_writes or self.error_writes
                or self.corrupt_bio_byte or corrupts_reads or corrupts_writes):
            self.error_reads = self.error_writes = True

    # -- time -----------------------------------------------------------------------------
    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    @clock.setter
    def clock(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._start_time = clock()

    def is_down(self) -> bool:
        """Whether now is in a down interval (whole seconds elapsed, as jiffies / HZ)."""
        elapsed = int(self._clock() - self._start_time)
        return elapsed % (self.up_interval + self.down_interval) >= self.up_interval

    # -- the data path ----------------------------------------------------------------------
    def map(self, bio: Bio) -> None:
        if not self.is_down():
            self._submit(bio)
        elif bio.op is OP_READ:
            if self.error_reads:
                self._fail(bio)
            self._submit(bio)
            self._corrupt_read(bio)
        elif self.drop_writes:
            self.dropped_writes += 1
        elif self.error_writes:
            self._fail(bio)
        elif bio.op is OP_WRITE:
            self._submit(self._corrupt_write(bio))
        else:
            self._submit(bio)

    def _submit(self, bio: Bio) -> None:
        if bio.op is OP_FLUSH:
            self.dev.submit(bio)
        else:
            self.dev.submit(bio.remap(self.offset + bio.sector))

    def _fail(self, bio: Bio) -> None:
        self.errored += 1
        where = "" if bio.op is OP_FLUSH else f" at sector {self.start_sector + bio.sector}"
        raise BlockIOError(f"flakey: {bio.op.name.lower()}{where} failed: "
                           f"{self.dev_spec} is in its down interval")

    def _flags_match(self, bio: Bio) -> bool:
        # bi_opf holds the op number in its low bits and the REQ_* flags above.
        opf = int(bio.op) | int(bio.flags)
        return opf & self.corrupt_bio_flags == self.corrupt_bio_flags

    def _chance(self, probability: int) -> bool:
        return self.rng.getrandbits(64) % PROBABILITY_BASE < probability

    def _corrupt_read(self, bio: Bio) -> None:
        """Corrupt a read that succeeded, in the caller's buffer."""
        hit = False
        if (self.corrupt_bio_byte and self.corrupt_bio_rw is OP_READ
                and self._flags_match(bio)):
            hit = _set_byte(bio.data, self.corrupt_bio_byte - 1, self.corrupt_bio_value)
        if self.random_read_corrupt and self._chance(self.random_read_corrupt):
            hit = self._corrupt_random(bio.data) or hit
        self.corrupted += hit

    def _corrupt_write(self, bio: Bio) -> Bio:
        """The bio to send down: a corrupted copy, or ``bio`` itself.  The caller's buffer
        is never changed (newer kernels clone the pages before corrupting them)."""
        fixed = (self.corrupt_bio_byte and self.corrupt_bio_rw is OP_WRITE
                 and self._flags_match(bio))
        rand = self.random_write_corrupt and self._chance(self.random_write_corrupt)
        if not (fixed or rand):
            return bio
        clone = bio.remap(bio.sector)
        clone.data = memoryview(bytearray(bio.data))
        hit = fixed and _set_byte(clone.data, self.corrupt_bio_byte - 1, self.corrupt_bio_value)
        if rand:
            hit = self._corrupt_random(clone.data) or hit
        self.corrupted += hit
        return clone

    def _corrupt_random(self, buf: memoryview) -> bool:
        position = self.rng.getrandbits(32) % len(buf)
        return _set_byte(buf, position, self.rng.getrandbits(8))

    # -- reporting ----------------------------------------------------------------------------
    @property
    def can_discard(self) -> bool:
        return self.dev.can_discard

    @property
    def can_write_zeroes(self) -> bool:
        return False  # dm-flakey sets no num_write_zeroes_bios

    def status(self, kind: str) -> str:
        if kind != "table":
            # The kernel prints nothing here; these counters are dmkit's.
            return (f"dropped_writes={self.dropped_writes} errored={self.errored} "
                    f"corrupted={self.corrupted}")
        features: list[str] = []
        if self.error_reads:
            features.append("error_reads")
        if self.drop_writes:
            features.append("drop_writes")
        elif self.error_writes:
            features.append("error_writes")
        if self.corrupt_bio_byte:
            rw = "w" if self.corrupt_bio_rw is OP_WRITE else "r"
            features += ["corrupt_bio_byte", str(self.corrupt_bio_byte), rw,
                         str(self.corrupt_bio_value), str(self.corrupt_bio_flags)]
        for feature in ("random_read_corrupt", "random_write_corrupt"):
            if getattr(self, feature):
                features += [feature, str(getattr(self, feature))]
        return join_args([self.dev_spec, str(self.offset), str(self.up_interval),
                          str(self.down_interval), str(len(features)), *features])


def _set_byte(buf: memoryview, position: int, value: int) -> bool:
    """Set ``buf[position]`` if the buffer reaches that far; report whether it did."""
    if position >= len(buf):
        return False
    buf[position] = value
    return True
