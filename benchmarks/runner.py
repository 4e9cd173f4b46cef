"""The benchmark runner: ``python -m benchmarks [options]``.

Prints one JSON document on stdout (the report) and progress, skip reasons and optional
profiles on stderr.  Exit status is 0 when every selected case ran or was skipped, 1 when
a case failed, 2 on bad options.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import fnmatch
import io
import json
import os
import pstats
import sys
from pathlib import Path
from typing import Sequence

import dmkit

from . import cases as _cases  # noqa: F401  (registers the cases)
from .harness import MIB, Timings, machine_info, measure
from .raw import fill_pattern
from .registry import CASES, Case, CaseContext, Skip

__all__ = ["main", "run", "select_cases", "DEFAULT_DIR"]

#: scratch images go here by default; the repository's .gitignore lists it
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "bench-data"
WARMUP_PASSES = 1

NOTES = [
    "ratio = measured MiB/s / raw baseline MiB/s from the same run (1.0 = as fast as raw, "
    "<1 slower); best is best pass over best pass, median over median",
    "raw baseline: the same passes with os.preadv/os.pwrite on the backing image file(s), "
    "same request size, same reused buffer; for a striped set, each stripe image in turn",
    "one request-size buffer is reused for every request of every pass (no per-request "
    "allocation by the benchmark loop; dmkit's own per-request objects are measured)",
    "writes: no sync per request; one fdatasync per image (dmkit: one FLUSH, which its "
    "file backend turns into fdatasync) at the end of each pass, inside the timed region",
    "reads: images are fully written (no holes) and synced during setup, then one untimed "
    "warm-up pass of each side: the page cache is warm for raw and dmkit alike",
    "raw and measured passes are interleaved, alternating which goes first",
]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Throughput of dmkit stacks against the raw image, as JSON on stdout.")
    p.add_argument("--size-mib", type=_positive_int, default=256,
                   help="bytes of work per pass, in MiB (default 256)")
    p.add_argument("--request-kib", type=_positive_int, default=1024,
                   help="request size in KiB (default 1024)")
    p.add_argument("--repeat", type=_positive_int, default=3,
                   help="timed passes per side; best and median are reported (default 3)")
    p.add_argument("--cases", action="append", metavar="NAMES",
                   help="comma-separated case names or globs (linear-*); may be repeated; "
                        "default all")
    p.add_argument("--dir", default=str(DEFAULT_DIR),
                   help="directory for scratch images (default: bench-data/ in the repo)")
    p.add_argument("--keep", action="store_true",
                   help="keep the scratch images after each case")
    p.add_argument("--profile", action="store_true",
                   help="after timing, profile one measured pass per case (cProfile, "
                        "to stderr)")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    return p


def select_cases(patterns: Sequence[str] | None) -> list[Case]:
    """The registered cases matching any of ``patterns`` (all when none), in registry
    order.  A pattern that matches nothing is an error."""
    if not patterns:
        return list(CASES.values())
    words = [w.strip() for p in patterns for w in p.split(",") if w.strip()]
    for w in words:
        if not fnmatch.filter(CASES, w):
            raise ValueError(f"no benchmark case matches {w!r} "
                             f"(cases: {', '.join(CASES)})")
    return [c for name, c in CASES.items() if any(fnmatch.fnmatchcase(name, w) for w in words)]


def _throughput(t: Timings) -> dict:
    return {"best": round(t.best, 1), "median": round(t.median, 1)}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _run_case(case: Case, args, total_bytes: int, request_bytes: int) -> dict:
    entry: dict = {"case": case.name, "group": case.group, "op": case.op,
                   "description": case.description, "request_bytes": request_bytes,
                   "total_bytes": total_bytes, "repeat": args.repeat}
    buf = bytearray(request_bytes)
    fill_pattern(buf, 0xD3)  # what writes write; reads overwrite it
    with contextlib.ExitStack() as stack:
        ctx = CaseContext(dir=args.dir, total_bytes=total_bytes, request_bytes=request_bytes,
                          buffer=buf, stack=stack, keep=args.keep)
        try:
            work = case.setup(ctx)
        except Skip as e:
            _log(f"{case.name}: skipped: {e}")
            return {**entry, "status": "skipped", "reason": str(e)}
        run_t, base_t = measure(work, args.repeat, warmup=WARMUP_PASSES)
        if args.profile:
            _profile(case.name, work.run)
    entry.update({
        "status": "ok",
        "mib_per_s": _throughput(run_t),
        "baseline": {"name": work.baseline_name, "mib_per_s": _throughput(base_t)},
        "ratio": {"best": round(run_t.best / base_t.best, 3),
                  "median": round(run_t.median / base_t.median, 3)},
        "seconds": [round(s, 5) for s in run_t.seconds],
        "baseline_seconds": [round(s, 5) for s in base_t.seconds],
        **work.details,
    })
    _log(f"{case.name}: {run_t.best:.0f} MiB/s, raw {base_t.best:.0f} MiB/s, "
         f"ratio {entry['ratio']['best']:.3f} (best of {args.repeat}; "
         f"median ratio {entry['ratio']['median']:.3f})")
    return entry


def _profile(name: str, fn) -> None:
    prof = cProfile.Profile()
    prof.runcall(fn)
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(20)
    _log(f"--- profile of one measured pass of {name} (sorted by own time) ---")
    _log(out.getvalue())


def run(args: argparse.Namespace) -> tuple[dict, bool]:
    """Run the selected cases; returns (report, all cases ran or were skipped)."""
    selected = select_cases(args.cases)
    total_bytes = args.size_mib * MIB
    request_bytes = args.request_kib << 10
    if request_bytes > total_bytes or total_bytes % request_bytes:
        raise ValueError(f"--size-mib {args.size_mib} is not a whole number of "
                         f"--request-kib {args.request_kib} requests")
    os.makedirs(args.dir, exist_ok=True)
    ok = True
    results = []
    for case in selected:
        try:
            results.append(_run_case(case, args, total_bytes, request_bytes))
        except Exception as e:  # one broken case must not hide the others' numbers
            ok = False
            _log(f"{case.name}: failed: {type(e).__name__}: {e}")
            results.append({"case": case.name, "group": case.group, "op": case.op,
                            "status": "error", "reason": f"{type(e).__name__}: {e}"})
    report = {
        "dmkit_version": dmkit.__version__,
        "machine": machine_info(),
        "config": {"size_mib": args.size_mib, "request_kib": args.request_kib,
                   "repeat": args.repeat, "warmup_passes": WARMUP_PASSES,
                   "dir": os.path.abspath(args.dir),
                   "cases": [c.name for c in selected]},
        "notes": NOTES,
        "cases": results,
    }
    return report, ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        for c in CASES.values():
            print(f"{c.name:16} {c.group:6} {c.op:6} {c.description}")
        return 0
    try:
        report, ok = run(args)
    except ValueError as e:
        parser.error(str(e))
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    sys.stdout.flush()
    return 0 if ok else 1
