"""The registry of targets: the table name of each, and its class.

Explicit on purpose: a new target is added here by hand.
"""

from __future__ import annotations

from ..dm.target import Target
from .crypt import CryptTarget
from .error import ErrorTarget
from .flakey import FlakeyTarget
from .integrity.target import IntegrityTarget
from .linear import LinearTarget
from .striped import StripedTarget
from .zero import ZeroTarget

__all__ = ["TARGETS", "get_target_class", "register_target"]

TARGETS: dict[str, type[Target]] = {
    "linear": LinearTarget,
    "zero": ZeroTarget,
    "error": ErrorTarget,
    "flakey": FlakeyTarget,
    "striped": StripedTarget,
    "integrity": IntegrityTarget,
    "crypt": CryptTarget,
}


def get_target_class(name: str) -> type[Target] | None:
    return TARGETS.get(name)


def register_target(cls: type[Target]) -> None:
    """Add a target class (for tests and extensions); its ``name`` must be new."""
    if cls.name in TARGETS:
        raise ValueError(f"target {cls.name!r} is already registered")
    TARGETS[cls.name] = cls
