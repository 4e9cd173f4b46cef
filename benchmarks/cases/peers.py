"""Cases that run peer tools on the same work — the place for qemu-img, nbdkit, nbdcopy.

None is registered yet: this is where they go, so the report compares dmkit, the raw
image and the tools people use today, in one run.  A peer case is registered with
``group="peer"`` and follows the same contract as every case (see
:mod:`benchmarks.registry`): its setup prepares scratch images in ``ctx.dir``, raises
:class:`~benchmarks.registry.Skip` naming the missing tool when ``shutil.which`` does not
find it, and returns a Workload whose ``run`` makes the tool do one full pass and returns
the bytes it moved, with the same raw baseline as the dm cases
(:func:`benchmarks.raw.raw_read_pass`/:func:`~benchmarks.raw.raw_write_pass`).

Planned, once the dmkit side exists to compare against:

- ``qemu-img convert -n -f raw -O raw`` from the image (the peer of ``dmkit export``);
- ``nbdkit file`` served to ``nbdcopy`` (the peer of dmkit's NBD server);
- the same through ``nbdkit`` filters where dmkit has the matching target.

A peer's process start-up counts in its time (it is part of using the tool); say so in
the case's description.

The helpers below run peer tools for any case: :mod:`benchmarks.cases.luks` times
``qemu-img convert`` (and ``dmkit luks export`` in a new process) with them, as comparisons
inside its dmkit cases.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Mapping, Sequence

__all__ = ["find_tool", "run_tool", "tool_version", "image_opts_value"]


def find_tool(name: str) -> str | None:
    """The path of the peer tool ``name`` on ``PATH``, or None."""
    return shutil.which(name)


def run_tool(argv: Sequence[str], *, env: Mapping[str, str] | None = None,
             timeout: float = 3600) -> None:
    """Run a peer tool (or a dmkit command in a new process) to completion, its output
    discarded unless it fails; a non-zero exit raises RuntimeError with its stderr.
    ``env`` replaces the environment (default: this process's)."""
    proc = subprocess.run(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, env=env, timeout=timeout, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise RuntimeError(f"{os.path.basename(argv[0])} exited {proc.returncode}: {err}")


def tool_version(argv: Sequence[str]) -> str:
    """The first line a tool prints for its version option (``["qemu-img", "--version"]``),
    or ``"unknown"``."""
    try:
        out = subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True,
                             timeout=60, check=False).stdout.decode(errors="replace")
    except OSError:
        return "unknown"
    return out.strip().splitlines()[0] if out.strip() else "unknown"


def image_opts_value(value: str) -> str:
    """``value`` escaped for a QEMU ``key=value,...`` option string (commas doubled)."""
    return value.replace(",", ",,")
