"""The registry of benchmark cases.

A case is a setup function, registered by name with :func:`register`.  Given a
:class:`CaseContext` it prepares what it needs (scratch images, a mapped device, a peer
tool's process) and returns a :class:`Workload`: two callables that each do one full pass
of the same work and return the number of bytes processed —

- ``run``: the thing being measured (dmkit, or later a peer tool),
- ``baseline``: the same work on the raw image file(s) with plain positional I/O.

The harness times both, interleaved, in the same run; the report's ratio is
``run`` throughput over ``baseline`` throughput.  Anything the setup opens is registered on
``ctx.stack`` and closed by the runner after the case.  A case that cannot run here (a
target not written yet, a peer tool not installed) raises :class:`Skip` with the reason.

Cases are registered explicitly by the modules that :mod:`benchmarks.cases` imports.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["CASES", "CaseContext", "Case", "Skip", "Workload", "register"]


class Skip(Exception):
    """Raised by a case's setup when the case cannot run here; the message says why."""


@dataclass
class CaseContext:
    """What a case's setup gets from the runner."""

    #: scratch directory for images (created; the case names its files itself)
    dir: str
    #: bytes of work in one pass (the size of the device being read or written)
    total_bytes: int
    #: bytes per request
    request_bytes: int
    #: the one buffer of ``request_bytes`` that every request of every pass reuses
    buffer: bytearray
    #: closes whatever the setup opened, after the case
    stack: contextlib.ExitStack
    #: keep scratch images after the case instead of removing them
    keep: bool = False

    def path(self, name: str) -> str:
        """A scratch file path; the file is removed after the case unless ``keep``."""
        p = os.path.join(self.dir, name)
        if not self.keep:
            self.stack.callback(_unlink_quietly, p)
        return p


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@dataclass
class Workload:
    #: one pass of the measured work; returns bytes processed
    run: Callable[[], int]
    #: one pass of the same work on the raw image(s); returns bytes processed
    baseline: Callable[[], int]
    #: what the baseline is, for the report (``"raw os.preadv"``)
    baseline_name: str
    #: extra facts for the report (the table, the backing images)
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    name: str
    #: ``"read"`` or ``"write"``
    op: str
    #: ``"dmkit"`` for dmkit stacks, ``"peer"`` for other tools doing the same work
    group: str
    description: str
    setup: Callable[[CaseContext], Workload]


CASES: dict[str, Case] = {}


def register(name: str, *, op: str, description: str, group: str = "dmkit"):
    """Decorator: register ``setup`` as the case ``name``."""
    if op not in ("read", "write"):
        raise ValueError(f"case {name}: op must be 'read' or 'write', not {op!r}")
    if group not in ("dmkit", "peer"):
        raise ValueError(f"case {name}: group must be 'dmkit' or 'peer', not {group!r}")

    def deco(setup: Callable[[CaseContext], Workload]):
        if name in CASES:
            raise ValueError(f"benchmark case {name!r} is already registered")
        CASES[name] = Case(name, op, group, description, setup)
        return setup

    return deco
