"""JSON as cryptsetup reads and writes it (json-c), for the LUKS2 metadata area.

Reading is strict: the area must hold one JSON object starting at its first byte, then
only NUL bytes (cryptsetup's ``validate_json_area``); duplicate keys, NaN/Infinity and
invalid UTF-8 are refused.  Writing reproduces json-c's two output styles byte for
byte: ``JSON_C_TO_STRING_PLAIN`` (on disk) and ``JSON_C_TO_STRING_PRETTY`` (what
``luksDump --dump-json-metadata`` prints), both with ``NOSLASHESCAPE``.
"""

from __future__ import annotations

import json

from ..errors import FormatError

__all__ = ["parse_json_area", "dumps_plain", "dumps_pretty", "json_area"]


class _DuplicateKey(Exception):
    pass


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def _no_constant(name):
    raise ValueError(f"{name} is not allowed")


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constant)


def parse_json_area(area: bytes | bytearray | memoryview, what: str = "luks2") -> dict:
    """The JSON object in a metadata area; FormatError names what is wrong."""
    raw = bytes(area)
    if not raw or raw[:1] != b"{":
        raise FormatError(f"{what}: JSON area does not start with '{{'")
    end = raw.find(b"\0")
    if end < 0:
        raise FormatError(f"{what}: JSON area has no terminating NUL byte (JSON too large)")
    if raw.count(0, end) != len(raw) - end:
        raise FormatError(f"{what}: JSON area has bytes other than NUL after the JSON text")
    try:
        text = raw[:end].decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(f"{what}: JSON text is not valid UTF-8 at byte {e.start}") from None
    try:
        doc, pos = _DECODER.raw_decode(text)
    except _DuplicateKey as e:
        raise FormatError(f"{what}: JSON has a duplicate key {e.args[0]!r}") from None
    except (ValueError, RecursionError) as e:
        msg = str(e).split(":")[0]
        raise FormatError(f"{what}: JSON does not parse: {msg}") from None
    if pos != len(text):
        raise FormatError(f"{what}: JSON area has text after the JSON object")
    if not isinstance(doc, dict):
        raise FormatError(f"{what}: JSON metadata is not an object")
    return doc


def dumps_plain(doc) -> str:
    """json-c's ``JSON_C_TO_STRING_PLAIN | NOSLASHESCAPE``: no whitespace at all."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _pretty(value, level: int, out: list) -> None:
    if isinstance(value, dict):
        out.append("{\n")
        first = True
        for k, v in value.items():
            if not first:
                out.append(",\n")
            first = False
            out.append("  " * (level + 1))
            out.append(json.dumps(k, ensure_ascii=False))
            out.append(":")
            _pretty(v, level + 1, out)
        if not first:
            out.append("\n")
        out.append("  " * level + "}")
    elif isinstance(value, list):
        out.append("[\n")
        first = True
        for v in value:
            if not first:
                out.append(",\n")
            first = False
            out.append("  " * (level + 1))
            _pretty(v, level + 1, out)
        if not first:
            out.append("\n")
        out.append("  " * level + "]")
    else:
        out.append(json.dumps(value, ensure_ascii=False, allow_nan=False))


def dumps_pretty(doc) -> str:
    """json-c's ``JSON_C_TO_STRING_PRETTY | NOSLASHESCAPE`` (two-space indent, no trailing
    newline), exactly what ``cryptsetup luksDump --dump-json-metadata`` prints."""
    out: list[str] = []
    _pretty(doc, 0, out)
    return "".join(out)


def json_area(doc, area_size: int, what: str = "luks2") -> bytes:
    """``doc`` as the on-disk JSON area: plain text, then NUL bytes up to ``area_size``."""
    text = dumps_plain(doc).encode("utf-8")
    if len(text) > area_size - 1:
        raise FormatError(f"{what}: JSON metadata ({len(text)} bytes) does not fit the "
                          f"{area_size}-byte JSON area")
    return text + bytes(area_size - len(text))
