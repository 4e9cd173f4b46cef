"""The dmkit command line: dmsetup-like verbs over mapped devices in userspace.

This module is the frontend boundary of CONVENTIONS.md ("Errors"), the one place where
broad exceptions are caught.  A failure prints one line, ``dmkit: <message>``, on stderr
and exits with the error's ``exit_code`` (1); a traceback is printed only with ``--debug``.
Usage errors are click's, with exit status 2.

Commands live one concern per module: ``table`` (check, show), ``copy`` (export, import),
``mapper`` (open, close, status, ls), ``integrity`` (integritysetup's verbs),
``luks`` (cryptsetup's LUKS verbs and the decrypted data), ``planned`` (groups later
work fills).
"""

from __future__ import annotations

import logging
import sys
import traceback

import click

from .. import __version__
from ..errors import DmkitError
from ..keys.cli import keyring as keyring_group
from .copy import export_cmd, import_cmd
from .integrity import integrity as integrity_group
from .luks import luks_group
from .mapper import close_cmd, ls_cmd, open_cmd, status_cmd
from .planned import PLANNED_GROUPS
from .table import table as table_group

__all__ = ["cli", "main", "describe_error"]

log = logging.getLogger("dmkit.cli")


def describe_error(exc: BaseException) -> tuple[str, int]:
    """The one-line message and the exit status for a failure that reached the frontend."""
    if isinstance(exc, DmkitError):
        msg, code = str(exc), exc.exit_code
    elif isinstance(exc, OSError):
        if exc.filename is not None and exc.strerror:
            msg = f"{exc.filename}: {exc.strerror}"
        else:
            msg = exc.strerror or str(exc) or type(exc).__name__
        code = 1
    else:
        msg = f"internal error: {type(exc).__name__}: {exc}"
        code = 1
    return " ".join(msg.split("\n")), code


class _StderrHandler(logging.Handler):
    """Log records to whatever stderr is now (click's test runner swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(self.format(record), err=True)
        except Exception:  # logging must never take the command down
            self.handleError(record)


class _Frontend(click.Group):
    """The top-level group: turns failures into one line and an exit status."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except BrokenPipeError:
            raise  # click's standalone mode exits quietly when the reader went away
        except Exception as exc:  # the frontend boundary: the one broad except
            debug = bool(ctx.params.get("debug"))
            msg, code = describe_error(exc)
            if debug:
                traceback.print_exception(exc, file=sys.stderr)
            elif not isinstance(exc, (DmkitError, OSError)):
                msg += " (run with --debug for a traceback)"
            click.echo(f"dmkit: {msg}", err=True)
            ctx.exit(code)


@click.group(cls=_Frontend, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks and debug log messages.")
@click.version_option(__version__, "--version", "-V", prog_name="dmkit")
@click.pass_context
def cli(ctx: click.Context, debug: bool):
    """dmkit: device-mapper, dm-integrity, dm-crypt and LUKS2 in userspace.

    Tables use dmsetup's syntax, one segment per line:
    `<start> <length> <target> <args...>`, in 512-byte sectors.  Devices in a table are
    image files, block devices, or devices opened with `dmkit open` (as /dev/mapper/NAME
    or NAME).
    """
    ctx.ensure_object(dict)["debug"] = debug
    level = logging.DEBUG if debug else logging.WARNING
    root = logging.getLogger("dmkit")
    root.setLevel(level)
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("dmkit: %(levelname)s: %(message)s"))
        root.addHandler(handler)
    log.debug("dmkit %s, Python %s", __version__, sys.version.split()[0])


# The explicit list of commands (no discovery), in the order help shows them.
for _cmd in (table_group, export_cmd, import_cmd, open_cmd, close_cmd, status_cmd, ls_cmd,
             keyring_group, integrity_group, luks_group, *PLANNED_GROUPS):
    cli.add_command(_cmd)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``dmkit``, ``python -m dmkit``)."""
    cli.main(args=argv, prog_name="dmkit")
