"""dmkit.block.parallel: a device copied into a regular file on several threads."""

from __future__ import annotations

import io
import threading

import pytest

from dmkit.block import Bio, BlockDevice, MemoryDevice
from dmkit.block.bio import OP_READ
from dmkit.block.parallel import export_parallel, parallel_reads_safe, regular_file_fd
from dmkit.errors import BlockIOError

from .conftest import pattern


class _Slow(BlockDevice):
    """A memory device that fails reads touching ``bad`` and records the threads used."""

    def __init__(self, nr: int, bad: int | None = None, *, wait_for_second: bool = False):
        self.inner = MemoryDevice(nr, initial=pattern(0, nr))
        self.name, self.nr_sectors, self.limits = "slow", nr, self.inner.limits
        self.read_only = False
        self.bad = bad
        self.threads: set[int] = set()
        self._second = threading.Event() if wait_for_second else None

    def _submit(self, bio: Bio) -> None:
        assert bio.op is OP_READ
        self.threads.add(threading.get_ident())
        if self._second is not None:  # hold the first reads until a second thread reads
            if len(self.threads) >= 2:
                self._second.set()
            self._second.wait(timeout=10)
        if self.bad is not None and bio.sector <= self.bad < bio.sector + bio.nr_sectors:
            raise BlockIOError(f"slow: sector {self.bad}: I/O error")
        self.inner.submit(bio)


@pytest.mark.parametrize("workers", [1, 2, 5])
def test_copies_everything_in_place_on_several_threads(tmp_path, workers):
    dev = _Slow(300, wait_for_second=workers > 1)
    p = tmp_path / "out"
    with open(p, "wb") as f:
        f.write(b"x" * 7)
        assert export_parallel(dev, f, chunk_bytes=16 << 10, workers=workers) == 300 * 512
        assert f.tell() == 7 + 300 * 512
    assert p.read_bytes() == b"x" * 7 + pattern(0, 300)
    assert (len(dev.threads) >= 2) == (workers > 1)


def test_the_first_error_is_raised_and_the_threads_stop(tmp_path):
    dev = _Slow(512, bad=300)
    with open(tmp_path / "out", "wb") as f:
        with pytest.raises(BlockIOError, match="sector 300"):
            export_parallel(dev, f, chunk_bytes=8 << 10, workers=3)


def test_which_devices_and_files_qualify(tmp_path):
    assert parallel_reads_safe(MemoryDevice(8))
    assert regular_file_fd(io.BytesIO()) is None
    with open(tmp_path / "f", "wb") as f:
        assert regular_file_fd(f) == f.fileno()
    with open("/dev/null", "wb") as f:
        assert regular_file_fd(f) is None
