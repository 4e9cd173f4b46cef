"""Names of a package loaded from its submodules on first use (PEP 562).

``__getattr__, __dir__ = lazy_names(__name__, {"Name": "submodule", ...}, __all__)`` in a
package's ``__init__``: importing the package (or one of its submodules) then loads none of
the others, so a command that needs one part does not pay for the rest at start-up.
"""

from __future__ import annotations

import importlib
import sys
from typing import Callable, Iterable

__all__ = ["lazy_names"]


def lazy_names(package: str, where: dict[str, str], public: Iterable[str]
               ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The package's ``__getattr__`` (imports ``.where[name]`` and caches the value in the
    package) and ``__dir__``."""
    public = list(public)

    def __getattr__(name: str):
        mod = where.get(name)
        if mod is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{mod}", package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(public))

    return __getattr__, __dir__
