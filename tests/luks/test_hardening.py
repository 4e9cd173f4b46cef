"""Header hardening: one negative test per validation rule.  A bad header gives one
FormatError whose single line names the field; it never crashes and never writes."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dmkit.block import MemoryDevice
from dmkit.errors import DmkitError, FormatError
from dmkit.luks import load
from dmkit.luks._json import dumps_plain, json_area
from dmkit.luks.layout import CSUM_OFFSET, LUKS2_HDR_BIN_LEN, Luks1Header, Luks1Keyblock
from dmkit.luks.luks1 import read_luks1_header
from dmkit.luks.luks2 import checksum, read_luks2_header
from dmkit.luks.metadata import Luks2Metadata

from ._util import image_bytes

BASE = "luks2-aes-xts-pbkdf2"
HDR = 16384
AREA = HDR - LUKS2_HDR_BIN_LEN


def base_doc() -> dict:
    return read_luks2_header(image_bytes(BASE)).metadata.to_dict()


def forge(doc=None, *, area: bytes | None = None, copies=(0, 1), base: bytes | None = None,
          **binary) -> bytes:
    """The base image with ``doc`` (or a raw JSON ``area``) in the chosen copies, each with
    a correct checksum, so the only defect is the one under test."""
    raw = bytearray(base or image_bytes(BASE))
    h = read_luks2_header(bytes(raw))
    if area is None:
        area = json_area(doc, AREA) if doc is not None else None
    for c in copies:
        b = dataclasses.replace(h.binary(c == 1), **binary)
        off = 0 if c == 0 else h.hdr_size
        this_area = area if area is not None else bytes(raw[off + 4096:off + h.hdr_size])
        rb = b.to_bytes()
        cs = checksum(b.checksum_alg, rb, this_area)
        raw[off:off + 4096] = rb[:CSUM_OFFSET] + cs + rb[CSUM_OFFSET + 64:]
        raw[off + 4096:off + 4096 + len(this_area)] = this_area
    return bytes(raw)


def rejects(raw: bytes, match: str) -> str:
    before = bytes(raw)
    dev = MemoryDevice(initial=raw)
    with pytest.raises(FormatError, match=match) as ei:
        load(dev)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(("luks2:", "luks1:", "Device"))
    assert bytes(dev.buf) == before  # never a write
    return msg


def mutated(fn) -> bytes:
    doc = base_doc()
    fn(doc)
    return forge(doc)


# -- the JSON area ---------------------------------------------------------------------------

def test_json_filling_the_area_without_nul():
    rejects(forge(area=b"{" + b" " * (AREA - 1)), "no terminating NUL byte")


def test_json_larger_than_config_json_size():
    doc = base_doc()
    doc["tokens"]["0"] = {"type": "x", "keyslots": [], "pad": ""}
    room = AREA - 1 - len(dumps_plain(doc).encode())
    doc["tokens"]["0"]["pad"] = "p" * room
    text = dumps_plain(doc).encode()
    assert len(text) == AREA - 1
    assert read_luks2_header(forge(area=text + b"\0")).metadata.tokens[0].type == "x"
    doc["tokens"]["0"]["pad"] += "p"
    text = dumps_plain(doc).encode()
    rejects(forge(area=text), "no terminating NUL byte")
    with pytest.raises(FormatError, match=r"JSON metadata is 12288 bytes, larger than its "
                                          r"12288-byte area"):
        Luks2Metadata.from_dict(doc)
    with pytest.raises(FormatError, match="does not fit"):
        json_area(doc, AREA)


def test_change_that_would_overflow_the_json_area_is_refused():
    dev = MemoryDevice(initial=image_bytes(BASE))
    vol = load(dev)
    doc = vol.metadata.to_dict()
    doc["tokens"]["0"] = {"type": "x", "keyslots": [], "pad": "p" * AREA}
    with pytest.raises(FormatError, match="larger than its"):
        vol._commit(doc)
    assert bytes(dev.buf) == image_bytes(BASE)


def test_bytes_after_the_json():
    text = dumps_plain(base_doc()).encode()
    rejects(forge(area=text + b"\0x" + bytes(AREA - len(text) - 2)), "other than NUL")


def test_json_not_starting_with_brace():
    text = b" " + dumps_plain(base_doc()).encode()
    rejects(forge(area=text + bytes(AREA - len(text))), "does not start with")


def test_text_after_the_object():
    text = dumps_plain(base_doc()).encode() + b" {}"
    rejects(forge(area=text + bytes(AREA - len(text))), "text after the JSON object")


@pytest.mark.parametrize("old,new,key", [
    ('"tokens":{}', '"tokens":{},"tokens":{}', "tokens"),
    ('"segments":{"0":', '"segments":{"0":{},"0":', "0"),
])
def test_duplicate_keys(old, new, key):
    text = dumps_plain(base_doc()).replace(old, new, 1).encode()
    rejects(forge(area=text + bytes(AREA - len(text))), f"duplicate key '{key}'")


def test_invalid_utf8():
    text = dumps_plain(base_doc()).encode().replace(b'"luks2"', b'"l\xffks2"', 1)
    rejects(forge(area=text + bytes(AREA - len(text))), "not valid UTF-8")


@pytest.mark.parametrize("bad", ["NaN", "[" * 3000 + "]" * 3000])
def test_unparsable_values(bad):
    text = dumps_plain(base_doc()).replace('"tokens":{}', f'"tokens":{{}},"x":{bad}').encode()
    rejects(forge(area=text + bytes(AREA - len(text))), "does not parse")


# -- the JSON model: one case per rule -------------------------------------------------------

def _ks(d):
    return d["keyslots"]["0"]


def _add_slot1(d, offset):
    s = copy.deepcopy(_ks(d))
    s["area"]["offset"] = str(offset)
    d["keyslots"]["1"] = s
    d["digests"]["0"]["keyslots"].append("1")


def _two_segments(d, first_size, second_offset):
    s0 = d["segments"]["0"]
    s0["size"] = first_size
    s1 = copy.deepcopy(s0)
    s1["offset"], s1["size"] = second_offset, "dynamic"
    d["segments"]["1"] = s1
    d["digests"]["0"]["segments"].append("1")


RULES = [
    ("missing section", lambda d: d.pop("digests"), r"both header copies: digests: missing"),
    ("section not an object", lambda d: d.update(tokens=[]),
     r"both header copies: tokens: is not a JSON"),
    ("json_size vs binary", lambda d: d["config"].update(json_size="28672"),
     r"config\.json_size: 28672 does not match the binary header"),
    ("json_size invalid", lambda d: d["config"].update(json_size="12289"),
     r"config\.json_size: 12289 does not make a valid metadata size"),
    ("keyslots_size alignment", lambda d: d["config"].update(keyslots_size="262145"),
     r"config\.keyslots_size: 262145 is not a multiple of 4096"),
    ("keyslots_size huge", lambda d: d["config"].update(keyslots_size=str(256 << 20)),
     r"config\.keyslots_size: .* up to"),
    ("keyslots area overlaps data", lambda d: d["config"].update(keyslots_size=str(2 << 20)),
     r"config\.keyslots_size: 2097152 overlaps the data segment"),
    ("area overlap", lambda d: _add_slot1(d, 32768 + 4096),
     r"keyslots\.1\.area: overlaps the area of keyslot 0"),
    ("area outside", lambda d: _ks(d)["area"].update(offset=str(294912 - 4096)),
     r"keyslots\.0\.area: \[290816, .*outside the key slots area"),
    ("area in metadata", lambda d: _ks(d)["area"].update(offset="16384"),
     r"keyslots\.0\.area\.offset: 16384 is inside the metadata"),
    ("area smaller than material", lambda d: _ks(d)["area"].update(size="4096"),
     r"keyslots\.0\.area\.size: 4096 is smaller than the key material"),
    ("key_size zero", lambda d: _ks(d).update(key_size=0), r"keyslots\.0\.key_size: 0 is out"),
    ("key_size string", lambda d: _ks(d).update(key_size="64"),
     r"keyslots\.0\.key_size: '64' is not an integer"),
    ("key_size bool", lambda d: _ks(d).update(key_size=True),
     r"keyslots\.0\.key_size: True is not an integer"),
    ("key_size huge", lambda d: _ks(d).update(key_size=2 ** 40),
     r"keyslots\.0\.key_size: .* out of range"),
    ("area type", lambda d: _ks(d)["area"].update(type="journal"),
     r"keyslots\.0\.area\.type: unknown area type"),
    ("area number text", lambda d: _ks(d)["area"].update(offset="0x8000"),
     r"keyslots\.0\.area\.offset: '0x8000' is not a decimal number"),
    ("leading zeros", lambda d: d["segments"]["0"].update(offset="01048576"),
     r"segments\.0\.offset: '01048576' has leading zeros"),
    ("negative", lambda d: d["segments"]["0"].update(offset="-1"),
     r"segments\.0\.offset: '-1' is not a decimal number"),
    ("beyond 64 bits", lambda d: d["segments"]["0"].update(offset=str(2 ** 64)),
     r"segments\.0\.offset: 18446744073709551616 does not fit in 64 bits"),
    ("segment offset alignment", lambda d: d["segments"]["0"].update(offset="1048577"),
     r"segments\.0\.offset: 1048577 is not a multiple of 512"),
    ("segment size zero", lambda d: d["segments"]["0"].update(size="0"),
     r"segments\.0\.size: is zero"),
    ("sector size", lambda d: d["segments"]["0"].update(sector_size=3000),
     r"segments\.0\.sector_size: 3000 is not a power of two"),
    ("size vs sector size", lambda d: d["segments"]["0"].update(size="1536", sector_size=4096),
     r"segments\.0\.size: 1536 is not a multiple of the sector size 4096"),
    ("segment integrity fields", lambda d: d["segments"]["0"].update(integrity={"type": "aead"}),
     r"segments\.0\.integrity\.journal_encryption: missing"),
    ("no segment", lambda d: d.update(segments={}) or d["digests"]["0"].update(segments=[]),
     r"segments: no segment"),
    ("segment gap", lambda d: d["segments"].update({"1": d["segments"].pop("0")})
     or d["digests"]["0"].update(segments=["1"]), r"segments: ids have a gap"),
    ("dynamic not last", lambda d: _two_segments(d, "dynamic", "2097152"),
     r"segments\.0\.size: only the last segment can be dynamic"),
    ("overlapping segments", lambda d: _two_segments(d, "1048576", "1572864"),
     r"segments\.1: overlaps segment 0"),
    ("crypt segment without digest", lambda d: d["digests"]["0"].update(segments=[]),
     r"segments\.0: crypt segment has no digest"),
    ("iterations zero", lambda d: _ks(d)["kdf"].update(iterations=0),
     r"keyslots\.0\.kdf\.iterations: 0 is out of range"),
    ("argon2 memory", lambda d: _ks(d).update(kdf={"type": "argon2id", "time": 4,
                                                   "memory": 8 << 20, "cpus": 1,
                                                   "salt": _ks(d)["kdf"]["salt"]}),
     r"keyslots\.0\.kdf\.memory: 8388608 is out of range"),
    ("kdf extra field", lambda d: _ks(d)["kdf"].update(time=4),
     r"keyslots\.0\.kdf: pbkdf2 takes exactly"),
    ("kdf type", lambda d: _ks(d)["kdf"].update(type="scrypt"),
     r"keyslots\.0\.kdf\.type: unknown kdf type 'scrypt'"),
    ("stripes", lambda d: _ks(d)["af"].update(stripes=3999),
     r"keyslots\.0\.af\.stripes: 3999 is not 4000"),
    ("af hash", lambda d: _ks(d)["af"].update(hash="md4x"),
     r"keyslots\.0\.af\.hash: hash 'md4x' is not supported"),
    ("salt base64", lambda d: _ks(d)["kdf"].update(salt="***"),
     r"keyslots\.0\.kdf\.salt: is not valid base64"),
    ("salt length", lambda d: _ks(d)["kdf"].update(salt="AAAAAAAAAAAAAAAAAAAAAA=="),
     r"keyslots\.0\.kdf\.salt: is 16 bytes, expected 32"),
    ("digest length", lambda d: d["digests"]["0"].update(digest="AAAA"),
     r"digests\.0\.digest: is 3 bytes, expected 20 or 32"),
    ("digest missing keyslot", lambda d: d["digests"]["0"]["keyslots"].append("5"),
     r"digests\.0\.keyslots: refers to a missing keyslot '5'"),
    ("digest missing segment", lambda d: d["digests"]["0"]["segments"].append("3"),
     r"digests\.0\.segments: refers to a missing segment '3'"),
    ("digest lists twice", lambda d: d["digests"]["0"]["keyslots"].append("0"),
     r"digests\.0\.keyslots: lists keyslot 0 twice"),
    ("keyslot without digest", lambda d: d["digests"]["0"].update(keyslots=[]),
     r"keyslots\.0: assigned to 0 digests"),
    ("keyslot in two digests", lambda d: d["digests"].update({"1": copy.deepcopy(
        d["digests"]["0"])}), r"keyslots\.0: assigned to 2 digests"),
    ("non-canonical id", lambda d: d["keyslots"].update({"00": d["keyslots"].pop("0")}),
     r"keyslots\.00: keyslot id is not a canonical decimal number"),
    ("id too large", lambda d: d["tokens"].update({"32": {"type": "x", "keyslots": []}}),
     r"tokens\.32: token id is not below 32"),
    ("token missing keyslot", lambda d: d["tokens"].update(
        {"0": {"type": "luks2-keyring", "keyslots": ["4"], "key_description": "a:b"}}),
     r"tokens\.0\.keyslots: refers to a missing keyslot '4'"),
    ("keyring token fields", lambda d: d["tokens"].update(
        {"0": {"type": "luks2-keyring", "keyslots": [], "key_description": "a", "x": 1}}),
     r"tokens\.0: luks2-keyring takes exactly"),
    ("requirements type", lambda d: d["config"].update(requirements={"mandatory": [1]}),
     r"requirements\.mandatory\[0\]: is not a string"),
    ("two online requirements", lambda d: d["config"].update(requirements={
        "mandatory": ["online-reencrypt", "online-reencrypt-v2"]}),
     r"requirements\.mandatory: has more than one online-reencrypt requirement"),
    ("online reencrypt without keyslot", lambda d: d["config"].update(requirements={
        "mandatory": ["online-reencrypt-v2"]}),
     r"online reencryption without a reencrypt keyslot"),
    ("flags type", lambda d: d["config"].update(flags="allow-discards"),
     r"config\.flags: is not a JSON array"),
    ("priority", lambda d: _ks(d).update(priority=7), r"keyslots\.0\.priority: 7 is out"),
]


@pytest.mark.parametrize("fn,match", [(f, m) for _, f, m in RULES], ids=[r[0] for r in RULES])
def test_metadata_rule(fn, match):
    msg = rejects(mutated(fn), match)
    assert msg.startswith("luks2: both header copies: ")


def test_header_and_areas_larger_than_device():
    raw = image_bytes(BASE)[:200 * 1024]
    rejects(raw, r"header and key slots area \(294912 bytes\) do not fit the device")


def test_unknown_mandatory_requirement_is_refused_on_use():
    raw = mutated(lambda d: d["config"].update(requirements={"mandatory": ["whatever"]}))
    vol = load(MemoryDevice(initial=raw))
    with pytest.raises(FormatError, match="config.requirements.mandatory: unknown "
                                          "requirement 'whatever'"):
        vol.unlock("dmkit-fixture-passphrase-s1l1")


# -- the binary header -----------------------------------------------------------------------

def test_bad_magic_both_copies():
    raw = bytearray(image_bytes(BASE))
    raw[0:4] = b"XXXX"
    raw[HDR:HDR + 4] = b"XXXX"
    rejects(bytes(raw), "not a valid LUKS device")


def test_hdr_offset_mismatch():
    raw = forge(copies=(0,), hdr_offset=4096)
    h = read_luks2_header(raw)
    assert h.used == "secondary"
    assert "primary header hdr_offset 4096 does not match its position 0" in h.problems[0]
    raw = forge(base=raw, copies=(1,), hdr_offset=4096)
    rejects(raw, "primary header hdr_offset 4096 does not match")


def test_bogus_hdr_size():
    raw = forge(copies=(0, 1), hdr_size=5000)
    rejects(raw, "bogus hdr_size 5000")


def test_secondary_size_mismatch():
    raw = forge(copies=(1,), hdr_size=32768)
    h = read_luks2_header(raw)
    assert h.used == "primary" and "secondary" in h.problems[0]


def test_unknown_checksum_alg():
    raw = bytearray(image_bytes(BASE))
    for off in (0, HDR):
        raw[off + 72:off + 78] = b"md4xyz"
    rejects(bytes(raw), "checksum_alg 'md4xyz' is not supported")


def test_checksum_mismatch():
    raw = bytearray(image_bytes(BASE))
    raw[CSUM_OFFSET] ^= 1
    h = read_luks2_header(bytes(raw))
    assert h.problems == ("luks2: primary header checksum mismatch",)
    raw[HDR + CSUM_OFFSET] ^= 1
    rejects(bytes(raw), "primary header checksum mismatch; secondary header checksum")


def test_lower_seqid_is_obsolete():
    raw = forge(copies=(0,), seqid=2)
    h = read_luks2_header(raw)
    assert h.used == "secondary" and h.seqid == 3
    assert h.problems == ("luks2: primary header is obsolete (seqid 2 < 3)",)


def test_copies_disagree():
    raw = forge(copies=(1,), uuid="00000000-0000-4000-8000-000000000000")
    h = read_luks2_header(raw)
    assert "different UUIDs" in h.problems[0]
    doc = base_doc()
    doc["tokens"]["0"] = {"type": "x", "keyslots": []}
    h = read_luks2_header(forge(doc, copies=(1,)))
    assert h.used == "primary" and not h.metadata.tokens
    assert "differ with equal seqid 3" in h.problems[0]


# -- LUKS1 -------------------------------------------------------------------------------------

def luks1_with(**kw) -> bytes:
    raw = bytearray(image_bytes("luks1-aes-xts"))
    h = Luks1Header.from_bytes(raw)
    blocks = list(h.keyblock)
    for i, changes in kw.pop("blocks", {}).items():
        blocks[i] = dataclasses.replace(blocks[i], **changes)
    h = dataclasses.replace(h, keyblock=tuple(blocks), **kw)
    raw[:1024] = h.to_bytes()
    return bytes(raw)


LUKS1_RULES = [
    (dict(blocks={3: dict(stripes=100)}), r"keyblock\[3\]\.stripes: 100 is not 4000"),
    (dict(blocks={0: dict(keyMaterialOffset=1)}), r"keyblock\[0\]\.keyMaterialOffset: 1 is "
                                                  "inside the header"),
    (dict(blocks={1: dict(keyMaterialOffset=100)}), r"keyblock\[1\]\.keyMaterialOffset: "
                                                    "overlaps the key material of slot 0"),
    (dict(blocks={7: dict(keyMaterialOffset=3800)}), r"keyblock\[7\]\.keyMaterialOffset: key "
                                                     "material .* beyond the payload"),
    (dict(blocks={2: dict(active=0x1234)}), r"keyblock\[2\]\.active: 0x1234 is neither"),
    (dict(blocks={0: dict(passwordIterations=0)}), r"keyblock\[0\]\.passwordIterations: is zero"),
    (dict(hashSpec="md4x"), r"hashSpec 'md4x' is not supported"),
    (dict(keyBytes=0), r"keyBytes 0 is out of range"),
    (dict(mkDigestIterations=0), r"mkDigestIterations is zero"),
    (dict(cipherMode=""), r"cipherName or cipherMode is empty"),
]


@pytest.mark.parametrize("kw,match", LUKS1_RULES)
def test_luks1_rule(kw, match):
    rejects(luks1_with(**kw), "luks1: " + match)


def test_luks1_device_too_small():
    rejects(image_bytes("luks1-aes-xts")[:1 << 20], r"luks1: header and key slots .* do not fit")


def test_luks1_keyblock_defaults_are_disabled():
    assert not Luks1Keyblock().enabled


# -- never a crash -----------------------------------------------------------------------------

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 2 * HDR - 1), st.integers(1, 255)), min_size=1,
                max_size=6))
def test_luks2_byte_corruption_never_crashes(flips):
    raw = bytearray(image_bytes(BASE)[:300 * 1024])
    for pos, x in flips:
        raw[pos] ^= x
    try:
        read_luks2_header(bytes(raw))
    except FormatError:
        pass


_JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-2, 2 ** 65) |
                            st.text(max_size=8) | st.sampled_from(["0", "dynamic", "luks2"]),
                            lambda c: st.lists(c, max_size=3) | st.dictionaries(
                                st.text(max_size=3), c, max_size=3), max_leaves=6)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


_DOC_PATHS = [p for p in _paths(read_luks2_header(image_bytes(BASE)).metadata.to_dict()) if p]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_DOC_PATHS), _JSON_VALUES, st.booleans())
def test_metadata_mutation_never_crashes(path, value, delete):
    doc = base_doc()
    node = doc
    for k in path[:-1]:
        node = node[k]
    if delete and isinstance(node, dict):
        del node[path[-1]]
    else:
        node[path[-1]] = value
    try:
        Luks2Metadata.from_dict(json.loads(json.dumps(doc)), json_area_size=AREA,
                                device_size=1 << 20)
    except FormatError:
        pass


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 591), st.integers(1, 255)), min_size=1, max_size=4))
def test_luks1_byte_corruption_never_crashes(flips):
    raw = bytearray(image_bytes("luks1-aes-xts"))
    for pos, x in flips:
        raw[pos] ^= x
    try:
        read_luks1_header(bytes(raw))
    except DmkitError:
        pass
