"""The shared timing harness.

Every case is timed the same way: one untimed warm-up pass of the baseline and of the
measured work, then ``repeat`` timed passes of each, interleaved and alternating which goes
first (so drift in the machine — page cache, CPU frequency, writeback — hits both alike).
Throughput is bytes over wall-clock seconds (``time.perf_counter``) of a whole pass; the
report gives the best and the median pass.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

from .registry import Workload

__all__ = ["MIB", "Timings", "measure", "time_pass", "machine_info"]

MIB = 1 << 20


@dataclass
class Timings:
    """The timed passes of one callable."""

    seconds: list[float]
    bytes_per_pass: int

    @property
    def mib_per_s(self) -> list[float]:
        return [self.bytes_per_pass / MIB / s for s in self.seconds]

    @property
    def best(self) -> float:
        return max(self.mib_per_s)

    @property
    def median(self) -> float:
        return statistics.median(self.mib_per_s)


def time_pass(fn: Callable[[], int]) -> tuple[float, int]:
    """Run one pass; returns (seconds, bytes processed)."""
    t0 = time.perf_counter()
    nbytes = fn()
    return time.perf_counter() - t0, nbytes


def measure(work: Workload, repeat: int, *, warmup: int = 1) -> tuple[Timings, Timings]:
    """Time ``work.run`` and ``work.baseline``; returns (run, baseline) timings.

    Both must process the same number of bytes in every pass — the same work — or this
    raises, as a benchmark that compares different work is worse than none.
    """
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    expected: int | None = None

    def check(nbytes: int, what: str) -> None:
        nonlocal expected
        if not isinstance(nbytes, int) or nbytes <= 0:
            raise RuntimeError(f"{what} pass returned {nbytes!r}, not a byte count")
        if expected is None:
            expected = nbytes
        elif nbytes != expected:
            raise RuntimeError(f"{what} pass processed {nbytes} bytes, expected {expected}")

    for _ in range(warmup):
        check(work.baseline(), "baseline")
        check(work.run(), "measured")
    run_s: list[float] = []
    base_s: list[float] = []
    for i in range(repeat):
        order = ((work.baseline, base_s, "baseline"), (work.run, run_s, "measured"))
        for fn, out, what in (order if i % 2 == 0 else order[::-1]):
            seconds, nbytes = time_pass(fn)
            check(nbytes, what)
            out.append(seconds)
    assert expected is not None
    return Timings(run_s, expected), Timings(base_s, expected)


def machine_info() -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = None
    return {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_build": " ".join(platform.python_build()),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "byteorder": sys.byteorder,
    }
