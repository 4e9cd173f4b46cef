"""``dmkit export`` and ``dmkit import``: copy a whole mapped device out, or data in.

Copies go in large requests (``CHUNK_BYTES``) through one reused buffer.  Neither command
leaves a half-done result where it can be avoided:

- ``export`` to a regular file writes a temporary file beside it and renames it into
  place on success, so a failed read (an ``error`` target, a missing image) leaves an
  existing OUT as it was;
- ``import`` learns the size of its input before it writes anything, and refuses an
  input larger than the device.  Writing the same image the table reads, or reading the
  image it writes, is refused.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import sys
import time
from typing import BinaryIO, Iterator

import click

from ..block import SECTOR_SHIFT, write_bytes
from ..dm import MappedDevice
from ..errors import DeviceError, DmkitError
from ._common import STDIO, build_table, emit_json, read_table, replacing_file, same_file_as_leaf
from .progress import progress

__all__ = ["export_cmd", "import_cmd", "CHUNK_BYTES"]

log = logging.getLogger("dmkit.cli")

#: bytes per request; a multiple of every logical block size (at most 64 KiB)
CHUNK_BYTES = 4 << 20

_table_option = click.option(
    "--table", "table_file", required=True, metavar="FILE",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="The table (dmsetup syntax) of the mapped device; - for stdin.")
_json_option = click.option(
    "--json", "as_json", is_flag=True,
    help='Print a JSON summary {"bytes": N, "seconds": S} (on stderr when OUT is -).')


# -- export ------------------------------------------------------------------------------

@click.command("export", short_help="Read the whole mapped device into OUT.")
@_table_option
@_json_option
@click.argument("out", metavar="OUT", type=click.Path(dir_okay=False, allow_dash=True))
def export_cmd(table_file: str, out: str, as_json: bool):
    """Read the whole mapped device into OUT (a path, or - for stdout).

    The devices the table names are opened read-only.
    """
    text, source = read_table(table_file)
    with build_table(text, source, read_only=True) as (dev, _):
        t0 = time.monotonic()
        if out == STDIO:
            stream = sys.stdout.buffer
            if stream.isatty():
                raise click.UsageError("refusing to write binary data to a terminal: "
                                       "redirect stdout or give OUT a path")
            _copy_out(dev, stream)
            stream.flush()
        else:
            with _output_file(out, dev) as f:
                _copy_out(dev, f)
        seconds = time.monotonic() - t0
    _summary("exported", dev.size_bytes, seconds, as_json, json_to_stderr=out == STDIO)


def _copy_out(dev: MappedDevice, f: BinaryIO) -> None:
    total = dev.size_bytes
    buf = memoryview(bytearray(min(CHUNK_BYTES, total)))
    bar = progress(total, "export")
    try:
        done = 0
        while done < total:
            n = min(len(buf), total - done)
            dev.readinto(done >> SECTOR_SHIFT, buf[:n])
            f.write(buf[:n])
            done += n
            bar.update(n)
    finally:
        bar.close()


@contextlib.contextmanager
def _output_file(path: str, dev: MappedDevice) -> Iterator[BinaryIO]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        leaf = same_file_as_leaf(dev, st)
        if leaf is not None:
            raise DeviceError(f"{path}: the table reads this file (as {leaf.name}); "
                              "refusing to overwrite it", errno=errno.EBUSY)
        if not stat.S_ISREG(st.st_mode):  # a block device, /dev/null, a FIFO: in place
            with open(path, "wb") as f:
                yield f
            return
    with replacing_file(path, st, DeviceError) as f:
        yield f


# -- import ------------------------------------------------------------------------------

@click.command("import", short_help="Write IN through the mapped device.")
@_table_option
@_json_option
@click.argument("input_path", metavar="IN", type=click.Path(dir_okay=False, allow_dash=True))
def import_cmd(table_file: str, input_path: str, as_json: bool):
    """Write the bytes of IN (a path, or - for stdin) through the mapped device from sector 0.

    IN may be shorter than the device (the rest is left as it is) but not longer: that is
    an error before anything is written.  A last piece that is not a whole logical block
    is merged with the device's data (read-modify-write).  The device is flushed at the end.
    """
    if table_file == STDIO and input_path == STDIO:
        raise click.UsageError("the table and IN cannot both come from stdin")
    text, source = read_table(table_file)
    with build_table(text, source, read_only=False) as (dev, _), \
            _input_file(input_path, dev) as (f, size):
        t0 = time.monotonic()
        _copy_in(dev, f, size, input_path)
        dev.flush()
        seconds = time.monotonic() - t0
    _summary("imported", size, seconds, as_json, json_to_stderr=False)


@contextlib.contextmanager
def _input_file(path: str, dev: MappedDevice) -> Iterator[tuple[BinaryIO, int]]:
    """IN opened for reading, with its size known and checked against the device.

    A source that cannot seek (stdin, a pipe) is first copied to a temporary file, stopping
    as soon as it proves larger than the device.
    """
    name = "<stdin>" if path == STDIO else path
    limit = dev.size_bytes
    with contextlib.ExitStack() as stack:
        if path == STDIO:
            f = sys.stdin.buffer
        else:
            try:
                f = stack.enter_context(open(path, "rb", buffering=0))
            except OSError as e:
                raise DeviceError(f"{path}: cannot open: {e.strerror}", errno=e.errno) from None
            leaf = same_file_as_leaf(dev, os.fstat(f.fileno()))
            if leaf is not None:
                raise DeviceError(f"{path}: the table writes this file (as {leaf.name}); "
                                  "refusing to copy it onto itself", errno=errno.EBUSY)
        if _seekable(f):
            pos = f.tell()  # stdin redirected from a file may not be at its start
            size = f.seek(0, os.SEEK_END) - pos
            f.seek(pos)
        else:
            import tempfile     # here: it loads shutil, bz2, lzma, random (start-up)
            spool = stack.enter_context(tempfile.TemporaryFile(prefix="dmkit-import-"))
            size = _spool(f, spool, limit, name)
            f = spool
        if size > limit:
            raise DmkitError(f"{name}: input is {size} bytes, larger than the mapped device "
                             f"({limit} bytes); nothing was written", errno=errno.ENOSPC)
        log.debug("import of %d bytes from %s", size, name)
        yield f, size


def _seekable(f) -> bool:
    try:
        return f.seekable()
    except (OSError, ValueError):
        return False


def _spool(src, dst, limit: int, name: str) -> int:
    size = 0
    while True:
        chunk = src.read(CHUNK_BYTES)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise DmkitError(f"{name}: input is more than {limit} bytes, larger than the "
                             "mapped device; nothing was written", errno=errno.ENOSPC)
        dst.write(chunk)
    dst.seek(0)
    return size


def _copy_in(dev: MappedDevice, f: BinaryIO, size: int, name: str) -> None:
    lbs = dev.logical_block_size
    buf = memoryview(bytearray(min(CHUNK_BYTES, size)))
    bar = progress(size, "import")
    try:
        done = 0
        while done < size:
            n = min(len(buf), size - done)
            got = _read_full(f, buf[:n])
            if got < n:
                raise DmkitError(f"{name}: input ended at byte {done + got}, expected {size}")
            aligned = n // lbs * lbs
            if aligned:
                dev.write(done >> SECTOR_SHIFT, buf[:aligned])
            if aligned < n:  # only the last piece: merge it with the block it lands in
                write_bytes(dev, done + aligned, buf[aligned:n])
            done += n
            bar.update(n)
    finally:
        bar.close()


def _read_full(f, mv: memoryview) -> int:
    got = 0
    while got < len(mv):
        n = f.readinto(mv[got:])
        if not n:
            break
        got += n
    return got


# -- reporting ---------------------------------------------------------------------------

def _summary(verb: str, nbytes: int, seconds: float, as_json: bool, *,
             json_to_stderr: bool) -> None:
    if as_json:
        emit_json({"bytes": nbytes, "seconds": round(seconds, 6)}, err=json_to_stderr)
        return
    rate = nbytes / seconds / (1 << 20) if seconds > 0 else float("inf")
    click.echo(f"dmkit: {verb} {nbytes} bytes ({nbytes / (1 << 20):.1f} MiB) in "
               f"{seconds:.2f} s ({rate:.0f} MiB/s)", err=True)
