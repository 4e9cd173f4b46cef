"""Helpers shared by cases that judge an issue's speed targets: a recorder of the passes
the harness times, rounded statistics, ratios, and a printed ``meets_target`` verdict."""

from __future__ import annotations

import sys
import time
from typing import Callable

from ..harness import Timings

__all__ = ["Recorder", "stats", "ratio", "target"]


class Recorder:
    """Wraps a pass; keeps the wall-clock seconds of every call (the harness times the same
    calls: the difference is one Python call), so a case knows how many timed passes the
    harness made and how long each took."""

    def __init__(self, fn: Callable[[], int]):
        self.fn = fn
        self.seconds: list[float] = []

    def __call__(self) -> int:
        t0 = time.perf_counter()
        n = self.fn()
        self.seconds.append(time.perf_counter() - t0)
        return n


def stats(t: Timings) -> dict:
    return {"best": round(t.best, 1), "median": round(t.median, 1)}


def ratio(a: Timings, b: Timings) -> dict:
    return {"best": round(a.best / b.best, 3), "median": round(a.median / b.median, 3)}


def target(case: str, what: str, r: dict, threshold: float) -> dict:
    """The verdict on one target, judged on the best pass; also printed to stderr."""
    ok = r["best"] >= threshold
    print(f"{case}: target {what} >= {threshold}: best {r['best']:.3f} "
          f"(median {r['median']:.3f}): meets_target: {'true' if ok else 'false'}",
          file=sys.stderr, flush=True)
    return {"target": f"{what} >= {threshold}", "threshold": threshold, "ratio": r,
            "judged_on": "best", "meets_target": ok}
