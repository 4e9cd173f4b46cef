"""``dmkit table``: check a table file, show the table of an open device."""

from __future__ import annotations

import click

from ..dm import join_args, parse_table
from ._common import build_table, emit_json, read_table, segments
from .state import StateStore

__all__ = ["table"]


@click.group(short_help="Check tables, show open tables.")
def table():
    """Check tables and show the tables of open devices (dmsetup table)."""


@table.command("check")
@click.argument("file", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Print the segments as a JSON list.")
def check(file: str, as_json: bool):
    """Parse FILE (- for stdin), build the mapped device read-only, print its table.

    The table printed is canonical, as `dmsetup table` prints it.  Every device the table
    names is opened read-only, so a missing image, a target past the end of its device or
    a bad argument is reported with the file and line.  Tables may name open devices as
    /dev/mapper/NAME or NAME.
    """
    text, source = read_table(file)
    with build_table(text, source, read_only=True) as (dev, _):
        if as_json:
            emit_json(segments(dev, "table"))
        else:
            click.echo(dev.table(), nl=False)


@table.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the segments as a JSON list.")
def show(name: str, as_json: bool):
    """Print the table of the open device NAME (dmsetup table NAME).

    This is the canonical table recorded when NAME was opened; `dmkit status NAME` builds
    the device again and so also checks that its devices are still there.
    """
    rec = StateStore().get(name)
    if as_json:
        emit_json([{"start": ln.start_sector, "length": ln.nr_sectors, "target": ln.target_type,
                    "params": join_args(ln.args)} for ln in parse_table(rec.table, name)])
    else:
        click.echo(rec.table, nl=False)
