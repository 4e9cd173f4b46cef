"""Backend for an image file or a block device node: positional I/O on one descriptor.

Reads fill the bio's buffer in place (``os.preadv``); writes go straight from it.  FLUSH
and FUA become ``fdatasync``.  DISCARD and WRITE_ZEROES punch holes in image files
(reading back zeros) and use ``BLKDISCARD``/``BLKZEROOUT`` on block devices.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import fcntl
import os
import stat
import struct

from ..errors import BlockIOError, DeviceError
from .bio import (OP_DISCARD, OP_FLUSH, OP_READ, OP_WRITE, REQ_FUA, REQ_PREFLUSH, SECTOR_SHIFT,
                  SECTOR_SIZE, Bio)
from .device import BlockDevice, QueueLimits

__all__ = ["FileDevice"]

_BLKGETSIZE64 = 0x80081272
_BLKSSZGET = 0x1268
_BLKPBSZGET = 0x127B
_BLKDISCARD = 0x1277
_BLKZEROOUT = 0x127F
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02

# the C library is already loaded in the process: dlopen(NULL) finds its symbols without
# ctypes.util.find_library, which runs ldconfig (milliseconds at every start-up)
_libc = ctypes.CDLL(None, use_errno=True)
_fallocate = getattr(_libc, "fallocate", None)
if _fallocate is not None:
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
    _fallocate.restype = ctypes.c_int
_sync_file_range = getattr(_libc, "sync_file_range", None)
if _sync_file_range is not None:
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong,
                                 ctypes.c_uint]
    _sync_file_range.restype = ctypes.c_int
_SYNC_FILE_RANGE_WRITE = 2


_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024


class _SizeOnly:
    """Stands in for a buffer when checking a vectored request: only its size is read."""

    __slots__ = ("n", "readonly")

    def __init__(self, n: int, readonly: bool):
        self.n, self.readonly = n, readonly

    def __len__(self) -> int:
        return self.n


class FileDevice(BlockDevice):
    """An image file or block device opened by path.

    An image's size is its length rounded down to whole logical blocks.  A bigger or
    smaller logical block size than 512 can be declared for images (a 4Kn disk image).
    """

    def __init__(self, path: str | os.PathLike, *, read_only: bool = False,
                 logical_block_size: int | None = None, name: str | None = None):
        self.path = os.fspath(path)
        self.name = name or self.path
        self.read_only = read_only
        flags = (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC
        try:
            self._fd = os.open(self.path, flags)
        except OSError as e:
            raise DeviceError(f"{self.path}: cannot open: {e.strerror}", errno=e.errno) from None
        try:
            st = os.fstat(self._fd)
            self.is_blockdev = stat.S_ISBLK(st.st_mode)
            if self.is_blockdev:
                size = struct.unpack("Q", fcntl.ioctl(self._fd, _BLKGETSIZE64, b"\0" * 8))[0]
                lbs = struct.unpack("i", fcntl.ioctl(self._fd, _BLKSSZGET, b"\0" * 4))[0]
                pbs = struct.unpack("I", fcntl.ioctl(self._fd, _BLKPBSZGET, b"\0" * 4))[0]
                lbs = logical_block_size or lbs
            elif stat.S_ISREG(st.st_mode):
                size = st.st_size
                lbs = logical_block_size or SECTOR_SIZE
                pbs = lbs
            else:
                raise DeviceError(f"{self.path}: not a regular file or block device")
            self.limits = QueueLimits(logical_block_size=lbs, physical_block_size=max(lbs, pbs),
                                      io_min=lbs)
        except BaseException:
            os.close(self._fd)
            raise
        self.nr_sectors = size // lbs * (lbs >> SECTOR_SHIFT)
        self.can_discard = self.can_write_zeroes = not read_only

    def fileno(self) -> int:
        return self._fd

    def _submit(self, bio: Bio) -> None:
        op = bio.op
        try:
            if op is OP_READ:
                self._pread(bio.data, bio.sector << SECTOR_SHIFT)
            elif op is OP_WRITE:
                if bio.flags & REQ_PREFLUSH:
                    os.fdatasync(self._fd)
                self._pwrite(bio.data, bio.sector << SECTOR_SHIFT)
                if bio.flags & REQ_FUA:
                    os.fdatasync(self._fd)
            elif op is OP_FLUSH:
                os.fdatasync(self._fd)
            else:  # DISCARD, WRITE_ZEROES
                self._zero_range(bio.sector << SECTOR_SHIFT, bio.nr_sectors << SECTOR_SHIFT,
                                 op is OP_DISCARD)
        except OSError as e:
            if isinstance(e, BlockIOError):
                raise
            raise BlockIOError(f"{self.name}: {op.name.lower()} at sector {bio.sector} failed: "
                               f"{e.strerror}", errno=e.errno or _errno.EIO) from None

    def start_writeback(self, sector: int, nr_sectors: int) -> None:
        """``sync_file_range(SYNC_FILE_RANGE_WRITE)``: the page cache starts writing the
        range's dirty pages to the device now, without waiting for them (nothing becomes
        durable: that still takes a flush, which then has less left to wait for).  A
        no-op where the C library lacks it; a failure is left for the flush to report."""
        if _sync_file_range is not None and nr_sectors > 0:
            _sync_file_range(self._fd, sector << SECTOR_SHIFT, nr_sectors << SECTOR_SHIFT,
                             _SYNC_FILE_RANGE_WRITE)

    def submit_vec(self, op, sector: int, bufs, flags: int = 0) -> None:
        """One preadv/pwritev for all of ``bufs`` (at most IOV_MAX per call)."""
        total = sum(len(b) for b in bufs)
        if total & (SECTOR_SIZE - 1) or not (op is OP_READ or op is OP_WRITE):
            return super().submit_vec(op, sector, bufs, flags)
        self.check_bio(Bio(op, sector, total >> SECTOR_SHIFT, _SizeOnly(total, op is OP_WRITE),
                           flags))
        offset = sector << SECTOR_SHIFT
        try:
            for i in range(0, len(bufs), _IOV_MAX):
                part = bufs[i:i + _IOV_MAX]
                want = sum(len(b) for b in part)
                if op is OP_READ:
                    done = os.preadv(self._fd, part, offset)
                else:
                    if flags & REQ_PREFLUSH and i == 0:
                        os.fdatasync(self._fd)
                    done = os.pwritev(self._fd, part, offset)
                if done != want:  # short transfer: finish buffer by buffer
                    self._finish_vec(op, part, offset, done)
                offset += want
            if op is OP_WRITE and flags & REQ_FUA:
                os.fdatasync(self._fd)
        except OSError as e:
            if isinstance(e, BlockIOError):
                raise
            raise BlockIOError(f"{self.name}: {op.name.lower()} at sector {sector} failed: "
                               f"{e.strerror}", errno=e.errno or _errno.EIO) from None

    def _finish_vec(self, op, bufs, offset: int, done: int) -> None:
        for buf in bufs:
            n = len(buf)
            if done < n:
                rest = buf[done:]
                if op is OP_READ:
                    self._pread(rest, offset + done)
                else:
                    self._pwrite(rest, offset + done)
                done = n
            offset += n
            done -= n

    def _pread(self, mv: memoryview, offset: int) -> None:
        total = len(mv)
        done = os.preadv(self._fd, (mv,), offset)
        while done < total:
            n = os.preadv(self._fd, [mv[done:]], offset + done)
            if n == 0:  # the file shrank under us
                raise BlockIOError(f"{self.name}: short read at byte {offset + done}")
            done += n

    def _pwrite(self, mv: memoryview, offset: int) -> None:
        done, total = 0, len(mv)
        while done < total:
            done += os.pwrite(self._fd, mv[done:], offset + done)

    def _zero_range(self, offset: int, length: int, discard: bool) -> None:
        if self.is_blockdev:
            req = _BLKDISCARD if discard else _BLKZEROOUT
            fcntl.ioctl(self._fd, req, struct.pack("QQ", offset, length))
            return
        if _fallocate is not None:
            if _fallocate(self._fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE,
                          offset, length) == 0:
                return
            err = ctypes.get_errno()
            if err not in (_errno.EOPNOTSUPP, _errno.ENOSYS):
                raise OSError(err, os.strerror(err))
        zeros = bytes(min(length, 1 << 20))
        pos = 0
        while pos < length:
            n = min(len(zeros), length - pos)
            self._pwrite(memoryview(zeros)[:n], offset + pos)
            pos += n

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
