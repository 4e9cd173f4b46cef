"""Small helpers shared by targets."""

from __future__ import annotations

import numpy as np

__all__ = ["zero_fill"]


def zero_fill(mv: memoryview) -> None:
    """Set every byte of ``mv`` to zero, without building a zero buffer of its size."""
    np.frombuffer(mv, dtype=np.uint8)[:] = 0
