"""Argument reading for target constructors, the device-mapper way.

Shift an argument, read an unsigned number in a range with a named error, read a counted
group of optional features (``dm_read_arg_group``).  Every error is a TableError whose
message starts with the target name.
"""

from __future__ import annotations

from typing import Sequence

from ..errors import TableError

__all__ = ["ArgReader", "FeatureSet", "parse_uint"]

U64_MAX = (1 << 64) - 1


def parse_uint(word: str, what: str, lo: int = 0, hi: int = U64_MAX, *, prefix: str = "") -> int:
    if not word.isascii() or not word.isdigit():
        raise TableError(f"{prefix}invalid {what} {word!r}: not an unsigned number")
    value = int(word)
    if not lo <= value <= hi:
        raise TableError(f"{prefix}invalid {what} {value}: must be in {lo}..{hi}")
    return value


class ArgReader:
    """A cursor over a target's arguments."""

    def __init__(self, target: str, args: Sequence[str]):
        self.target = target
        self.args = list(args)
        self.pos = 0

    @property
    def prefix(self) -> str:
        return f"{self.target}: "

    def error(self, message: str) -> TableError:
        return TableError(self.prefix + message)

    @property
    def remaining(self) -> int:
        return len(self.args) - self.pos

    def shift(self, what: str) -> str:
        if self.pos >= len(self.args):
            raise self.error(f"missing {what}")
        word = self.args[self.pos]
        self.pos += 1
        return word

    def peek(self) -> str | None:
        return self.args[self.pos] if self.pos < len(self.args) else None

    def uint(self, what: str, lo: int = 0, hi: int = U64_MAX) -> int:
        return parse_uint(self.shift(what), what, lo, hi, prefix=self.prefix)

    def group(self, what: str = "optional arguments") -> "ArgReader":
        """Read ``<#args> <args...>``; returns a reader over just those args.

        An absent count (end of arguments) is an empty group.
        """
        if self.remaining == 0:
            return ArgReader(self.target, [])
        count = self.uint(f"number of {what}", 0, self.remaining - 1)
        sub = ArgReader(self.target, self.args[self.pos:self.pos + count])
        self.pos += count
        return sub

    def done(self) -> None:
        if self.remaining:
            extra = " ".join(self.args[self.pos:])
            raise self.error(f"too many arguments: {extra!r}")


class FeatureSet:
    """Tracks features seen in a group, rejecting duplicates and conflicts by name."""

    def __init__(self, reader: ArgReader, conflicts: Sequence[frozenset[str]] = ()):
        self.reader = reader
        self.seen: set[str] = set()
        self.conflicts = conflicts

    def add(self, name: str) -> None:
        if name in self.seen:
            raise self.reader.error(f"duplicate feature {name!r}")
        for group in self.conflicts:
            if name in group and self.seen & group:
                other = sorted(self.seen & group)[0]
                raise self.reader.error(f"feature {name!r} conflicts with {other!r}")
        self.seen.add(name)
