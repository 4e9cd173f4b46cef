"""Progress display for long copies: a tqdm bar on stderr, only when stderr is a terminal.

Nothing is drawn when stderr is a file or a pipe (CI logs, ``2>log``), so output that a
script reads stays clean.
"""

from __future__ import annotations

import sys
from typing import Protocol

__all__ = ["Progress", "progress"]


class Progress(Protocol):
    def update(self, n: int) -> object: ...

    def close(self) -> None: ...


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def progress(total_bytes: int, desc: str) -> Progress:
    """A byte counter for a copy of ``total_bytes``; call ``close()`` when done."""
    if not _stderr_is_terminal():
        return _NoProgress()
    from tqdm import tqdm  # imported only when a bar is drawn: keeps start-up fast

    return tqdm(total=total_bytes, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                file=sys.stderr, leave=False, dynamic_ncols=True)
