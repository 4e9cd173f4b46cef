"""LUKS2 decrypt cases (issue 5's benchmark targets).

``luks2-<kind>-read``: a sequential read (decrypt) of a whole LUKS2 volume as big as the
runner's ``--size-mib``, in ``--request-kib`` requests, through the data path
:func:`dmkit.luks.open` builds (dmkit's crypt target, on its integrity target for the
``--integrity`` volumes), with the same pass loop as the other target cases:

- ``luks2-xts-512-read``: aes-xts-plain64, 512-bit key, 512-byte sectors;
- ``luks2-xts-4096-read``: the same with 4096-byte sectors;
- ``luks2-gcm-aead-read``: aes-gcm-random with ``--integrity aead`` (28 bytes of metadata
  per sector: 12-byte random IV + 16-byte tag), 4096-byte sectors;
- ``luks2-xts-hmac-sha256-read``: aes-xts-plain64 with ``--integrity hmac-sha256``
  (32-byte tags), 4096-byte sectors.

The integrity volumes use 4096-byte sectors: what cryptsetup 2.6's ``luksFormat`` picks for
an image file on a 4 KiB-block file system (and ``dmkit luks format``'s default).

Setup, untimed, once per case: the volume is formatted with :func:`dmkit.luks.format`
(PBKDF2-SHA256 with 1000 forced iterations, so unlocking is cheap; integrity volumes
without the format's wipe, since every sector is then written) on a sparse image sized so
that the volume holds exactly the pass (integrity: at least the pass), then filled through a
writable open (integrity in direct mode) with a request-size random pattern whose first 8
bytes are the request's index; every request of the read-only open that is measured is
checked against that plaintext before timing.

Compared in the same run:

- **raw** (the harness's baseline): the same pass over a raw image of the same size with
  ``os.preadv``; ``ratio`` in the report.
- **qemu-img convert** of an equivalent LUKS1 image (aes-xts-plain64, 512-bit key,
  512-byte sectors, the same plaintext), timed as a new process writing a raw output file
  (process start-up and unlocking count: they are part of using the tool).  qemu 7.2's
  ``luks`` driver reads LUKS1 only ("LUKS version 2 is not supported") and LUKS1 has
  512-byte sectors only, so for every case the comparison is that one LUKS1 image: for the
  4096-byte case it is qemu at its only sector size, and for the integrity cases it is a
  reference with no target (no qemu can read them).  For the same work, dmkit is timed
  doing volume -> raw file too, twice: in-process (:func:`dmkit.luks.open` with the key
  file, :meth:`~dmkit.luks.LuksDevice.export` to a new file, close), and as ``dmkit luks
  export IMAGE OUT --key-file F`` in a new process (the console script installed beside
  the interpreter, as users run it; ``python -m dmkit`` when there is none) (with bytecode cached in the
  scratch dir, as an installed dmkit has it: ``PYTHONPYCACHEPREFIX``, and
  ``PYTHONDONTWRITEBYTECODE`` dropped), and that process's start-up alone (``python -c
  "import dmkit.cli"``) is timed in the same rounds, as ``dmkit_cli_start_seconds``.
  Neither side syncs the output (``qemu-img convert``'s default cache mode does not;
  dmkit's export does not); every output is removed before each pass (untimed) and checked
  after the warm-up pass.
- **dissect.fve** (pip ``dissect.fve``, its ``LUKS`` class) reading the LUKS2 image of the
  case through the stream its ``open()`` returns, unlocked once in setup, in requests of the
  same size, against dmkit's read pass over the same bytes.  Its XTS is pure Python (one
  AES call per 16-byte block, a few MiB/s), so both read a prefix of the volume,
  ``clamp(size / 32, one request, 8 MiB)``.  Where it cannot open the volume (it cannot
  unlock the integrity volumes: it derives the key slot's key with the volume key's size)
  or returns wrong bytes, that is reported and nothing is timed; when it is not importable
  the comparison is skipped with the reason.

The comparisons are timed by the case right after the harness's passes, before the volume
closes: after one untimed pass of each, ``repeat`` passes of each, interleaved and rotating
which goes first (as the harness interleaves).

Targets, printed with the numbers and never failing the run (``targets``: ``meets_target``
true/false, judged best pass against best pass; ``targets_not_measured`` says why one could
not be): xts decrypt >= 2x qemu-img convert at 512-byte sectors and >= 1.5x at 4096, judged
for both dmkit exports (in-process and new process); dmkit read >= 50x dissect.fve read.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import shlex
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import dmkit.luks as luks
from dmkit.block import SECTOR_SHIFT, BlockDevice
from dmkit.errors import FormatError
from dmkit.luks.data import plan_integrity
from dmkit.luks.luks2_volume import luks2_layout
from dmkit.luks.volume import DataSegment, integrity_spec

from ..harness import MIB, Timings
from ..raw import fill_image, fill_pattern, open_images, raw_read_pass
from ..registry import CaseContext, Workload, register
from ._judge import Recorder as _Recorder
from ._judge import ratio as _ratio
from ._judge import stats as _stats
from ._judge import target as _target
from .peers import find_tool, image_opts_value, run_tool, tool_version

__all__: list[str] = []

PASSPHRASE = b"dmkit-bench-passphrase"
#: cheap unlocking: the KDF is not what is measured
_PBKDF = luks.Pbkdf("pbkdf2", iterations=1000)
_PATTERN_SEED = 0x1C
#: the runner's warm-up passes before the timed ones (``runner.WARMUP_PASSES``)
_HARNESS_WARMUP = 1
DISSECT_MAX_BYTES = 8 << 20
TARGET_DISSECT = 50.0


@dataclass(frozen=True)
class _Spec:
    name: str
    cipher: str
    integrity: str | None
    sector_size: int
    #: the issue's target against qemu-img convert, or None (a reference only)
    qemu_target: float | None
    what: str


SPECS = [
    _Spec("luks2-xts-512-read", "aes-xts-plain64", None, 512, 2.0,
          "aes-xts-plain64, 512-bit key, 512-byte sectors"),
    _Spec("luks2-xts-4096-read", "aes-xts-plain64", None, 4096, 1.5,
          "aes-xts-plain64, 512-bit key, 4096-byte sectors"),
    _Spec("luks2-gcm-aead-read", "aes-gcm-random", "aead", 4096, None,
          "aes-gcm-random + integrity aead (random IV and tag in dm-integrity metadata), "
          "4096-byte sectors"),
    _Spec("luks2-xts-hmac-sha256-read", "aes-xts-plain64", "hmac-sha256", 4096, None,
          "aes-xts-plain64 + integrity hmac-sha256, 4096-byte sectors"),
]

_QEMU_IMAGE = "LUKS1, aes-xts-plain64, 512-bit key, 512-byte sectors, the same plaintext"


# -- the plaintext ------------------------------------------------------------------------------

class _Plain:
    """The plaintext of request ``i``: a random request-size pattern whose first 8 bytes are
    ``i`` (little endian), so a request read from the wrong place does not match."""

    def __init__(self, request_bytes: int):
        self._pattern = bytearray(request_bytes)
        fill_pattern(self._pattern, _PATTERN_SEED)

    def request(self, i: int) -> bytes:
        return i.to_bytes(8, "little") + bytes(self._pattern[8:])


def _check(what: str, got, plain: _Plain, i: int) -> None:
    if bytes(got) != plain.request(i):
        raise RuntimeError(f"{what}: request {i} does not read back the plaintext written")


# -- images ---------------------------------------------------------------------------------------

def _sparse(path: str, size: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def _luks2_image_bytes(spec: _Spec, total: int) -> int:
    """The smallest image on which the volume holds ``total`` bytes (integrity: at least)."""
    _, data_offset = luks2_layout(total + (64 << 20))
    if not spec.integrity:
        return data_offset + total
    seg = DataSegment(cipher=spec.cipher, key_bytes=0, offset_sectors=data_offset >> SECTOR_SHIFT,
                      sector_size=spec.sector_size, integrity=integrity_spec(spec.integrity))
    step = spec.sector_size >> SECTOR_SHIFT
    want = total >> SECTOR_SHIFT
    sectors = (data_offset + total) >> SECTOR_SHIFT
    while True:  # the journal and tags grow with the device: iterate
        try:
            got = plan_integrity(sectors, seg).provided_data_sectors
        except FormatError:  # too small for the superblock, journal and tags
            sectors += MIB >> SECTOR_SHIFT
            continue
        if got >= want:
            return sectors << SECTOR_SHIFT
        sectors += -(-(want - got) // step) * step


def _fill(path: str, plain: _Plain, total: int, req: int) -> int:
    """Write the plaintext over the first ``total`` bytes of the volume (zeros after, so
    every sector of an integrity volume has a valid tag); returns the volume's size."""
    with luks.open(path, PASSPHRASE, writable=True, integrity_journal=False,
                   name="bench-fill") as vol:
        dev = vol.device
        if dev.size_bytes < total:
            raise RuntimeError(f"{path}: the volume is {dev.size_bytes} bytes, expected at "
                               f"least {total}")
        step = req >> SECTOR_SHIFT
        for i in range(total // req):
            dev.write(i * step, plain.request(i))
        rest = dev.size_bytes - total
        if rest:
            dev.write(total >> SECTOR_SHIFT, bytes(rest))
        dev.flush()
        return dev.size_bytes


def _make_luks2(path: str, spec: _Spec, plain: _Plain, total: int, req: int) -> dict:
    t0 = time.perf_counter()
    _sparse(path, _luks2_image_bytes(spec, total))
    kw: dict = {"cipher": spec.cipher, "sector_size": spec.sector_size}
    if spec.integrity:
        kw.update(integrity=spec.integrity, integrity_wipe=False)
    unlocked = luks.format(path, PASSPHRASE, pbkdf=_PBKDF, **kw)
    seg = unlocked.segment
    unlocked.wipe()
    volume_bytes = _fill(path, plain, total, req)
    return {
        "type": "luks2", "cipher": seg.cipher, "key_bytes": seg.key_bytes,
        "integrity": seg.integrity, "sector_size": seg.sector_size,
        "data_offset_bytes": seg.offset_sectors << SECTOR_SHIFT,
        "image_bytes": os.path.getsize(path), "volume_bytes": volume_bytes,
        "kdf": "pbkdf2-sha256, 1000 iterations (forced)",
        "setup": "dmkit.luks.format"
                 + (" (integrity_wipe=False)" if spec.integrity else "")
                 + ", then filled through a writable dmkit.luks.open"
                 + (" (integrity in direct mode)" if spec.integrity else "")
                 + "; untimed",
        "setup_seconds": round(time.perf_counter() - t0, 3),
    }


def _make_luks1(path: str, plain: _Plain, total: int, req: int) -> None:
    """The LUKS1 image qemu-img reads: formatted on a generous sparse image, cut to the
    payload offset plus ``total`` (LUKS1 has no size field), filled with the plaintext."""
    _sparse(path, total + (16 << 20))
    unlocked = luks.format(path, PASSPHRASE, type="luks1", cipher="aes-xts-plain64",
                           key_bytes=64, pbkdf=_PBKDF)
    offset = unlocked.segment.offset_sectors << SECTOR_SHIFT
    unlocked.wipe()
    os.truncate(path, offset + total)
    if _fill(path, plain, total, req) != total:
        raise RuntimeError(f"{path}: the LUKS1 volume is not {total} bytes")


# -- passes -------------------------------------------------------------------------------------

def _read_pass(dev: BlockDevice, buf: bytearray, nbytes: int) -> int:
    """Read the first ``nbytes`` of ``dev`` in ``len(buf)`` requests into ``buf``."""
    mv = memoryview(buf)
    step = len(mv) >> SECTOR_SHIFT
    readinto = dev.readinto
    for sector in range(0, nbytes >> SECTOR_SHIFT, step):
        readinto(sector, mv)
    return nbytes


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _check_file(path: str, plain: _Plain, total: int, req: int, what: str) -> None:
    """The first ``total`` bytes of ``path`` are the plaintext."""
    with open(path, "rb") as f:
        for i in range(total // req):
            _check(what, f.read(req), plain, i)


@dataclass
class _Pass:
    name: str
    fn: Callable[[], int]
    #: untimed, before every pass (removing the previous output)
    prepare: Callable[[], None] | None = None
    #: untimed, after the warm-up pass (checking the output)
    verify: Callable[[], None] | None = None


def _interleave(passes: list[_Pass], repeat: int) -> dict[str, Timings]:
    """One untimed pass of each, then ``repeat`` timed rounds of one pass of each, the order
    rotating every round; each pass must process the same bytes every time."""
    seconds: dict[str, list[float]] = {p.name: [] for p in passes}
    nbytes: dict[str, int] = {}

    def one(p: _Pass, timed: bool) -> None:
        if p.prepare is not None:
            p.prepare()
        t0 = time.perf_counter()
        n = p.fn()
        dt = time.perf_counter() - t0
        if not isinstance(n, int) or n <= 0 or nbytes.setdefault(p.name, n) != n:
            raise RuntimeError(f"{p.name}: pass returned {n!r} bytes, expected "
                               f"{nbytes.get(p.name)}")
        if timed:
            seconds[p.name].append(dt)

    for p in passes:
        one(p, False)
        if p.verify is not None:
            p.verify()
    for r in range(repeat):
        k = r % len(passes)
        for p in passes[k:] + passes[:k]:
            one(p, True)
    return {p.name: Timings(seconds[p.name], nbytes[p.name]) for p in passes}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _not_measured(case: str, what: str, threshold: float, reason: str) -> dict:
    _log(f"{case}: target {what} >= {threshold}: not measured: {reason}")
    return {"target": f"{what} >= {threshold}", "threshold": threshold, "reason": reason}


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


# -- dissect.fve --------------------------------------------------------------------------------

def _dissect_stream(ctx: CaseContext, path: str, plain: _Plain, prefix: int, req: int):
    """dissect.fve's decrypted stream of the LUKS2 image, checked on the first and last
    request of the prefix; returns (stream, facts) or (None, facts with the reason)."""
    try:
        from dissect.fve.luks import LUKS
    except ImportError as e:
        return None, {"status": "skipped",
                      "reason": f"dissect.fve is not importable ({_one_line(e)}); "
                                "pip install dissect.fve"}
    try:
        version = importlib.metadata.version("dissect.fve")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    facts: dict = {"version": version}
    fh = open(path, "rb")
    ctx.stack.callback(fh.close)
    try:
        vol = LUKS(fh)
        vol.unlock_with_passphrase(PASSPHRASE)
        stream = vol.open()
    except Exception as e:  # noqa: BLE001 - whatever it raises is the reason
        return None, {**facts, "status": "cannot_open",
                      "reason": f"dissect.fve {version} cannot unlock/open this volume: "
                                f"{_one_line(e)}"}
    for i in sorted({0, prefix // req - 1}):
        stream.seek(i * req)
        try:
            got = stream.read(req)
        except Exception as e:  # noqa: BLE001
            return None, {**facts, "status": "cannot_read",
                          "reason": f"dissect.fve {version} fails reading: {_one_line(e)}"}
        if bytes(got) != plain.request(i):
            return None, {**facts, "status": "wrong_data",
                          "reason": f"dissect.fve {version} opens the volume but request {i} "
                                    "does not read back the plaintext (it does not handle "
                                    "this segment)"}
    return stream, {**facts, "status": "ok"}


# -- the case -----------------------------------------------------------------------------------

def _luks_case(ctx: CaseContext, spec: _Spec) -> Workload:
    req, total, name = ctx.request_bytes, ctx.total_bytes, spec.name
    if total % req or req % 4096:
        raise ValueError(f"{name}: {total} bytes in {req}-byte requests is not a whole number "
                         "of requests of whole 4096-byte sectors")
    plain = _Plain(req)
    buf = ctx.buffer

    raw_path = ctx.path("luks-raw.img")
    fill_image(raw_path, total, req, seed=1)
    raw_files = open_images([raw_path], write=False)
    for fd, _ in raw_files:
        ctx.stack.callback(os.close, fd)

    path = ctx.path("luks2.img")
    facts = _make_luks2(path, spec, plain, total, req)
    pass_file = ctx.path("luks-passphrase")
    with open(os.open(pass_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                      0o600), "wb") as f:
        f.write(PASSPHRASE)

    vol = luks.open(path, PASSPHRASE, name=f"bench-{name}")
    ctx.stack.callback(vol.close)
    dev = vol.device
    for i in range(total // req):
        dev.readinto(i * (req >> SECTOR_SHIFT), memoryview(buf))
        _check(f"{name}: dmkit", buf, plain, i)
    facts["tables"] = [t for _, t in vol.tables()]

    details: dict = {"luks": facts, "targets": [], "targets_not_measured": []}

    # qemu-img convert of the LUKS1 equivalent, and dmkit doing the same (set up now)
    qemu = find_tool("qemu-img")
    qemu_passes: list[_Pass] = []
    if qemu is None:
        details["qemu_img"] = {"status": "skipped", "reason": "qemu-img is not installed "
                               "(Debian: qemu-utils)"}
    else:
        l1 = ctx.path("luks1.img")
        _make_luks1(l1, plain, total, req)
        outs = {k: ctx.path(f"{k}-out.raw") for k in ("qemu", "dmkit", "dmkit-cli")}
        qemu_argv = [qemu, "convert", "--object",
                     f"secret,id=sec0,file={image_opts_value(pass_file)}", "--image-opts",
                     f"driver=luks,key-secret=sec0,file.driver=file,"
                     f"file.filename={image_opts_value(l1)}", "-O", "raw", outs["qemu"]]
        # the installed console script, as users run it (pip's launcher: no runpy), else
        # python -m dmkit
        script = os.path.join(os.path.dirname(sys.executable), "dmkit")
        cli_cmd = [script] if os.access(script, os.X_OK) else [sys.executable, "-m", "dmkit"]
        cli_argv = [*cli_cmd, "luks", "export", path, outs["dmkit-cli"],
                    "--key-file", pass_file]
        start_argv = [sys.executable, "-c", "import dmkit.cli"]
        # bytecode cached as in an installed dmkit (pip compiles it), in the scratch dir
        pyc_dir = os.path.join(ctx.dir, f".{name}-pycache")
        ctx.stack.callback(shutil.rmtree, pyc_dir, ignore_errors=True)
        cli_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        cli_env["PYTHONPYCACHEPREFIX"] = pyc_dir

        def qemu_convert() -> int:
            run_tool(qemu_argv)
            return os.path.getsize(outs["qemu"])

        def dmkit_export() -> int:
            with luks.open(path, key_file=pass_file, name=f"bench-{name}-export") as v, \
                    open(outs["dmkit"], "wb") as f:
                v.export(f)
                return v.size_bytes

        def dmkit_export_cli() -> int:
            run_tool(cli_argv, env=cli_env)
            return os.path.getsize(outs["dmkit-cli"])

        def dmkit_cli_start() -> int:
            run_tool(start_argv, env=cli_env)
            return 1  # only its seconds are reported

        def make(key: str, label: str, fn: Callable[[], int]) -> _Pass:
            out = outs[key]
            return _Pass(label, fn, prepare=lambda: _unlink(out),
                         verify=lambda: _check_file(out, plain, total, req, label))

        qemu_passes = [make("qemu", "qemu_img_convert", qemu_convert),
                       make("dmkit", "dmkit_export", dmkit_export),
                       make("dmkit-cli", "dmkit_export_cli", dmkit_export_cli),
                       _Pass("dmkit_cli_start", dmkit_cli_start)]
        details["qemu_img"] = {
            "version": tool_version([qemu, "--version"]),
            "image": _QEMU_IMAGE + (
                "; qemu's luks driver reads LUKS1 only and LUKS1 has only 512-byte sectors"
                if spec.sector_size != 512 or spec.integrity else ""),
            "command": shlex.join(qemu_argv),
            "dmkit_export": "in-process: dmkit.luks.open(image, key_file=F), "
                            "LuksDevice.export(new file), close (4 MiB requests)",
            "dmkit_export_cli": shlex.join(cli_argv),
            "dmkit_cli_start": shlex.join(start_argv) + " (the new process's start-up and "
                               "imports alone, timed in the same rounds)",
            "note": "each pass: a new output file (removed untimed before the pass), not "
                    "synced by either tool; process start-up counts for the new processes; "
                    "the dmkit processes run with PYTHONPYCACHEPREFIX in the scratch dir "
                    "and without PYTHONDONTWRITEBYTECODE, so after the warm-up pass they "
                    "load cached bytecode as an installed dmkit does",
        }
        if spec.qemu_target is None:
            details["qemu_img"]["role"] = "reference only (no target): no qemu-img reads " \
                                          "this volume"

    # dissect.fve on a prefix of the LUKS2 image
    prefix = min(total, max(req, min(total // 32, DISSECT_MAX_BYTES) // req * req))
    stream, dissect_facts = _dissect_stream(ctx, path, plain, prefix, req)
    details["dissect_fve"] = {**dissect_facts, "bytes_per_pass": prefix}
    if stream is None:
        _log(f"{name}: dissect.fve: {dissect_facts['status']}: {dissect_facts['reason']}")
        details["targets_not_measured"].append(_not_measured(
            name, "dmkit read / dissect.fve read", TARGET_DISSECT, dissect_facts["reason"]))
    if spec.qemu_target is not None and qemu is None:
        for what in ("dmkit export (in-process) / qemu-img convert",
                     "dmkit luks export (new process) / qemu-img convert"):
            details["targets_not_measured"].append(_not_measured(
                name, what, spec.qemu_target, details["qemu_img"]["reason"]))

    def dissect_read() -> int:
        stream.seek(0)
        read = stream.read
        for _ in range(prefix // req):
            if len(read(req)) != req:
                raise RuntimeError("dissect.fve: short read")
        return prefix

    measured = _Recorder(lambda: _read_pass(dev, buf, total))
    raw = _Recorder(lambda: raw_read_pass(raw_files, buf))

    def after_harness(exc_type, exc, tb) -> None:
        """Runs when the case's stack closes: after the harness's (and a profile's) passes,
        before the volume closes and before the runner reads ``details``."""
        if exc_type is not None:
            return
        timed = len(raw.seconds) - _HARNESS_WARMUP
        if timed < 1:
            return
        note = (f"measured after the harness: one untimed pass of each, then {timed} passes "
                "of each interleaved, rotating the order")
        if qemu_passes:
            t = _interleave(qemu_passes, timed)
            q = t["qemu_img_convert"]
            info = details["qemu_img"]
            info.update({"status": "ok", "note_timing": note,
                         "mib_per_s": _stats(q), "seconds": [round(s, 4) for s in q.seconds]})
            ratios = {}
            for key in ("dmkit_export", "dmkit_export_cli"):
                info[f"{key}_mib_per_s"] = _stats(t[key])
                info[f"{key}_seconds"] = [round(s, 4) for s in t[key].seconds]
                ratios[key] = _ratio(t[key], q)
            details["ratio_to_qemu_img"] = ratios
            start = t["dmkit_cli_start"]
            info["dmkit_cli_start_seconds"] = {"best": round(min(start.seconds), 4),
                                               "median": round(statistics.median(
                                                   start.seconds), 4)}
            if spec.qemu_target is not None:
                details["targets"].append(_target(
                    name, "dmkit export (in-process) / qemu-img convert",
                    ratios["dmkit_export"], spec.qemu_target))
                details["targets"].append(_target(
                    name, "dmkit luks export (new process) / qemu-img convert",
                    ratios["dmkit_export_cli"], spec.qemu_target))
            else:
                _log(f"{name}: vs qemu-img convert of the LUKS1 xts image (reference, no "
                     f"target): export {ratios['dmkit_export']['best']:.2f}x, new process "
                     f"{ratios['dmkit_export_cli']['best']:.2f}x")
        if stream is not None:
            t = _interleave([_Pass("dissect_fve", dissect_read),
                             _Pass("dmkit", lambda: _read_pass(dev, buf, prefix))], timed)
            d, m = t["dissect_fve"], t["dmkit"]
            details["dissect_fve"].update({
                "note_timing": note, "mib_per_s": _stats(d),
                "seconds": [round(s, 4) for s in d.seconds],
                "dmkit_same_prefix_mib_per_s": _stats(m)})
            details["ratio_to_dissect_fve"] = _ratio(m, d)
            details["targets"].append(_target(name, "dmkit read / dissect.fve read",
                                              details["ratio_to_dissect_fve"],
                                              TARGET_DISSECT))

    ctx.stack.push(after_harness)
    return Workload(run=measured, baseline=raw, baseline_name="raw os.preadv",
                    details=details)


def _register(spec: _Spec) -> None:
    peers = "qemu-img convert of an equivalent LUKS1 image"
    if spec.qemu_target is None:
        peers += " (reference)"
    peers += " and dissect.fve where it can"

    @register(spec.name, op="read",
              description=f"sequential read (decrypt) of a LUKS2 volume, {spec.what}; also vs "
                          f"{peers} (new processes: start-up counts)")
    def setup(ctx: CaseContext) -> Workload:
        return _luks_case(ctx, spec)


for _spec in SPECS:
    _register(_spec)
del _spec
