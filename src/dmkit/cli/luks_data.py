"""``dmkit luks export`` and ``dmkit luks import``: the decrypted data of a volume."""

from __future__ import annotations

import contextlib
import errno as _errno
import logging
import os
import sys
import time
from typing import BinaryIO, Iterator

import click

import dmkit.luks as luks

from ..errors import DeviceError, IntegrityError
from ._common import STDIO, emit_json
from ._luks_common import (
    AuthenticationFailed,
    _header,
    _header_volume,
    _key_bytes,
    _key_file,
    _key_slot,
    _open_file,
    _options,
    _secrets,
    _stdin_is_tty,
    _vk_file,
    _volume_key,
)
from .copy import _copy_in, _input_file, _output_file
from .progress import progress

__all__ = ["export_cmd", "import_cmd"]

log = logging.getLogger("dmkit.cli")





# -- the data: export and import -------------------------------------------------------------

_data_options = _options(_key_file, _vk_file, _key_slot, _header)


@contextlib.contextmanager
def _open_volume(image, *, key_file, keyfile_offset, keyfile_size, volume_key_file,
                 key_slot, header, writable, integrity_journal=True) -> Iterator[luks.LuksDevice]:
    data = _open_file(image, write=writable)
    try:
        with _secrets() as secrets:
            if volume_key_file is not None:
                with _header_volume(image, header, write=False) as vol:
                    nbytes = _key_bytes(vol)
                vk = _volume_key(volume_key_file, nbytes)
                secrets.held.append(vk)
                cred = {"volume_key": vk}
            else:
                cred = {"passphrase": secrets.get(key_file, keyfile_offset, keyfile_size,
                                                  f"Enter passphrase for {image}: ")}
            hdr = _open_file(header, write=False) if header is not None else None
            try:
                vol = luks.open(data, header=hdr, keyslot=key_slot, writable=writable,
                                integrity_journal=integrity_journal, **cred)
            finally:
                if hdr is not None:
                    hdr.close()
    except BaseException:
        data.close()
        raise
    try:
        yield vol
    finally:
        try:
            vol.close()
        finally:
            data.close()


@contextlib.contextmanager
def _quiet_crypt_log() -> Iterator[None]:
    """The crypt target logs each failed request; export reports each bad sector itself,
    once, so those lines are held back here."""
    logger = logging.getLogger("dmkit.crypt")
    old = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(old)


@click.command("export")
@click.argument("image", metavar="IMAGE")
@click.argument("out", metavar="OUT", type=click.Path(dir_okay=False, allow_dash=True))
@_data_options
@click.option("--zero-on-error", is_flag=True,
              help="Write zeros for sectors that fail authentication (listed on stderr) "
                   "instead of stopping.")
@click.option("--json", "as_json", is_flag=True,
              help='Print {"bytes": N, "bad_sectors": [...], "seconds": S} (on stderr when '
                   'OUT is -).')
def export_cmd(image, out, zero_on_error, as_json, **opts):
    """Copy the decrypted data of IMAGE into OUT (a path, or - for stdout).

    IMAGE is opened read-only.  With integrity, a sector that fails authentication stops
    the export with its sector named (an existing OUT is left as it was), unless
    --zero-on-error.  Sectors are 512-byte units from the start of the volume.
    """
    t0 = time.monotonic()
    _refuse_same_file(out, image, opts.get("header"))
    with _open_volume(image, writable=False, **opts) as vol, _quiet_crypt_log():
        dev = vol.device
        if out == STDIO:
            stream = sys.stdout.buffer
            if stream.isatty():
                raise click.UsageError("refusing to write binary data to a terminal: "
                                       "redirect stdout or give OUT a path")
            bad = _copy_out(vol, stream, zero_on_error, image)
            stream.flush()
        else:
            with _output_file(out, dev) as f:
                bad = _copy_out(vol, f, zero_on_error, image)
        nbytes = dev.size_bytes
    if bad:
        shown = ", ".join(map(str, bad[:50])) + (f", ... ({len(bad)} in all)"
                                                 if len(bad) > 50 else "")
        click.echo(f"dmkit: {image}: zero-filled {len(bad)} sector(s) that failed "
                   f"authentication, at sectors: {shown}", err=True)
    if as_json:
        emit_json({"bytes": nbytes, "bad_sectors": bad,
                   "seconds": round(time.monotonic() - t0, 6)}, err=out == STDIO)


def _refuse_same_file(path: str, *devices: str | None) -> None:
    try:
        st = os.stat(path)
    except OSError:
        return
    for d in devices:
        if d is None:
            continue
        try:
            ds = os.stat(d)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (ds.st_dev, ds.st_ino) or \
                (st.st_rdev and st.st_rdev == ds.st_rdev):
            raise DeviceError(f"{path}: this is {d}, which the volume uses; refusing to "
                              "overwrite it", errno=_errno.EBUSY)


def _copy_out(vol: luks.LuksDevice, f: BinaryIO, zero_on_error: bool, image: str
              ) -> list[int]:
    bar = progress(vol.size_bytes, "export")
    try:
        return vol.export(f, zero_on_error=zero_on_error,
                          progress=lambda done, total, n: bar.update(n))
    except IntegrityError as e:
        raise AuthenticationFailed(
            f"{image}: sector {e.sector} failed authentication (INTEGRITY AEAD ERROR); "
            "export stopped (--zero-on-error writes zeros for such sectors and lists "
            "them)") from None
    finally:
        bar.close()


@click.command("import")
@click.argument("image", metavar="IMAGE")
@click.argument("input_path", metavar="IN", type=click.Path(dir_okay=False, allow_dash=True))
@_data_options
@click.option("--integrity-no-journal", is_flag=True,
              help="Write without the dm-integrity journal (faster; a crash can leave "
                   "sectors failing authentication).")
@click.option("--json", "as_json", is_flag=True, help='Print {"bytes": N, "seconds": S}.')
def import_cmd(image, input_path, integrity_no_journal, as_json, **opts):
    """Write IN (a path, or - for stdin) into the volume on IMAGE from its first sector.

    The data is encrypted (and authenticated) as the kernel would write it.  IN may be
    shorter than the volume, not longer: that is refused before anything is written.
    """
    if input_path == STDIO and opts.get("key_file") == STDIO:
        raise click.UsageError("IN and --key-file cannot both be stdin")
    if input_path == STDIO and opts.get("key_file") is None and \
            opts.get("volume_key_file") is None and not _stdin_is_tty():
        raise click.UsageError("IN is stdin: give the passphrase with --key-file")
    _refuse_same_file(input_path, image, opts.get("header"))
    t0 = time.monotonic()
    with _open_volume(image, writable=True, integrity_journal=not integrity_no_journal,
                      **opts) as vol:
        dev = vol.device
        with _input_file(input_path, dev) as (f, size):
            _copy_in(dev, f, size, "<stdin>" if input_path == STDIO else input_path)
            dev.flush()
    if as_json:
        emit_json({"bytes": size, "seconds": round(time.monotonic() - t0, 6)})
