"""The LUKS2 JSON metadata: a validated, immutable model.

LUKS2 On-Disk Format Specification, section 3 ("JSON area"): the objects ``keyslots``,
``tokens``, ``segments``, ``digests`` and ``config``.  Validation follows cryptsetup's
``LUKS2_hdr_validate`` (``lib/luks2/luks2_json_metadata.c``) and is stricter where a
looser reading could crash, loop for long, or read outside the header: every rule
raises one :class:`~dmkit.errors.FormatError` whose message starts with the JSON path of
the offending field (``luks2: keyslots.0.area.offset: ...``).

:class:`Luks2Metadata` keeps the JSON document itself (key order and unknown fields
included, so a rewrite changes only what was changed) plus typed views of every
section.  Changes are made on a copy of the document (:meth:`Luks2Metadata.to_dict`)
and validated again with :meth:`Luks2Metadata.from_dict` before anything is written.
"""

from __future__ import annotations

import base64
import binascii
import copy
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from ..errors import FormatError
from ._json import dumps_plain
from .af import af_split_sectors
from .hashes import hash_size, is_supported
from .kdf import ARGON2_MAX_MEMORY_KB, ARGON2I, ARGON2ID, PBKDF2
from .layout import (LUKS2_HDR_BIN_LEN, LUKS2_MAX_KEYSLOTS_SIZE, LUKS2_METADATA_SIZES,
                     LUKS_STRIPES)

__all__ = [
    "LUKS2_KEYSLOTS_MAX",
    "LUKS2_TOKENS_MAX",
    "LUKS2_SEGMENT_MAX",
    "LUKS2_DIGEST_MAX",
    "KNOWN_REQUIREMENTS",
    "PERSISTENT_FLAGS",
    "Kdf",
    "Keyslot",
    "SegmentIntegrity",
    "Segment",
    "Digest",
    "Token",
    "Config",
    "Luks2Metadata",
    "b64encode",
]

LUKS2_KEYSLOTS_MAX = 32
LUKS2_TOKENS_MAX = 32
LUKS2_SEGMENT_MAX = 32
LUKS2_DIGEST_MAX = 8  # the dump shows digests 0..7 only, as cryptsetup's does
_DIGEST_ID_MAX = 32
_SALT_SIZE = 32
_MAX_KEY_SIZE = 512  # bytes; cryptsetup's volume keys stop at 4096 bits (and LUKS1 keyBytes)
#: requirements this implementation knows by name (cryptsetup 2.6); any other name in
#: ``config.requirements.mandatory`` makes the header unusable
KNOWN_REQUIREMENTS = frozenset({"offline-reencrypt", "online-reencrypt",
                                "online-reencrypt-v2", "online-reencrypt-v3"})
#: ``config.flags`` cryptsetup applies at activation
PERSISTENT_FLAGS = ("allow-discards", "same-cpu-crypt", "submit-from-crypt-cpus",
                    "no-journal", "no-read-workqueue", "no-write-workqueue")
KEYSLOT_PRIORITIES = {0: "ignored", 1: "normal", 2: "preferred"}
_U32 = 2 ** 32 - 1
_U64 = 2 ** 64 - 1


def b64encode(data: bytes) -> str:
    return base64.b64encode(bytes(data)).decode("ascii")


class _V:
    """Field access that raises one FormatError naming the JSON path."""

    def __init__(self, obj: dict, path: str):
        self.obj = obj
        self.path = path

    def err(self, key: str | None, what: str) -> FormatError:
        where = key if not self.path else f"{self.path}.{key}" if key is not None else self.path
        return FormatError(f"luks2: {where}: {what}")

    def has(self, key: str) -> bool:
        return key in self.obj

    def get(self, key: str, kind: type):
        if key not in self.obj:
            raise self.err(key, "missing")
        value = self.obj[key]
        if kind is int:
            if type(value) is not int:
                raise self.err(key, f"{value!r} is not an integer")
        elif not isinstance(value, kind):
            raise self.err(key, f"is not a JSON {_KIND_NAMES[kind]}")
        return value

    def string(self, key: str) -> str:
        value = self.get(key, str)
        if not value:
            raise self.err(key, "is an empty string")
        return value

    def obj_(self, key: str) -> _V:
        return _V(self.get(key, dict), f"{self.path}.{key}")

    def uint(self, key: str, lo: int = 0, hi: int = _U32) -> int:
        value = self.get(key, int)
        if not lo <= value <= hi:
            raise self.err(key, f"{value} is out of range {lo}..{hi}")
        return value

    def number(self, key: str) -> int:
        """A uint64 stored as a decimal string (offsets and sizes)."""
        text = self.get(key, str)
        return _u64_text(text, lambda what: self.err(key, what))

    def salt(self, key: str, size: int | None = _SALT_SIZE) -> bytes:
        raw = b64decode(self.string(key), lambda what: self.err(key, what))
        if size is not None and len(raw) != size:
            raise self.err(key, f"is {len(raw)} bytes, expected {size}")
        return raw

    def strings(self, key: str) -> tuple[str, ...]:
        arr = self.get(key, list)
        for i, item in enumerate(arr):
            if not isinstance(item, str):
                raise self.err(f"{key}[{i}]", "is not a string")
        return tuple(arr)


_KIND_NAMES = {dict: "object", list: "array", str: "string", int: "integer"}


def _u64_text(text: str, err) -> int:
    if not text or not text.isascii() or not text.isdigit():
        raise err(f"{text!r} is not a decimal number")
    if len(text) > 1 and text[0] == "0":
        raise err(f"{text!r} has leading zeros")
    value = int(text)
    if value > _U64:
        raise err(f"{text} does not fit in 64 bits")
    return value


def b64decode(text: str, err) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise err("is not valid base64") from None


def _ids(section: _V, limit: int, name: str) -> list[tuple[int, str, dict]]:
    out = []
    for key, value in section.obj.items():
        if not key.isascii() or not key.isdigit() or (len(key) > 1 and key[0] == "0"):
            raise section.err(key, f"{name} id is not a canonical decimal number")
        ident = int(key)
        if ident >= limit:
            raise section.err(key, f"{name} id is not below {limit}")
        if not isinstance(value, dict):
            raise section.err(key, "is not a JSON object")
        out.append((ident, key, value))
    return out


# -- the typed views ------------------------------------------------------------------------

@dataclass(frozen=True)
class Kdf:
    """A key slot's ``kdf`` object: ``pbkdf2`` (hash, iterations) or ``argon2i``/``argon2id``
    (time, memory in KiB, cpus)."""

    type: str
    salt: bytes
    hash: str | None = None
    iterations: int | None = None
    time: int | None = None
    memory: int | None = None
    cpus: int | None = None

    def to_json(self) -> dict:
        if self.type == PBKDF2:
            return {"type": self.type, "hash": self.hash, "iterations": self.iterations,
                    "salt": b64encode(self.salt)}
        return {"type": self.type, "time": self.time, "memory": self.memory,
                "cpus": self.cpus, "salt": b64encode(self.salt)}


@dataclass(frozen=True)
class Keyslot:
    """A ``luks2`` key slot (other types, e.g. ``reencrypt``, keep only the common fields)."""

    id: int
    type: str
    key_size: int
    area_type: str
    area_offset: int
    area_size: int
    priority: int = 1
    area_encryption: str | None = None
    area_key_size: int | None = None
    af_type: str | None = None
    af_stripes: int | None = None
    af_hash: str | None = None
    kdf: Kdf | None = None

    @property
    def priority_name(self) -> str:
        return KEYSLOT_PRIORITIES.get(self.priority, "invalid")


@dataclass(frozen=True)
class SegmentIntegrity:
    type: str
    journal_encryption: str = "none"
    journal_integrity: str = "none"


@dataclass(frozen=True)
class Segment:
    """A data segment.  ``offset`` and ``size`` are bytes; ``size`` None is ``dynamic``
    (to the end of the device); ``iv_tweak`` is in 512-byte sectors."""

    id: int
    type: str
    offset: int
    size: int | None
    iv_tweak: int = 0
    encryption: str | None = None
    sector_size: int = 512
    integrity: SegmentIntegrity | None = None
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Digest:
    id: int
    type: str
    keyslots: tuple[int, ...]
    segments: tuple[int, ...]
    hash: str | None = None
    iterations: int | None = None
    salt: bytes | None = None
    digest: bytes | None = None


@dataclass(frozen=True)
class Token:
    """A token; ``fields`` holds its JSON (all of it, for external token types)."""

    id: int
    type: str
    keyslots: tuple[int, ...]
    fields: Mapping

    @property
    def key_description(self) -> str | None:
        """For ``luks2-keyring``: the user key holding the passphrase."""
        return self.fields.get("key_description")


@dataclass(frozen=True)
class Config:
    json_size: int
    keyslots_size: int
    flags: tuple[str, ...] = ()
    requirements: tuple[str, ...] = ()

    @property
    def metadata_size(self) -> int:
        """Bytes of one header copy: binary header + JSON area."""
        return self.json_size + LUKS2_HDR_BIN_LEN

    @property
    def unknown_requirements(self) -> tuple[str, ...]:
        return tuple(r for r in self.requirements if r not in KNOWN_REQUIREMENTS)


# -- validation ----------------------------------------------------------------------------

def _kdf(v: _V) -> Kdf:
    kind = v.string("type")
    if kind == PBKDF2:
        if set(v.obj) != {"type", "salt", "hash", "iterations"}:
            raise v.err(None, "pbkdf2 takes exactly type, salt, hash, iterations")
        h = v.string("hash")
        if not is_supported(h):
            raise v.err("hash", f"hash {h!r} is not supported")
        return Kdf(kind, v.salt("salt"), hash=h, iterations=v.uint("iterations", 1))
    if kind in (ARGON2I, ARGON2ID):
        if set(v.obj) != {"type", "salt", "time", "memory", "cpus"}:
            raise v.err(None, f"{kind} takes exactly type, salt, time, memory, cpus")
        return Kdf(kind, v.salt("salt"), time=v.uint("time", 1),
                   memory=v.uint("memory", 8, ARGON2_MAX_MEMORY_KB),
                   cpus=v.uint("cpus", 1, 2 ** 24 - 1))
    raise v.err("type", f"unknown kdf type {kind!r}")


def _keyslot(ident: int, v: _V) -> Keyslot:
    kind = v.string("type")
    key_size = v.uint("key_size", 0, _U32)
    area = v.obj_("area")
    area_type = area.string("type")
    area_offset = area.number("offset")
    area_size = area.number("size")
    priority = v.uint("priority", 0, 2) if v.has("priority") else 1
    if kind != "luks2":
        return Keyslot(ident, kind, key_size, area_type, area_offset, area_size, priority)
    if not 1 <= key_size <= _MAX_KEY_SIZE:
        raise v.err("key_size", f"{key_size} is out of range 1..{_MAX_KEY_SIZE}")
    if area_type != "raw":
        raise area.err("type", f"unknown area type {area_type!r}")
    encryption = area.string("encryption")
    area_key_size = area.uint("key_size", 0, _MAX_KEY_SIZE)
    af = v.obj_("af")
    af_type = af.string("type")
    if af_type != "luks1":
        raise af.err("type", f"unknown af type {af_type!r}")
    af_hash = af.string("hash")
    if not is_supported(af_hash):
        raise af.err("hash", f"hash {af_hash!r} is not supported")
    stripes = af.uint("stripes", 1)
    if stripes != LUKS_STRIPES:
        raise af.err("stripes", f"{stripes} is not {LUKS_STRIPES}")
    need = af_split_sectors(key_size, stripes) * 512
    if area_size < need:
        raise area.err("size", f"{area_size} is smaller than the key material ({need} bytes)")
    return Keyslot(ident, kind, key_size, area_type, area_offset, area_size, priority,
                   encryption, area_key_size, af_type, stripes, af_hash, _kdf(v.obj_("kdf")))


def _segment(ident: int, v: _V) -> Segment:
    kind = v.string("type")
    offset = v.number("offset")
    size_text = v.get("size", str)
    size = None if size_text == "dynamic" else v.number("size")
    if size == 0:
        raise v.err("size", "is zero")
    if offset % 512:
        raise v.err("offset", f"{offset} is not a multiple of 512")
    if size is not None and size % 512:
        raise v.err("size", f"{size} is not a multiple of 512")
    flags = v.strings("flags") if v.has("flags") else ()
    if kind != "crypt":
        return Segment(ident, kind, offset, size, flags=flags)
    iv_tweak = v.number("iv_tweak")
    encryption = v.string("encryption")
    sector_size = v.uint("sector_size", 1)
    if sector_size not in (512, 1024, 2048, 4096):
        raise v.err("sector_size", f"{sector_size} is not a power of two in 512..4096")
    if size is not None and size % sector_size:
        raise v.err("size", f"{size} is not a multiple of the sector size {sector_size}")
    integrity = None
    if v.has("integrity"):
        iv = v.obj_("integrity")
        integrity = SegmentIntegrity(iv.string("type"), iv.string("journal_encryption"),
                                     iv.string("journal_integrity"))
    return Segment(ident, kind, offset, size, iv_tweak, encryption, sector_size, integrity,
                   flags)


def _digest(ident: int, v: _V, keyslots, segments) -> Digest:
    kind = v.string("type")
    ks, segs = v.strings("keyslots"), v.strings("segments")
    ks_ids, seg_ids = [], []
    for name, items, known, out in (("keyslots", ks, keyslots, ks_ids),
                                    ("segments", segs, segments, seg_ids)):
        for item in items:
            num = int(item) if item.isascii() and item.isdigit() else -1
            if num not in known or str(num) != item:
                raise v.err(name, f"refers to a missing {name[:-1]} {item!r}")
            if num in out:
                raise v.err(name, f"lists {name[:-1]} {item} twice")
            out.append(num)
    if kind != "pbkdf2":
        return Digest(ident, kind, tuple(ks_ids), tuple(seg_ids))
    h = v.string("hash")
    if not is_supported(h):
        raise v.err("hash", f"hash {h!r} is not supported")
    raw = v.salt("digest", None)
    if not (len(raw) == 20 or len(raw) == hash_size(h)) or len(raw) > 64:
        raise v.err("digest", f"is {len(raw)} bytes, expected 20 or {hash_size(h)}")
    return Digest(ident, kind, tuple(ks_ids), tuple(seg_ids), h, v.uint("iterations", 1),
                  v.salt("salt"), raw)


def _token(ident: int, v: _V, keyslots) -> Token:
    kind = v.string("type")
    ks = []
    for item in v.strings("keyslots"):
        num = int(item) if item.isascii() and item.isdigit() else -1
        if num not in keyslots or str(num) != item:
            raise v.err("keyslots", f"refers to a missing keyslot {item!r}")
        if num in ks:
            raise v.err("keyslots", f"lists keyslot {item} twice")
        ks.append(num)
    if kind == "luks2-keyring":
        if set(v.obj) != {"type", "keyslots", "key_description"}:
            raise v.err(None, "luks2-keyring takes exactly type, keyslots, key_description")
        v.string("key_description")
    return Token(ident, kind, tuple(ks), MappingProxyType(copy.deepcopy(v.obj)))


def _config(v: _V) -> Config:
    json_size = v.number("json_size")
    keyslots_size = v.number("keyslots_size")
    if json_size + LUKS2_HDR_BIN_LEN not in LUKS2_METADATA_SIZES:
        raise v.err("json_size", f"{json_size} does not make a valid metadata size")
    if keyslots_size % 4096 or keyslots_size > LUKS2_MAX_KEYSLOTS_SIZE:
        raise v.err("keyslots_size", f"{keyslots_size} is not a multiple of 4096 up to "
                    f"{LUKS2_MAX_KEYSLOTS_SIZE}")
    flags = v.strings("flags") if v.has("flags") else ()
    reqs: tuple[str, ...] = ()
    if v.has("requirements"):
        rv = v.obj_("requirements")
        if rv.has("mandatory"):
            reqs = rv.strings("mandatory")
        online = [r for r in reqs if r.startswith("online-reencrypt")]
        if len(online) > 1:
            raise rv.err("mandatory", "has more than one online-reencrypt requirement")
    return Config(json_size, keyslots_size, flags, reqs)


class Luks2Metadata:
    """Validated LUKS2 JSON metadata.  Immutable: change a :meth:`to_dict` copy and
    validate it again with :meth:`from_dict`."""

    __slots__ = ("_doc", "keyslots", "tokens", "segments", "digests", "config")

    def __init__(self, *a, **k):
        raise TypeError("use Luks2Metadata.from_dict()")

    @classmethod
    def from_dict(cls, doc: dict, *, json_area_size: int | None = None,
                  device_size: int | None = None) -> Luks2Metadata:
        """Validate ``doc``.  ``json_area_size`` is the binary header's JSON area
        (``hdr_size - 4096``); ``device_size`` the metadata device's size in bytes."""
        if not isinstance(doc, dict):
            raise FormatError("luks2: JSON metadata is not an object")
        doc = copy.deepcopy(doc)
        top = _V(doc, "")
        for name in ("keyslots", "tokens", "segments", "digests", "config"):
            top.get(name, dict)
        config = _config(_V(doc["config"], "config"))
        if json_area_size is not None and config.json_size != json_area_size:
            raise FormatError(f"luks2: config.json_size: {config.json_size} does not match the "
                              f"binary header's JSON area ({json_area_size} bytes)")
        keyslots = {i: _keyslot(i, _V(o, f"keyslots.{k}"))
                    for i, k, o in _ids(_V(doc["keyslots"], "keyslots"), LUKS2_KEYSLOTS_MAX,
                                        "keyslot")}
        segments = {i: _segment(i, _V(o, f"segments.{k}"))
                    for i, k, o in _ids(_V(doc["segments"], "segments"), LUKS2_SEGMENT_MAX,
                                        "segment")}
        digests = {i: _digest(i, _V(o, f"digests.{k}"), keyslots, segments)
                   for i, k, o in _ids(_V(doc["digests"], "digests"), _DIGEST_ID_MAX, "digest")}
        tokens = {i: _token(i, _V(o, f"tokens.{k}"), keyslots)
                  for i, k, o in _ids(_V(doc["tokens"], "tokens"), LUKS2_TOKENS_MAX, "token")}
        if any(r.startswith("online-reencrypt") for r in config.requirements) and \
                not any(k.type == "reencrypt" for k in keyslots.values()):
            raise FormatError("luks2: config.requirements.mandatory: online reencryption "
                              "without a reencrypt keyslot")
        _check_segments(segments, digests)
        _check_digest_links(keyslots, digests)
        _check_areas(keyslots, segments, config, device_size)
        size = len(dumps_plain(doc).encode("utf-8"))
        if size > config.json_size - 1:
            raise FormatError(f"luks2: JSON metadata is {size} bytes, larger than its "
                              f"{config.json_size}-byte area")
        self = object.__new__(cls)
        object.__setattr__(self, "_doc", doc)
        object.__setattr__(self, "keyslots", MappingProxyType(dict(sorted(keyslots.items()))))
        object.__setattr__(self, "tokens", MappingProxyType(dict(sorted(tokens.items()))))
        object.__setattr__(self, "segments", MappingProxyType(dict(sorted(segments.items()))))
        object.__setattr__(self, "digests", MappingProxyType(dict(sorted(digests.items()))))
        object.__setattr__(self, "config", config)
        return self

    def __setattr__(self, name, value):
        raise AttributeError("Luks2Metadata is immutable")

    def to_dict(self) -> dict:
        """A deep copy of the JSON document, in its on-disk key order."""
        return copy.deepcopy(self._doc)

    def __eq__(self, other):
        return isinstance(other, Luks2Metadata) and self._doc == other._doc

    __hash__ = None  # type: ignore[assignment]

    # -- lookups ---------------------------------------------------------------------------
    def digest_of_keyslot(self, keyslot: int) -> Digest | None:
        for d in self.digests.values():
            if keyslot in d.keyslots:
                return d
        return None

    def digest_of_segment(self, segment: int) -> Digest | None:
        for d in self.digests.values():
            if segment in d.segments:
                return d
        return None

    @property
    def default_segment(self) -> Segment:
        """The segment a volume opens as: ``backup-final`` during reencryption, else 0."""
        for s in self.segments.values():
            if "backup-final" in s.flags:
                return s
        return self.segments[0]

    @property
    def data_offset(self) -> int:
        """Bytes: the smallest offset of a regular (non-backup) segment."""
        regular = [s.offset for s in self.segments.values() if not _is_backup(s)]
        return min(regular)

    @property
    def hdr_and_areas_size(self) -> int:
        """Both metadata copies and the key slots area, in bytes."""
        return 2 * self.config.metadata_size + self.config.keyslots_size


def _is_backup(segment: Segment) -> bool:
    return any(f.startswith("backup-") for f in segment.flags)


def _check_segments(segments: dict[int, Segment], digests: dict[int, Digest]) -> None:
    if not segments:
        raise FormatError("luks2: segments: no segment")
    first_backup = min((i for i, s in segments.items() if _is_backup(s)), default=None)
    regular = sorted(i for i, s in segments.items() if not _is_backup(s))
    if first_backup == 0:
        raise FormatError("luks2: segments: no regular segment")
    if first_backup is not None and any(i > first_backup for i in regular):
        raise FormatError(f"luks2: segments.{max(regular)}: regular segment after backup "
                          f"segment {first_backup}")
    if regular != list(range(len(regular))):
        raise FormatError("luks2: segments: ids have a gap")
    for s in segments.values():
        if s.type == "crypt" and not any(s.id in d.segments for d in digests.values()):
            raise FormatError(f"luks2: segments.{s.id}: crypt segment has no digest")
    for n, i in enumerate(regular):
        s = segments[i]
        if s.size is None and n != len(regular) - 1:
            raise FormatError(f"luks2: segments.{i}.size: only the last segment can be dynamic")
        for j in regular:
            t = segments[j]
            if i != j and t.offset <= s.offset and (t.size is None or s.offset < t.offset + t.size):
                raise FormatError(f"luks2: segments.{i}: overlaps segment {j}")


def _check_digest_links(keyslots: dict[int, Keyslot], digests: dict[int, Digest]) -> None:
    for k in keyslots.values():
        owners = [d.id for d in digests.values() if k.id in d.keyslots]
        if k.type == "luks2" and len(owners) != 1:
            raise FormatError(f"luks2: keyslots.{k.id}: assigned to {len(owners)} digests, "
                              "expected exactly 1")


def _check_areas(keyslots: dict[int, Keyslot], segments: dict[int, Segment], config: Config,
                 device_size: int | None) -> None:
    meta = config.metadata_size
    end = 2 * meta + config.keyslots_size
    regular = [s.offset for s in segments.values() if not _is_backup(s)]
    data_offset = min(regular)
    if data_offset and data_offset < end:
        raise FormatError(f"luks2: config.keyslots_size: {config.keyslots_size} overlaps the "
                          f"data segment at {data_offset}")
    if device_size is not None and device_size < end:
        raise FormatError(f"luks2: config.keyslots_size: header and key slots area "
                          f"({end} bytes) do not fit the device ({device_size} bytes)")
    spans = []
    for k in keyslots.values():
        where = f"luks2: keyslots.{k.id}.area"
        if k.area_size == 0:
            raise FormatError(f"{where}.size: is zero")
        if k.area_offset < 2 * meta:
            raise FormatError(f"{where}.offset: {k.area_offset} is inside the metadata "
                              f"(below {2 * meta})")
        if k.area_offset + k.area_size > end:
            raise FormatError(f"{where}: [{k.area_offset}, {k.area_offset + k.area_size}) "
                              f"is outside the key slots area (ends at {end})")
        spans.append((k.area_offset, k.area_offset + k.area_size, k.id))
    spans.sort()
    for (lo1, hi1, a), (lo2, hi2, b) in zip(spans, spans[1:]):
        if lo2 < hi1:
            raise FormatError(f"luks2: keyslots.{b}.area: overlaps the area of keyslot {a}")
