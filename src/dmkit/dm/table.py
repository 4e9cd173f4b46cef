"""dmsetup table text: ``<start> <length> <target> <args...>`` per line.

Blank lines and lines starting with ``#`` are ignored.  Arguments are split on whitespace,
with a backslash escaping the next character (the kernel's ``dm_split_args``), so an
argument may contain spaces.  Segments must be contiguous from sector 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import TableError

__all__ = ["TableLine", "split_args", "join_args", "parse_table", "format_table"]


@dataclass(frozen=True)
class TableLine:
    start_sector: int
    nr_sectors: int
    target_type: str
    args: tuple[str, ...]
    lineno: int = 0

    def __str__(self) -> str:
        return format_line(self.start_sector, self.nr_sectors, self.target_type, self.args)


def split_args(text: str) -> list[str]:
    """Split on whitespace; ``\\`` escapes the following character."""
    out: list[str] = []
    cur: list[str] = []
    in_word = False
    it = iter(text)
    for ch in it:
        if ch == "\\":
            nxt = next(it, None)
            if nxt is None:
                raise TableError("trailing backslash in table arguments")
            cur.append(nxt)
            in_word = True
        elif ch.isspace():
            if in_word:
                out.append("".join(cur))
                cur, in_word = [], False
        else:
            cur.append(ch)
            in_word = True
    if in_word:
        out.append("".join(cur))
    return out


def _escape(arg: str) -> str:
    return "".join("\\" + c if c.isspace() or c == "\\" else c for c in arg)


def join_args(args) -> str:
    return " ".join(_escape(a) for a in args)


def format_line(start: int, length: int, target_type: str, params: str | tuple) -> str:
    if not isinstance(params, str):
        params = join_args(params)
    return f"{start} {length} {target_type}" + (f" {params}" if params else "")


def _number(word: str, what: str, where: str) -> int:
    if not word.isdigit() or not word.isascii():
        raise TableError(f"{where}: invalid {what} {word!r}")
    return int(word)


def parse_table(text: str, source: str = "table") -> list[TableLine]:
    """Parse and check table text.  Errors name ``source`` and the line number."""
    lines: list[TableLine] = []
    expected = 0
    for lineno, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{source}:{lineno}"
        words = split_args(stripped)
        if len(words) < 3:
            raise TableError(f"{where}: expected '<start> <length> <target> [args...]'")
        start = _number(words[0], "start sector", where)
        length = _number(words[1], "length", where)
        if length == 0:
            raise TableError(f"{where}: zero-length target")
        if start != expected:
            what = "gap" if start > expected else "overlap"
            raise TableError(f"{where}: segment starts at sector {start}, expected {expected} "
                             f"({what} in the table)")
        expected = start + length
        lines.append(TableLine(start, length, words[2], tuple(words[3:]), lineno))
    if not lines:
        raise TableError(f"{source}: table is empty")
    return lines


def format_table(lines) -> str:
    return "".join(str(line) + "\n" for line in lines)
