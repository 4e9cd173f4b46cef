"""Command groups that later work fills.  They hold no commands yet, on purpose: a command
appears here when it works, not before.  Each group's help says what it will hold."""

from __future__ import annotations

import click

__all__ = ["PLANNED_GROUPS"]

_NOT_YET = "No commands yet: this group is planned, not implemented (see README, Status)."


@click.group(epilog=_NOT_YET, short_help="(planned) NBD and FUSE exports of a device.")
def serve():
    """Export a mapped device to other programs: an NBD server (qemu, nbdcopy,
    nbdinfo, nbdfuse) and a FUSE file (loop devices, mkfs, mount)."""


PLANNED_GROUPS = (serve,)
