"""A seekable, file-like view of a BlockDevice (``io.RawIOBase``).

Reads and writes at any byte offset go through :mod:`dmkit.block.rmw`.  The size is
fixed: a read at or past the end returns ``b""``; a write past the end fails with ENOSPC
after writing nothing.  Closing a view that was written issues a FLUSH to the device.
"""

from __future__ import annotations

import errno
import io

from .device import BlockDevice
from .rmw import readinto_bytes, write_bytes

__all__ = ["BlockDeviceIO"]


class BlockDeviceIO(io.RawIOBase):
    def __init__(self, dev: BlockDevice, *, writable: bool | None = None):
        super().__init__()
        self.dev = dev
        self._writable = dev.can_write if writable is None else writable
        if self._writable and not dev.can_write:
            raise io.UnsupportedOperation(f"{dev.name}: device is read-only")
        self._pos = 0
        self._dirty = False

    @property
    def name(self) -> str:
        return self.dev.name

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return self._writable

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._checkClosed()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._checkClosed()
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.dev.size_bytes + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise OSError(errno.EINVAL, f"{self.name}: negative seek position {pos}")
        self._pos = pos
        return pos

    def readinto(self, b) -> int:
        self._checkClosed()
        mv = memoryview(b).cast("B")
        n = max(0, min(len(mv), self.dev.size_bytes - self._pos))
        if n:
            readinto_bytes(self.dev, self._pos, mv[:n])
            self._pos += n
        return n

    def write(self, b) -> int:
        self._checkClosed()
        if not self._writable:
            raise io.UnsupportedOperation("not writable")
        mv = memoryview(b).cast("B")
        if self._pos + len(mv) > self.dev.size_bytes:
            raise OSError(errno.ENOSPC, f"{self.name}: write of {len(mv)} bytes at "
                          f"{self._pos} goes past the end ({self.dev.size_bytes} bytes)")
        write_bytes(self.dev, self._pos, mv)
        self._pos += len(mv)
        self._dirty = self._dirty or len(mv) > 0
        return len(mv)

    def truncate(self, size=None):
        raise io.UnsupportedOperation(f"{self.name}: a block device has a fixed size")

    def sync(self) -> None:
        """Make written data durable (a FLUSH to the device)."""
        self._checkClosed()
        self.dev.flush()
        self._dirty = False

    def close(self) -> None:
        if not self.closed and self._dirty:
            try:
                self.dev.flush()
            finally:
                self._dirty = False
                super().close()
            return
        super().close()
