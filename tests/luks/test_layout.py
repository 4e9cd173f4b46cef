"""Round trips (parse, build, size) of every LUKS structure, and the negative tests of the
binary parsers."""

from __future__ import annotations

import dataclasses

import pytest

from dmkit.errors import FormatError
from dmkit.luks._json import dumps_plain, dumps_pretty, json_area, parse_json_area
from dmkit.luks.layout import (LUKS1_PHDR_SIZE, LUKS2_HDR_BIN_LEN, LUKS2_MAGIC_2ND,
                               Luks1Header, Luks1Keyblock, Luks2BinaryHeader, probe_version)
from dmkit.luks.luks2 import checksum, read_luks2_header
from dmkit.luks.metadata import Luks2Metadata

from ._util import LUKS2_NAMES, image_bytes


@pytest.mark.parametrize("name", LUKS2_NAMES)
@pytest.mark.parametrize("copy", [0, 1])
def test_luks2_binary_header_round_trip(name, copy):
    raw = image_bytes(name)
    off = 0 if copy == 0 else int.from_bytes(raw[8:16], "big")
    b = Luks2BinaryHeader.from_bytes(raw[off:off + LUKS2_HDR_BIN_LEN])
    assert b.secondary == bool(copy)
    assert b.hdr_offset == off and b.version == 2 and b.checksum_alg == "sha256"
    assert len(b.to_bytes()) == LUKS2_HDR_BIN_LEN
    assert b.to_bytes() == raw[off:off + LUKS2_HDR_BIN_LEN]
    assert Luks2BinaryHeader.from_bytes(b.to_bytes()) == b
    area = raw[off + LUKS2_HDR_BIN_LEN:off + b.hdr_size]
    assert checksum(b.checksum_alg, b.to_bytes(), area) == b.csum


def test_luks2_binary_header_rejects():
    raw = bytearray(image_bytes("luks2-aes-xts-pbkdf2")[:LUKS2_HDR_BIN_LEN])
    with pytest.raises(FormatError, match="bad magic"):
        Luks2BinaryHeader.from_bytes(b"XXXX" + raw[4:])
    with pytest.raises(FormatError, match="version 3 is not 2"):
        Luks2BinaryHeader.from_bytes(raw[:6] + b"\0\3" + raw[8:])
    with pytest.raises(FormatError, match="expected 4096"):
        Luks2BinaryHeader.from_bytes(raw[:100])
    bad_label = raw[:24] + b"\xff" * 4 + raw[28:]
    with pytest.raises(FormatError, match="label is not valid UTF-8"):
        Luks2BinaryHeader.from_bytes(bad_label)
    b = Luks2BinaryHeader.from_bytes(raw)
    with pytest.raises(FormatError, match="label is longer than 47"):
        dataclasses.replace(b, label="x" * 48).to_bytes()
    assert dataclasses.replace(b, label="x" * 47).to_bytes()[24:72].endswith(b"x\0")


def test_luks1_header_round_trip():
    raw = image_bytes("luks1-aes-xts")
    h = Luks1Header.from_bytes(raw)
    assert (h.cipherName, h.cipherMode, h.hashSpec, h.keyBytes, h.payloadOffset) == \
        ("aes", "xts-plain64", "sha256", 64, 4096)
    out = h.to_bytes()
    assert len(out) == 1024 and LUKS1_PHDR_SIZE == 592
    assert out == raw[:1024]
    assert Luks1Header.from_bytes(out) == h
    assert [kb.enabled for kb in h.keyblock] == [True] + [False] * 7
    kb = h.keyblock[0]
    assert len(kb.to_bytes()) == 48 and Luks1Keyblock.from_bytes(kb.to_bytes()) == kb
    assert probe_version(raw) == 1 and probe_version(image_bytes("luks2-aes-xts-4k")) == 2
    assert probe_version(b"\0" * 16) is None


def test_luks1_header_rejects():
    raw = image_bytes("luks1-aes-xts")[:1024]
    with pytest.raises(FormatError, match="bad magic"):
        Luks1Header.from_bytes(b"LUKZ" + raw[4:])
    with pytest.raises(FormatError, match="version 2 is not 1"):
        Luks1Header.from_bytes(raw[:6] + b"\0\2" + raw[8:])
    with pytest.raises(FormatError, match="expected 592"):
        Luks1Header.from_bytes(raw[:500])


@pytest.mark.parametrize("name", LUKS2_NAMES)
def test_json_area_and_metadata_round_trip(name):
    raw = image_bytes(name)
    hdr_size = int.from_bytes(raw[8:16], "big")
    area = raw[LUKS2_HDR_BIN_LEN:hdr_size]
    doc = parse_json_area(area)
    assert json_area(doc, len(area)) == area
    md = Luks2Metadata.from_dict(doc, json_area_size=len(area), device_size=len(raw))
    assert md.to_dict() == doc
    assert list(md.to_dict()) == ["keyslots", "tokens", "segments", "digests", "config"]
    assert Luks2Metadata.from_dict(md.to_dict()) == md
    assert dumps_plain(md.to_dict()).encode() == area.rstrip(b"\0")
    assert md.hdr_and_areas_size == 2 * hdr_size + md.config.keyslots_size
    assert md.data_offset == 1 << 20
    with pytest.raises(AttributeError):
        md.config = None


def test_header_object_round_trip():
    raw = image_bytes("luks2-aes-xts-argon2id")
    h = read_luks2_header(raw)
    b = h.binary(secondary=True)
    assert b.magic == LUKS2_MAGIC_2ND and b.hdr_offset == h.hdr_size
    assert b.salt == Luks2BinaryHeader.from_bytes(raw[h.hdr_size:]).salt


def test_pretty_json_is_json_c():
    doc = {"a": {}, "b": [], "c": ["0", "1"], "d": {"e": 1, "f": "x/y\n"}}
    assert dumps_pretty(doc) == ('{\n  "a":{\n  },\n  "b":[\n  ],\n  "c":[\n    "0",\n    "1"\n'
                                 '  ],\n  "d":{\n    "e":1,\n    "f":"x/y\\n"\n  }\n}')
    assert dumps_plain(doc) == '{"a":{},"b":[],"c":["0","1"],"d":{"e":1,"f":"x/y\\n"}}'
