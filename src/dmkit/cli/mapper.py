"""dmsetup-like named devices: ``open``, ``close``, ``status``, ``ls``.

There is no kernel to hold a device, so an open device is a recorded table (see
:mod:`dmkit.cli.state`): ``open`` builds it once to check it, ``status`` builds it again.
"""

from __future__ import annotations

import errno
import logging
import os

import click

from ..errors import DeviceError, DmkitError
from ._common import build_table, emit_json, open_named, read_table, segments
from .state import Record, StateStore, valid_name

__all__ = ["open_cmd", "close_cmd", "status_cmd", "ls_cmd"]

log = logging.getLogger("dmkit.cli")


def _check_name(ctx, param, value):
    if value is not None and not valid_name(value):
        raise click.BadParameter(
            f"{value!r}: a name is 1 to 127 letters, digits or _.+@:- , not starting with . or -")
    return value


@click.command("open", short_help="Open a named device (dmsetup create).")
@click.option("--table", "table_file", required=True, metavar="FILE",
              type=click.Path(dir_okay=False, allow_dash=True),
              help="The table (dmsetup syntax); - for stdin.")
@click.option("--readonly", "-r", "read_only", is_flag=True,
              help="Open the device and the devices under it read-only.")
@click.argument("name", callback=_check_name)
def open_cmd(table_file: str, read_only: bool, name: str):
    """Open the mapped device NAME from a table (dmsetup create).

    The table is built once, opening its devices, to check it; then its canonical text
    is recorded in the state directory ($DMKIT_STATE_DIR, else $XDG_RUNTIME_DIR/dmkit,
    else ~/.local/state/dmkit).  Other tables can then stack on /dev/mapper/NAME or NAME.
    No kernel device node is created.
    """
    store = StateStore()
    if store.exists(name):
        raise DeviceError(f"{name}: a mapped device of that name is open", errno=errno.EEXIST)
    text, source = read_table(table_file)
    with build_table(text, source, read_only=read_only, store=store, name=name) as (dev, res):
        rec = Record(name=name, table=dev.table(), read_only=read_only, cwd=os.getcwd(),
                     nr_sectors=dev.nr_sectors, uses=tuple(res.used_names))
    store.add(rec)
    log.debug("opened %s (%d sectors), recorded in %s", name, rec.nr_sectors, store.path)


@click.command("close")
@click.argument("name")
def close_cmd(name: str):
    """Close the mapped device NAME (dmsetup remove).

    Fails, changing nothing, while another open device's table uses NAME.
    """
    store = StateStore()
    store.get(name)  # exists and is readable
    holders = []
    for other in store.names():
        if other == name:
            continue
        try:
            rec = store.get(other)
        except DmkitError as e:  # a broken record cannot be built, so it holds nothing
            log.warning("skipping %s: %s", other, e)
            continue
        if name in rec.uses:
            holders.append(other)
    if holders:
        raise DeviceError(f"{name}: device is in use by {', '.join(holders)}",
                          errno=errno.EBUSY)
    store.remove(name)


def _status_json(rec: Record, dev) -> dict:
    return {"name": rec.name, "read_only": rec.read_only, "nr_sectors": dev.nr_sectors,
            "uses": list(rec.uses), "segments": segments(dev, "info")}


@click.command("status", short_help="Status of open devices (dmsetup status).")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status_cmd(name: str | None, as_json: bool):
    """Print the status of NAME, or of every open device (dmsetup status).

    The device is built again from its recorded table, so counters start at zero.
    """
    store = StateStore()
    if name is not None:
        rec = store.get(name)
        with open_named(name, store=store) as dev:
            if as_json:
                emit_json(_status_json(rec, dev))
            else:
                click.echo(dev.status(), nl=False)
        return
    names = store.names()
    out, failed = [], False
    for n in names:
        try:
            rec = store.get(n)
            with open_named(n, store=store) as dev:
                if as_json:
                    out.append(_status_json(rec, dev))
                else:
                    for line in dev.status().splitlines():
                        click.echo(f"{n}: {line}")
        except DmkitError as e:  # report this device, go on with the others
            click.echo(f"dmkit: {e}", err=True)
            failed = True
    if as_json:
        emit_json(out)
    elif not names:
        click.echo("No devices found")
    if failed:
        click.get_current_context().exit(1)


@click.command("ls", short_help="List open devices (dmsetup ls).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ls_cmd(as_json: bool):
    """List the open devices (dmsetup ls): name, size in sectors, rw or ro."""
    store = StateStore()
    recs = store.records()
    if as_json:
        emit_json([{"name": r.name, "nr_sectors": r.nr_sectors, "read_only": r.read_only,
                    "uses": list(r.uses)} for r in recs])
    elif not recs:
        click.echo("No devices found")
    else:
        for r in recs:
            click.echo(f"{r.name}\t{r.nr_sectors}\t{'ro' if r.read_only else 'rw'}")
