"""The registry of targets: the table name of each, and where its class lives.

Explicit on purpose: a new target is added to ``_BUILTIN`` by hand.  Classes are imported
when a table first names them, so a command that only needs ``crypt`` does not pay for
importing ``integrity`` (start-up time of the CLI is measured in benchmarks/).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping

from ..dm.target import Target

__all__ = ["TARGETS", "get_target_class", "register_target"]

_BUILTIN: dict[str, str] = {
    "linear": "dmkit.targets.linear:LinearTarget",
    "zero": "dmkit.targets.zero:ZeroTarget",
    "error": "dmkit.targets.error:ErrorTarget",
    "flakey": "dmkit.targets.flakey:FlakeyTarget",
    "striped": "dmkit.targets.striped:StripedTarget",
    "integrity": "dmkit.targets.integrity.target:IntegrityTarget",
    "crypt": "dmkit.targets.crypt:CryptTarget",
}


class _Registry(MutableMapping):
    """name -> Target class; a built-in class is imported on first lookup."""

    def __init__(self, paths: dict[str, str]):
        self._paths = dict(paths)
        self._classes: dict[str, type[Target]] = {}

    def __getitem__(self, name: str) -> type[Target]:
        cls = self._classes.get(name)
        if cls is None:
            module, _, attr = self._paths[name].partition(":")
            cls = self._classes[name] = getattr(importlib.import_module(module), attr)
        return cls

    def __setitem__(self, name: str, cls: type[Target]) -> None:
        self._classes[name] = cls
        self._paths.setdefault(name, f"{cls.__module__}:{cls.__qualname__}")

    def __delitem__(self, name: str) -> None:
        del self._paths[name]
        self._classes.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    def __contains__(self, name) -> bool:
        return name in self._paths


TARGETS: MutableMapping[str, type[Target]] = _Registry(_BUILTIN)


def get_target_class(name: str) -> type[Target] | None:
    return TARGETS[name] if name in TARGETS else None


def register_target(cls: type[Target]) -> None:
    """Add a target class (for tests and extensions); its ``name`` must be new."""
    if cls.name in TARGETS:
        raise ValueError(f"target {cls.name!r} is already registered")
    TARGETS[cls.name] = cls
