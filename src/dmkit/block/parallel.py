"""Copying a device into a regular file on several threads.

dm-crypt decrypts on every CPU (its ``kcryptd`` workqueues); a userspace export that reads
one request at a time uses one.  :func:`export_parallel` runs ``workers`` threads that each
take the next chunk, read it through the device into their own buffer and write it at its
own offset of the output with ``os.pwrite``.  It helps only when the work per request
releases the GIL (``preadv``/``pwrite``, and the C cipher of
:mod:`dmkit.crypto.fastxts`); callers use it for devices whose targets say their reads are
safe on several threads at once (:func:`parallel_reads_safe`).
"""

from __future__ import annotations

import os
import stat
import threading
from typing import Callable

from .device import SECTOR_SHIFT, BlockDevice

__all__ = ["export_parallel", "parallel_reads_safe", "regular_file_fd", "default_workers"]


def default_workers() -> int:
    """One thread per usable CPU, at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


def parallel_reads_safe(dev: BlockDevice) -> bool:
    """Whether ``dev`` (a mapped device) may be read on several threads at once: every
    target says so (``parallel_reads`` true) and so does every device below that is itself
    mapped; plain files and memory devices are."""
    targets = getattr(dev, "targets", None)
    if targets is None:
        return True
    return all(getattr(t, "parallel_reads", False) for t in targets)


def regular_file_fd(f) -> int | None:
    """The descriptor of ``f`` when it is a regular file open for writing (else None)."""
    try:
        fd = f.fileno()
        return fd if stat.S_ISREG(os.fstat(fd).st_mode) else None
    except (AttributeError, OSError, ValueError):
        return None


def export_parallel(dev: BlockDevice, f, *, chunk_bytes: int, workers: int,
                    progress: Callable[[int, int, int], object] | None = None) -> int:
    """Write all of ``dev`` to the regular file ``f`` from its current position, in
    ``chunk_bytes`` requests (a multiple of the logical block size) on ``workers`` threads.
    ``f`` ends positioned after the data.  The first error stops every thread (each
    finishes the chunk it has) and is raised; what was written before stays written.
    Returns the bytes written.  ``progress(done, total, n)`` is called under a lock."""
    total = dev.size_bytes
    f.flush()
    fd = f.fileno()
    base = f.tell()
    chunks = -(-total // chunk_bytes)
    lock = threading.Lock()
    state = {"next": 0, "done": 0}
    errors: list[BaseException] = []

    def worker() -> None:
        buf = memoryview(bytearray(min(chunk_bytes, total)))
        try:
            while True:
                with lock:
                    i = state["next"]
                    if i >= chunks or errors:
                        return
                    state["next"] = i + 1
                off = i * chunk_bytes
                view = buf[:min(chunk_bytes, total - off)]
                dev.readinto(off >> SECTOR_SHIFT, view)
                done = 0
                while done < len(view):
                    done += os.pwrite(fd, view[done:], base + off + done)
                if progress is not None:
                    with lock:
                        state["done"] += len(view)
                        progress(state["done"], total, len(view))
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            with lock:
                errors.append(e)

    threads = [threading.Thread(target=worker, name=f"dmkit-export-{k}", daemon=True)
               for k in range(max(1, min(workers, chunks)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    f.seek(base + total)
    return total
