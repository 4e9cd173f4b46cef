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

import importlib
import logging
import sys
import traceback

import click

from .. import __version__
from ..errors import DmkitError

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


# The explicit list of commands (no discovery), in the order help shows them: name ->
# "module:attribute".  A command's module is imported only when that command runs (or
# help lists it), so `dmkit luks export` does not import the integrity CLI: start-up is
# part of every command's time (benchmarks/cases/luks.py times the CLI as a process).
COMMANDS: dict[str, str] = {
    "table": "dmkit.cli.table:table",
    "export": "dmkit.cli.copy:export_cmd",
    "import": "dmkit.cli.copy:import_cmd",
    "open": "dmkit.cli.mapper:open_cmd",
    "close": "dmkit.cli.mapper:close_cmd",
    "status": "dmkit.cli.mapper:status_cmd",
    "ls": "dmkit.cli.mapper:ls_cmd",
    "keyring": "dmkit.keys.cli:keyring",
    "integrity": "dmkit.cli.integrity:integrity",
    "luks": "dmkit.cli.luks:luks_group",
    "serve": "dmkit.cli.planned:serve",
}


class _Frontend(click.Group):
    """The top-level group: turns failures into one line and an exit status, and loads
    each command's module when the command is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        path = COMMANDS.get(name)
        if path is None:
            return None
        module, _, attr = path.partition(":")
        return getattr(importlib.import_module(module), attr)

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



def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``dmkit``, ``python -m dmkit``)."""
    cli.main(args=argv, prog_name="dmkit")
