"""Raw baselines and scratch images.

The baseline for every case is the loop a careful program would write against the image
file itself: ``os.preadv`` into (or ``os.pwrite`` from) one reused buffer, one request
after another, the same request size as the measured work.  Writes sync once per file at
the end of a pass with ``fdatasync`` — what a FLUSH of dmkit's file backend does — and not
per request.
"""

from __future__ import annotations

import os
import random
from typing import Sequence

__all__ = ["fill_image", "open_images", "raw_read_pass", "raw_write_pass", "fill_pattern"]


def fill_pattern(buf: bytearray, seed: int) -> None:
    """Fill ``buf`` with deterministic, incompressible bytes."""
    buf[:] = random.Random(seed).randbytes(len(buf))


def fill_image(path: str, size_bytes: int, request_bytes: int, seed: int = 0) -> None:
    """Create (or overwrite) ``path`` with ``size_bytes`` of written data — no holes — and
    sync it, so reads hit allocated blocks and its pages are in the page cache."""
    buf = bytearray(request_bytes)
    fill_pattern(buf, seed)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        for off in range(0, size_bytes, request_bytes):
            n = min(request_bytes, size_bytes - off)
            _pwrite_all(fd, memoryview(buf)[:n], off)
        os.fdatasync(fd)
    finally:
        os.close(fd)


def _pwrite_all(fd: int, mv: memoryview, offset: int) -> None:
    while mv:
        n = os.pwrite(fd, mv, offset)
        mv, offset = mv[n:], offset + n


def open_images(paths: Sequence[str], *, write: bool) -> list[tuple[int, int]]:
    """Open each image; returns ``(fd, size_bytes)`` pairs.  The caller closes the fds."""
    flags = (os.O_RDWR if write else os.O_RDONLY) | os.O_CLOEXEC
    out = []
    for p in paths:
        fd = os.open(p, flags)
        out.append((fd, os.fstat(fd).st_size))
    return out


def raw_read_pass(files: Sequence[tuple[int, int]], buf: bytearray) -> int:
    """Read each file start to end in ``len(buf)`` requests into ``buf``."""
    mv = memoryview(buf)
    bufs = [mv]
    req = len(mv)
    done = 0
    for fd, size in files:
        if size % req:
            raise ValueError(f"image of {size} bytes is not a multiple of {req}-byte requests")
        for off in range(0, size, req):
            n = os.preadv(fd, bufs, off)
            if n != req:
                raise OSError(f"short read at byte {off}: {n} of {req}")
            done += n
    return done


def raw_write_pass(files: Sequence[tuple[int, int]], buf: bytearray) -> int:
    """Write ``buf`` over each file start to end, then one ``fdatasync`` per file."""
    mv = memoryview(buf)
    req = len(mv)
    done = 0
    for fd, size in files:
        if size % req:
            raise ValueError(f"image of {size} bytes is not a multiple of {req}-byte requests")
        for off in range(0, size, req):
            n = os.pwrite(fd, mv, off)
            if n != req:
                raise OSError(f"short write at byte {off}: {n} of {req}")
            done += n
    for fd, _ in files:
        os.fdatasync(fd)
    return done
