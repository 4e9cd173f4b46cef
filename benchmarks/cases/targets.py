"""Cases for device-mapper targets: sequential passes over a mapped device.

Each case builds a mapped device from dmsetup table text over scratch images, then reads
(or writes) it start to end in ``request_bytes`` requests through the public BlockDevice
API (``readinto``/``write``, then one ``flush`` for writes), reusing one buffer.  The raw
baseline does the same passes over the backing image files themselves: for a striped set
that is each stripe's image in turn — the same bytes, from the same files, with the same
request size, without the mapping.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

from dmkit.block import SECTOR_SHIFT, BlockDevice
from dmkit.dm import MappedDevice, join_args
from dmkit.targets import TARGETS

from ..raw import fill_image, open_images, raw_read_pass, raw_write_pass
from ..registry import CaseContext, Skip, Workload, register

__all__: list[str] = []

STRIPES = 2
STRIPE_CHUNK_BYTES = 64 << 10


def dm_read_pass(dev: BlockDevice, buf: bytearray) -> int:
    """Read ``dev`` start to end in ``len(buf)`` requests into ``buf``."""
    mv = memoryview(buf)
    step = len(mv) >> SECTOR_SHIFT
    readinto = dev.readinto
    for sector in range(0, dev.nr_sectors, step):
        readinto(sector, mv)
    return dev.nr_sectors << SECTOR_SHIFT


def dm_write_pass(dev: BlockDevice, buf: bytearray) -> int:
    """Write ``buf`` over ``dev`` start to end, then one FLUSH."""
    mv = memoryview(buf)
    step = len(mv) >> SECTOR_SHIFT
    write = dev.write
    for sector in range(0, dev.nr_sectors, step):
        write(sector, mv)
    dev.flush()
    return dev.nr_sectors << SECTOR_SHIFT


def _require_target(name: str) -> None:
    if name not in TARGETS:
        raise Skip(f"the {name!r} target is not in dmkit.targets.TARGETS yet")


def _target_workload(ctx: CaseContext, op: str, name: str, image_sizes: Sequence[int],
                     table: Callable[[list[str]], str]) -> Workload:
    """Scratch images of ``image_sizes`` bytes, a mapped device from ``table(paths)``, and
    the two passes for ``op``."""
    if ctx.total_bytes % ctx.request_bytes:
        raise ValueError(f"{ctx.total_bytes} bytes is not a whole number of "
                         f"{ctx.request_bytes}-byte requests")
    paths = [ctx.path(f"{name}{i}.img") for i in range(len(image_sizes))]
    for i, (path, size) in enumerate(zip(paths, image_sizes)):
        fill_image(path, size, ctx.request_bytes, seed=i + 1)
    write = op == "write"
    files = open_images(paths, write=write)
    for fd, _ in files:
        ctx.stack.callback(os.close, fd)
    table_text = table(paths)
    dev = MappedDevice.from_table(table_text, name=f"bench-{name}", read_only=not write)
    ctx.stack.callback(dev.close)
    if dev.size_bytes != ctx.total_bytes:
        raise RuntimeError(f"{name}: mapped device is {dev.size_bytes} bytes, "
                           f"expected {ctx.total_bytes}")
    buf = ctx.buffer
    if write:
        return Workload(run=lambda: dm_write_pass(dev, buf),
                        baseline=lambda: raw_write_pass(files, buf),
                        baseline_name="raw os.pwrite + one fdatasync per image",
                        details={"table": table_text, "images": len(paths)})
    return Workload(run=lambda: dm_read_pass(dev, buf),
                    baseline=lambda: raw_read_pass(files, buf),
                    baseline_name="raw os.preadv",
                    details={"table": table_text, "images": len(paths)})


# -- linear ---------------------------------------------------------------------------------

def _linear(ctx: CaseContext, op: str) -> Workload:
    nr = ctx.total_bytes >> SECTOR_SHIFT
    return _target_workload(ctx, op, "linear", [ctx.total_bytes],
                            lambda paths: f"0 {nr} linear {join_args(paths[:1])} 0\n")


@register("linear-read", op="read",
          description="sequential read of a linear mapping over one image")
def linear_read(ctx: CaseContext) -> Workload:
    return _linear(ctx, "read")


@register("linear-write", op="write",
          description="sequential write of a linear mapping over one image, one flush at the end")
def linear_write(ctx: CaseContext) -> Workload:
    return _linear(ctx, "write")


# -- striped --------------------------------------------------------------------------------

def _striped(ctx: CaseContext, op: str) -> Workload:
    _require_target("striped")
    width = STRIPES * STRIPE_CHUNK_BYTES
    if ctx.total_bytes % width:
        raise ValueError(f"striped: {ctx.total_bytes} bytes is not a multiple of "
                         f"{STRIPES} stripes x {STRIPE_CHUNK_BYTES} bytes")
    nr = ctx.total_bytes >> SECTOR_SHIFT
    chunk_sectors = STRIPE_CHUNK_BYTES >> SECTOR_SHIFT

    def table(paths: list[str]) -> str:
        devs = " ".join(f"{join_args([p])} 0" for p in paths)
        return f"0 {nr} striped {len(paths)} {chunk_sectors} {devs}\n"

    return _target_workload(ctx, op, "striped", [ctx.total_bytes // STRIPES] * STRIPES, table)


@register("striped-read", op="read",
          description=f"sequential read of a striped set, {STRIPES} images, "
                      f"{STRIPE_CHUNK_BYTES >> 10} KiB chunks")
def striped_read(ctx: CaseContext) -> Workload:
    return _striped(ctx, "read")


@register("striped-write", op="write",
          description=f"sequential write of a striped set, {STRIPES} images, "
                      f"{STRIPE_CHUNK_BYTES >> 10} KiB chunks, one flush at the end")
def striped_write(ctx: CaseContext) -> Workload:
    return _striped(ctx, "write")
