"""Helpers shared by the CLI commands: reading a table, building it, printing JSON."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import stat
import sys
from typing import TYPE_CHECKING, Iterator

import click

from ..block import BlockDevice, FileDevice
from ..dm import MappedDevice
from ..errors import DeviceError

if TYPE_CHECKING:
    from .state import StateResolver, StateStore
# .state (named devices) is imported where used, and tempfile not at all, so that
# `dmkit luks export` and the other commands that need neither start faster

__all__ = ["read_table", "build_table", "open_named", "segments", "emit_json", "leaf_files",
           "same_file_as_leaf", "replacing_file", "STDIO"]

log = logging.getLogger("dmkit.cli")

STDIO = "-"


def read_table(path: str) -> tuple[str, str]:
    """The text of a table file (``-`` is stdin) and the name errors use for it."""
    try:
        if path == STDIO:
            return sys.stdin.buffer.read().decode("utf-8"), "<stdin>"
        with open(path, encoding="utf-8") as f:
            return f.read(), path
    except UnicodeDecodeError as e:
        where = "<stdin>" if path == STDIO else path
        raise DeviceError(f"{where}: not a text table ({e.reason} at byte {e.start})",
                          errno=errno.EINVAL) from None
    except OSError as e:
        raise DeviceError(f"{path}: cannot read table: {e.strerror}", errno=e.errno) from None


@contextlib.contextmanager
def build_table(text: str, source: str, *, read_only: bool, store: StateStore | None = None,
                name: str | None = None) -> Iterator[tuple[MappedDevice, StateResolver]]:
    """Build the mapped device of ``text``; everything it opened is closed on exit."""
    from .state import StateResolver, StateStore

    resolver = StateResolver(store or StateStore(), read_only=read_only)
    try:
        dev = MappedDevice.from_table(text, name=name or source, resolver=resolver,
                                      read_only=read_only, source=source)
        log.debug("built %s: %d sectors, logical block %d bytes, %s", source, dev.nr_sectors,
                  dev.logical_block_size, "read-only" if read_only else "read-write")
        try:
            yield dev, resolver
        finally:
            dev.close()
    finally:
        resolver.close()


@contextlib.contextmanager
def open_named(name: str, *, store: StateStore | None = None) -> Iterator[MappedDevice]:
    """The open device ``name`` built read-only from its record, closed on exit."""
    from .state import StateResolver, StateStore

    resolver = StateResolver(store or StateStore(), read_only=True)
    try:
        yield resolver.open_named(name)
    finally:
        resolver.close()


def segments(dev: MappedDevice, kind: str) -> list[dict]:
    """Each target of ``dev`` with its ``table`` or ``info`` status, for JSON output."""
    return [{"start": t.start_sector, "length": t.nr_sectors, "target": t.name,
             "params": t.status(kind)} for t in dev.targets]


def emit_json(obj, *, err: bool = False) -> None:
    click.echo(json.dumps(obj, indent=None, separators=(", ", ": ")), err=err)


def leaf_files(dev: BlockDevice) -> Iterator[FileDevice]:
    """The image files and block devices at the bottom of a (stacked) mapped device."""
    if isinstance(dev, FileDevice):
        yield dev
    elif isinstance(dev, MappedDevice):
        for t in dev.targets:
            for d in t.devices():
                yield from leaf_files(d)


def same_file_as_leaf(dev: MappedDevice, st: os.stat_result) -> FileDevice | None:
    """The device under ``dev`` that is the file ``st`` describes, if any."""
    for leaf in leaf_files(dev):
        lst = os.fstat(leaf.fileno())
        if (lst.st_dev, lst.st_ino) == (st.st_dev, st.st_ino):
            return leaf
        if lst.st_rdev and lst.st_rdev == st.st_rdev:
            return leaf
    return None


def _create_temp(directory: str, prefix: str, suffix: str) -> tuple[int, str]:
    """A new file, mode 0600, created exclusively (``tempfile.mkstemp``'s guarantees,
    without importing tempfile, which loads shutil, bz2, lzma and random)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        name = os.path.join(directory, f"{prefix}{os.urandom(6).hex()}{suffix}")
        try:
            return os.open(name, flags, 0o600), name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", directory)


@contextlib.contextmanager
def replacing_file(path: str, st: os.stat_result | None, error_cls=DeviceError):
    """Write a new regular file at ``path`` through a temporary file beside it, renamed
    over ``path`` only when the ``with`` body succeeds: a failed copy leaves an existing
    file untouched.  The result gets the old file's mode (``st``), else what ``open``
    would have given."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = _create_temp(directory, f".{os.path.basename(path)}.", ".dmkit-tmp")
    except OSError as e:
        raise error_cls(f"{path}: cannot create: {e.strerror}", errno=e.errno) from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        if st is not None:
            mode = stat.S_IMODE(st.st_mode)
        else:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
