"""Cases for the integrity target (issue 3's benchmark targets).

``integrity-<mode>-<alg>-<op>`` for mode ``journal`` (J), ``bitmap`` (B), ``direct`` (D),
alg ``crc32c`` or ``hmac-sha256`` (``hmac(sha256)``, 32-byte tags), op ``read`` or
``write``: a sequential pass over an integrity mapping with 4 KiB blocks, as big as the
runner's ``--size-mib``, in ``--request-kib`` requests, through the public BlockDevice API
(the same pass loops as the other target cases).  The harness's baseline is the same pass
over a raw image of the same size (``ratio`` in the report).

Setup, untimed, once per case: a sparse image is sized so that the formatted device
provides exactly the pass size, and formatted with the offline formatter that
``dmkit integrity format`` uses (:func:`dmkit.targets.integrity.format.format_device`,
integritysetup's defaults: fix_padding, fix_hmac with a random salt, the kernel's journal
size, 32768-sector interleave; data and tags wiped).  A read case then writes a
request-size pattern over every request of the device through a direct-mode mapping (so
every block is data with a valid tag) and closes it; the measured mapping is then opened
on the image.

The issue's targets need two more comparisons, measured in the same run:

- hmac-sha256 reads against **computing the same HMACs alone**: the tags of the same data
  (the pattern at the same sectors, with the same salt and key), one HMAC per 4 KiB block
  with the sector mixed in as dm-integrity does, single thread, no I/O, by the same engine
  the device uses: with the C accelerator built (``dmkit.targets.integrity._tagsevp``,
  libcrypto, one call per request) that call alone (:class:`_EvpTagsAlone`), else the
  fastest plain hashlib loop (:class:`_HmacTagsAlone`); reported as
  ``ratio_to_tags_alone`` and judged.  With the accelerator, two more things are
  measured, for information only:

  - the hashlib loop, as ``ratio_to_hashlib_loop``: what the accelerator gains (judging
    against it would hide the device's own overhead);
  - the **serial floor** (:class:`_SerialFloor`): a bare loop with no dmkit code that
    reads each request's data and tags with ``os.preadv`` and then checks them with one
    accelerator call.  ``serial_floor_ratio_to_tags_alone`` is the best a thread that
    reads and then hashes reaches in this run: the copy out of the page cache is work
    the tags alone do not do.  ``ratio_to_serial_floor`` is the device against that
    floor: dmkit's own overhead, less what its reads gain by overlapping the copy with
    the hashing (``_tagsevp.read_digests``); above 1 the overlap gains more than the
    rest costs;
- journal-mode writes against **direct-mode writes** of the same algorithm (a second
  formatted image with a direct-mode mapping); reported as ``ratio_to_direct_write``.

The harness has one baseline per case (the raw image), so these are timed by the case
itself right after the harness's passes (before the devices close): ``repeat`` more passes
of the case interleaved with ``repeat`` passes of the comparison, after one untimed pass
of each, with :func:`benchmarks.harness.measure` (the same interleaving as the harness).

Targets, printed with the numbers and never failing the run (``targets`` in the report,
``meets_target`` true/false, judged best pass against best pass): direct/bitmap crc32c
read >= 0.25x raw read; hmac-sha256 read >= 0.8x tags alone; journal write >= 0.4x direct
write.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import os
import sys
import time
from typing import Callable

from dmkit.block import SECTOR_SHIFT, FileDevice
from dmkit.dm import MappedDevice, join_args
from dmkit.targets.integrity.format import FormatParams, format_device, plan_format
from dmkit.targets.integrity.layout import SbFlags
from dmkit.targets.integrity import tags as _tags
from dmkit.targets.integrity.tags import TagFunction

from ..harness import Timings, measure
from ..raw import fill_image, fill_pattern, open_images, raw_read_pass, raw_write_pass
from ..registry import CaseContext, Workload, register
from ._judge import Recorder as _Recorder
from ._judge import ratio as _ratio
from ._judge import stats as _stats
from ._judge import target as _target
from .targets import _require_target, dm_read_pass, dm_write_pass

__all__: list[str] = []

BLOCK_SIZE = 4096
#: the runner's warm-up passes before the timed ones (``runner.WARMUP_PASSES``)
_HARNESS_WARMUP = 1
_KEY = bytes(range(0x40, 0x60))          # 32-byte hmac(sha256) key
_PATTERN_SEED = 0x17                     # the data a read case puts on the device

MODES = {"journal": "J", "bitmap": "B", "direct": "D"}
#: benchmark name -> (kernel internal_hash, key)
ALGS = {"crc32c": ("crc32c", None), "hmac-sha256": ("hmac(sha256)", _KEY)}

TARGET_RAW_READ = 0.25
TARGET_TAGS_ALONE = 0.8
TARGET_DIRECT_WRITE = 0.4


# -- images and mappings -----------------------------------------------------------------------

def _image_sectors(provided: int, params: FormatParams) -> int:
    """The smallest image (in whole blocks) on which a format provides ``provided`` sectors
    (the journal grows with the image, so this iterates)."""
    spb = params.block_size >> SECTOR_SHIFT
    size = provided
    while True:
        got = plan_format(size, params=params, salt=bytes(16)).provided_data_sectors
        if got >= provided:
            return size
        size += -(-(provided - got) // spb) * spb


def _format_image(path: str, provided: int, internal_hash: str, key: bytes | None):
    """A sparse image formatted by the offline formatter; returns its FormatPlan."""
    params = FormatParams(internal_hash=internal_hash, key=key, block_size=BLOCK_SIZE)
    sectors = _image_sectors(provided, params)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.ftruncate(fd, sectors << SECTOR_SHIFT)
    finally:
        os.close(fd)
    with FileDevice(path) as dev:
        plan = format_device(dev, params=params)
    if plan.provided_data_sectors < provided:
        raise RuntimeError(f"{path}: formatted device provides {plan.provided_data_sectors} "
                           f"sectors, expected at least {provided}")
    return plan


def _table(path: str, nr: int, mode: str, internal_hash: str, key: bytes | None,
           tag_size: int) -> str:
    alg = f"{internal_hash}:{key.hex()}" if key else internal_hash
    return (f"0 {nr} integrity {join_args([path])} 0 {tag_size} {mode} 4 "
            f"block_size:{BLOCK_SIZE} internal_hash:{alg} fix_padding fix_hmac\n")


def _open(ctx: CaseContext, table: str, name: str, *, read_only: bool) -> MappedDevice:
    dev = MappedDevice.from_table(table, name=name, read_only=read_only)
    ctx.stack.callback(dev.close)
    if dev.size_bytes != ctx.total_bytes:
        raise RuntimeError(f"{name}: mapped device is {dev.size_bytes} bytes, "
                           f"expected {ctx.total_bytes}")
    return dev


# -- computing the same HMACs alone -------------------------------------------------------------

class _HmacTagsAlone:
    """hmac(sha256) tags of ``pattern`` placed at every request of the device, computed the
    fastest plain way: one HMAC per 4 KiB block, ``HMAC(key, salt || le64(sector) ||
    block)``, from hashlib SHA-256 states of ``key ^ ipad || salt`` and ``key ^ opad``
    copied per block (two ``copy``, three ``update``, two ``digest`` C calls per block;
    faster than copying a primed ``hmac`` object, whose copy goes through Python code, or
    ``hmac.digest`` on a concatenated message).  The blocks are memoryview slices made once;
    the sector numbers are packed per block; the digests of one request are joined, as a
    tag buffer would be.  Single thread, no I/O, no comparison."""

    def __init__(self, key: bytes, salt: bytes | None, pattern: bytes, total_bytes: int):
        k = hashlib.sha256(key).digest() if len(key) > 64 else key
        k = k.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in k))
        if salt:
            self._inner.update(salt)
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in k))
        mv = memoryview(pattern)
        self._blocks = [mv[i:i + BLOCK_SIZE] for i in range(0, len(mv), BLOCK_SIZE)]
        self.request_sectors = len(mv) >> SECTOR_SHIFT
        self.requests = total_bytes // len(mv)
        self.total_bytes = total_bytes

    def request_tags(self, first_sector: int) -> bytes:
        icopy, ocopy = self._inner.copy, self._outer.copy
        spb = BLOCK_SIZE >> SECTOR_SHIFT
        out = []
        append = out.append
        sector = first_sector
        for block in self._blocks:
            h = icopy()
            h.update(sector.to_bytes(8, "little"))
            h.update(block)
            o = ocopy()
            o.update(h.digest())
            append(o.digest())
            sector += spb
        return b"".join(out)

    def run(self) -> int:
        tags, step = self.request_tags, self.request_sectors
        for r in range(self.requests):
            tags(r * step)
        return self.total_bytes


class _EvpTagsAlone:
    """The same tags from the C accelerator the device uses: one
    ``_tagsevp.digests("SHA256", key, salt, request, 4096, sector, 8)`` call per request
    (libcrypto; per block two prepared digest states copied), the pattern placed at every
    request of the device.  Single thread, no I/O, no comparison."""

    def __init__(self, key: bytes, salt: bytes | None, pattern: bytes, total_bytes: int):
        self._args = ("SHA256", key, salt or b"", pattern, BLOCK_SIZE)
        self._digests = _tags._tagsevp.digests
        self.request_sectors = len(pattern) >> SECTOR_SHIFT
        self.requests = total_bytes // len(pattern)
        self.total_bytes = total_bytes

    def request_tags(self, first_sector: int) -> bytes:
        return self._digests(*self._args, first_sector, BLOCK_SIZE >> SECTOR_SHIFT)

    def run(self) -> int:
        digests, args, step = self._digests, self._args, self.request_sectors
        spb = BLOCK_SIZE >> SECTOR_SHIFT
        for r in range(self.requests):
            digests(*args, r * step, spb)
        return self.total_bytes


class _SerialFloor:
    """The least work any serial, verifying read of this device can do, written as a bare
    loop with no dmkit code in it: per request one ``os.preadv`` of the data into the
    buffer, one of the tags, one ``_tagsevp.digests`` call and one ``compare_digest``
    (the places come from the device's geometry, computed before timing).  Its ratio to
    :class:`_EvpTagsAlone` is the best a thread that reads and then hashes can reach on
    this machine in this run (the copy out of the page cache is work the tags alone do
    not do); the device's ratio to it is dmkit's own overhead less what the overlapped
    read gains.  Reported for information, not judged."""

    def __init__(self, dev: MappedDevice, key: bytes, salt: bytes | None, buf: bytearray):
        target = dev.targets[0]
        fd = target.data_dev.fileno()
        if target.tags.dev is not target.data_dev:
            raise RuntimeError("the serial floor reads tags and data from one image")
        self._fd, self._mv = fd, memoryview(buf)
        req = len(buf) >> SECTOR_SHIFT
        self._places = []
        for first in range(0, dev.nr_sectors, req):
            (ext,) = target.geo.extents(first, req)   # one interleave area per request
            self._places.append((first, ext.data_sector << SECTOR_SHIFT, ext.tag_offset,
                                 ext.nr_blocks * target.tag_size))
        self._args = ("SHA256", key, salt or b"")
        self.total_bytes = dev.nr_sectors << SECTOR_SHIFT

    def run(self) -> int:
        fd, mv, (name, key, prefix) = self._fd, self._mv, self._args
        bufs, digests, preadv = [mv], _tags._tagsevp.digests, os.preadv
        spb = BLOCK_SIZE >> SECTOR_SHIFT
        for first, data_at, tags_at, tag_bytes in self._places:
            preadv(fd, bufs, data_at)
            stored = bytearray(tag_bytes)
            preadv(fd, [stored], tags_at)
            if not _hmac.compare_digest(digests(name, key, prefix, mv, BLOCK_SIZE, first,
                                                spb), stored):
                raise RuntimeError(f"serial floor: tags of sector {first} do not verify")
        return self.total_bytes


# -- the passes the harness times, recorded so the case can judge its targets ------------------

# -- the cases --------------------------------------------------------------------------------

def _integrity_case(ctx: CaseContext, mode_name: str, alg_name: str, op: str) -> Workload:
    _require_target("integrity")
    mode = MODES[mode_name]
    internal_hash, key = ALGS[alg_name]
    case_name = f"integrity-{mode_name}-{alg_name}-{op}"
    req, total = ctx.request_bytes, ctx.total_bytes
    if total % req or req % BLOCK_SIZE:
        raise ValueError(f"{case_name}: {total} bytes in {req}-byte requests is not a whole "
                         f"number of requests of whole {BLOCK_SIZE}-byte blocks")
    nr = total >> SECTOR_SHIFT
    write = op == "write"

    raw_path = ctx.path("integrity-raw.img")
    fill_image(raw_path, total, req, seed=1)
    raw_files = open_images([raw_path], write=write)
    for fd, _ in raw_files:
        ctx.stack.callback(os.close, fd)

    t0 = time.perf_counter()
    path = ctx.path("integrity.img")
    plan = _format_image(path, nr, internal_hash, key)
    tag_size = plan.superblock.integrity_tag_size
    table = _table(path, nr, mode, internal_hash, key, tag_size)
    format_seconds = time.perf_counter() - t0

    pattern = None
    if not write:
        pattern = bytearray(req)
        fill_pattern(pattern, _PATTERN_SEED)
        with MappedDevice.from_table(_table(path, nr, "D", internal_hash, key, tag_size),
                                     name=f"bench-{case_name}-fill") as filler:
            dm_write_pass(filler, pattern)

    dev = _open(ctx, table, f"bench-{case_name}", read_only=not write)
    buf = ctx.buffer
    if write:
        measured = _Recorder(lambda: dm_write_pass(dev, buf))
        raw = _Recorder(lambda: raw_write_pass(raw_files, buf))
        raw_name = "raw os.pwrite + one fdatasync per image"
    else:
        measured = _Recorder(lambda: dm_read_pass(dev, buf))
        raw = _Recorder(lambda: raw_read_pass(raw_files, buf))
        raw_name = "raw os.preadv"

    details: dict = {
        "table": table.strip(),
        "integrity": {
            "mode": mode, "internal_hash": internal_hash, "block_size": BLOCK_SIZE,
            "tag_size": tag_size, "image_bytes": os.path.getsize(path),
            "journal_sections": plan.superblock.journal_sections,
            "interleave_sectors": 1 << plan.superblock.log2_interleave_sectors,
            "format": "dmkit.targets.integrity.format.format_device (integritysetup "
                      "defaults), once in setup, untimed"
                      + ("; then a request-size pattern written over every request through a "
                         "direct-mode mapping, untimed" if not write else ""),
            "format_seconds": round(format_seconds, 3),
        },
        "targets": [],
    }

    # The comparison the target needs, if any:
    # (label, ratio's key in the report, the comparison pass, threshold, description).
    comparison: tuple[str, str, Callable[[], int], float, str] | None = None
    #: (label, ratio's key, the pass, its baseline, description, what is printed): measured
    #: like the comparison, for information, not judged
    extras: list[tuple[str, str, Callable[[], int], Callable[[], int], str, str]] = []
    if not write and alg_name == "hmac-sha256":
        sb = plan.superblock
        salt = sb.salt if sb.has(SbFlags.FIXED_HMAC) else None
        check = TagFunction(internal_hash, key=key, tag_size=tag_size, block_size=BLOCK_SIZE,
                            salt=salt)
        loop = _HmacTagsAlone(key, salt, bytes(pattern), total)
        loop_desc = ("hmac(sha256) of each 4 KiB block (salt || le64(sector) || block) from "
                     "copied hashlib sha256 ipad/opad states, single thread, no I/O")
        if check._evp is not None:   # the device's tags come from the C accelerator
            alone = _EvpTagsAlone(key, salt, bytes(pattern), total)
            desc = ("the same hmac(sha256) tags from the C accelerator the device uses "
                    "(dmkit.targets.integrity._tagsevp.digests, one call per 1 MiB request), "
                    "single thread, no I/O")
            floor = _SerialFloor(dev, key, salt, buf)
            floor_desc = ("a bare loop, no dmkit code: per request os.preadv of the data and "
                          "of the tags, one _tagsevp.digests call, one compare_digest")
            extras += [
                ("hashlib_loop", "ratio_to_hashlib_loop", measured.fn, loop.run, loop_desc,
                 "read / hashlib_loop"),
                ("serial_floor", "ratio_to_serial_floor", measured.fn, floor.run, floor_desc,
                 "read / serial floor"),
                ("serial_floor_vs_tags_alone", "serial_floor_ratio_to_tags_alone", floor.run,
                 alone.run, "the serial floor against the tags alone: the best ratio a "
                 "thread that reads and then hashes reaches in this run",
                 "serial floor / tags alone (read, then hash)"),
            ]
        else:
            alone, desc = loop, loop_desc
        details["integrity"]["tag_engine"] = ("C accelerator (libcrypto)" if extras
                                              else "hashlib loop")
        # the baselines must compute exactly the tags the device stores
        for first in {0, nr - (req >> SECTOR_SHIFT)}:
            for base in (alone, loop):
                if base.request_tags(first) != check.tags(pattern, first):
                    raise RuntimeError(f"{case_name}: a tags-alone baseline does not compute "
                                       "dmkit's tags")
        comparison = ("tags_alone", "ratio_to_tags_alone", alone.run, TARGET_TAGS_ALONE, desc)
    elif write and mode == "J":
        dpath = ctx.path("integrity-direct.img")
        dplan = _format_image(dpath, nr, internal_hash, key)
        dtable = _table(dpath, nr, "D", internal_hash, key,
                        dplan.superblock.integrity_tag_size)
        ddev = _open(ctx, dtable, f"bench-{case_name}-direct", read_only=False)
        comparison = ("direct_write", "ratio_to_direct_write",
                      lambda: dm_write_pass(ddev, buf), TARGET_DIRECT_WRITE,
                      f"the same write pass on a direct-mode (D) mapping, same algorithm: "
                      f"{dtable.strip()}")

    def after_harness(exc_type, exc, tb) -> None:
        """Runs when the case's stack closes: after the harness's (and a profile's)
        passes, before the devices close and before the runner reads ``details``."""
        if exc_type is not None:
            return
        timed = len(raw.seconds) - _HARNESS_WARMUP
        if timed < 1:
            return
        run_t = Timings(measured.seconds[_HARNESS_WARMUP:_HARNESS_WARMUP + timed], total)
        raw_t = Timings(raw.seconds[_HARNESS_WARMUP:], total)
        if mode in ("D", "B") and alg_name == "crc32c" and not write:
            details["targets"].append(_target(case_name, "read / raw read",
                                              _ratio(run_t, raw_t), TARGET_RAW_READ))
        if comparison is None:
            return
        label, key_name, fn, threshold, description = comparison
        again, other = measure(Workload(run=measured.fn, baseline=fn, baseline_name=label),
                               timed)
        ratio = _ratio(again, other)
        details[label] = {
            "description": description,
            "mib_per_s": _stats(other),
            "this_case_mib_per_s": _stats(again),
            "seconds": [round(s, 5) for s in other.seconds],
            "note": f"measured after the harness: {timed} more passes of this case "
                    f"interleaved with {timed} of {label}, one untimed pass of each first",
        }
        details[key_name] = ratio
        what = "read / tags alone" if label == "tags_alone" else "journal write / direct write"
        details["targets"].append(_target(case_name, what, ratio, threshold))
        for label, key_name, fn, base, description, what in extras:
            again, other = measure(Workload(run=fn, baseline=base, baseline_name=label),
                                   timed)
            details[label] = {
                "description": description,
                "baseline_mib_per_s": _stats(other),
                "pass_mib_per_s": _stats(again),
                "seconds": [round(s, 5) for s in other.seconds],
                "note": "for information, not judged",
            }
            details[key_name] = r = _ratio(again, other)
            print(f"{case_name}: {what} (information, not judged): best "
                  f"{r['best']:.3f} (median {r['median']:.3f})", file=sys.stderr, flush=True)

    ctx.stack.push(after_harness)
    return Workload(run=measured, baseline=raw, baseline_name=raw_name, details=details)


def _register(mode_name: str, alg_name: str, op: str) -> None:
    mode = MODES[mode_name]
    what = ("sequential read (verify)" if op == "read"
            else "sequential write, one flush at the end,")
    extra = ""
    if op == "read" and alg_name == "hmac-sha256":
        extra = "; also vs the same HMACs computed alone (no I/O)"
    elif op == "write" and mode == "J":
        extra = "; also vs the same writes in direct mode"

    @register(f"integrity-{mode_name}-{alg_name}-{op}", op=op,
              description=f"{what} of an integrity mapping, mode {mode}, {alg_name}, "
                          f"{BLOCK_SIZE >> 10} KiB blocks, image formatted by dmkit's offline "
                          f"formatter{extra}")
    def setup(ctx: CaseContext) -> Workload:
        return _integrity_case(ctx, mode_name, alg_name, op)


for _mode in MODES:
    for _alg in ALGS:
        for _op in ("read", "write"):
            _register(_mode, _alg, _op)
del _mode, _alg, _op
