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
"""

from __future__ import annotations

__all__: list[str] = []
