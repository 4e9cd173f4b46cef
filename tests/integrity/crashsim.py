"""Power-loss simulation for block devices.

:class:`RecordingDevice` is a RAM disk that logs every write sector by sector, with its
FUA flag, every flush, and markers that the workload sets between its own operations.
From one recorded run, :func:`crash_images` builds the device as a power cut at any point
of the log could leave it, under three models of the disk's volatile cache:

- ``prefix``: every write up to the crash point reached the media, in order, nothing after
  (the device "drops every write after the Nth");
- ``flushed``: only what a completed flush (or a FUA write) made durable survives;
- ``reorder``: what was durable, plus, for each sector, some prefix of the writes to it
  issued since (a random one): unflushed writes land in any order across sectors, and a
  sector never goes back to an older version than one it held.

Writes are atomic per 512-byte sector only, so a multi-sector write (a journal section,
a 4 KiB block) can be torn.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from dmkit.block import SECTOR_SHIFT, Bio, BlockDevice, MemoryDevice
from dmkit.block.bio import OP_FLUSH, OP_READ, OP_WRITE, REQ_FUA, REQ_PREFLUSH

KINDS = ("prefix", "flushed", "reorder")


class Recorder:
    """One log for a set of devices (a data device and a metadata device crash together)."""

    def __init__(self):
        #: ("w", dev, sector, 512 bytes, fua) per sector written, ("f", dev) per flush
        self.log: list[tuple] = []
        self.baselines: dict[str, bytes] = {}

    def device(self, name: str, initial: bytes) -> "RecordingDevice":
        self.baselines[name] = bytes(initial)
        return RecordingDevice(self, name, initial)

    @property
    def position(self) -> int:
        return len(self.log)


class RecordingDevice(BlockDevice):
    def __init__(self, recorder: Recorder, name: str, initial: bytes):
        self.recorder = recorder
        self.mem = MemoryDevice(initial=initial, name=name)
        self.name = name
        self.nr_sectors = self.mem.nr_sectors
        self.can_discard = True

    def _submit(self, bio: Bio) -> None:
        op = bio.op
        if op is OP_READ:
            self.mem.submit(bio)
            return
        log = self.recorder.log
        if bio.flags & REQ_PREFLUSH or op is OP_FLUSH:
            log.append(("f", self.name))
        if op is OP_FLUSH:
            return
        self.mem.submit(bio)
        if op is OP_WRITE:
            data = bytes(bio.data)
        else:  # discard, write-zeroes: the RAM disk reads back zeros
            data = bytes(bio.nr_sectors << SECTOR_SHIFT)
        fua = bool(bio.flags & REQ_FUA)
        for k in range(bio.nr_sectors):
            log.append(("w", self.name, bio.sector + k,
                        data[k << SECTOR_SHIFT:(k + 1) << SECTOR_SHIFT], fua))


@dataclass
class CrashImage:
    point: int          # how many log events happened before the power cut
    kind: str
    images: dict        # device name -> bytearray


@dataclass
class _Dev:
    current: bytearray
    durable: bytearray
    pending: dict = field(default_factory=dict)


def crash_images(recorder: Recorder, points, kinds=KINDS, seed: int = 0):
    """Yield a :class:`CrashImage` for each crash point (log positions) and kind."""
    rng = random.Random(seed)
    devs = {n: _Dev(bytearray(b), bytearray(b)) for n, b in recorder.baselines.items()}
    log = recorder.log
    points = sorted(set(points))
    pi = 0
    for pos in range(len(log) + 1):
        while pi < len(points) and points[pi] == pos:
            for kind in kinds:
                yield CrashImage(pos, kind, {n: _image(d, kind, rng) for n, d in devs.items()})
            pi += 1
        if pos == len(log):
            break
        ev = log[pos]
        d = devs[ev[1]]
        if ev[0] == "f":
            d.durable[:] = d.current
            d.pending.clear()
        else:
            _, _, s, data, fua = ev
            a = s << SECTOR_SHIFT
            d.current[a:a + 512] = data
            if fua:
                d.durable[a:a + 512] = data
                d.pending.pop(s, None)
            else:
                d.pending.setdefault(s, []).append(data)


def _image(d: _Dev, kind: str, rng: random.Random) -> bytearray:
    if kind == "prefix":
        return bytearray(d.current)
    img = bytearray(d.durable)
    if kind == "reorder":
        for s, versions in d.pending.items():
            k = rng.randrange(len(versions) + 1)
            if k:
                a = s << SECTOR_SHIFT
                img[a:a + 512] = versions[k - 1]
    return img


class VersionHistory:
    """What each block may hold after a crash: its value when the last flush (or FUA
    write: in every mode the target turns one into a full flush) that completed before the
    crash, or any value a write started before the crash gave it."""

    def __init__(self, nblocks: int, block_size: int, initial: bytes):
        self.bs = block_size
        #: per block: list of (op index, log position when the write started, data)
        self.versions = [[(-1, -1, bytes(initial[b * block_size:(b + 1) * block_size]))]
                         for b in range(nblocks)]
        #: (op index, log position when it completed) of every flush / FUA write
        self.flushes: list[tuple[int, int]] = []

    def write(self, op: int, started_at: int, block: int, data: bytes) -> None:
        self.versions[block].append((op, started_at, bytes(data)))

    def flushed(self, op: int, completed_at: int) -> None:
        self.flushes.append((op, completed_at))

    def allowed(self, block: int, point: int) -> list[bytes]:
        flush_op = -1
        for op, done in self.flushes:
            if done <= point:
                flush_op = op
        vs = self.versions[block]
        base = 0
        for i, (op, _, _) in enumerate(vs):
            if op <= flush_op:
                base = i
        return [d for op, start, d in vs[base:] if start <= point]
