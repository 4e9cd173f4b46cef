"""On-disk binary structures of LUKS2 and LUKS1.

Upstream: ``struct luks2_hdr_disk`` in cryptsetup's ``lib/luks2/luks2.h`` (LUKS2 On-Disk
Format Specification, section 2 "Binary header") and ``struct luks_phdr`` in
``lib/luks1/luks.h`` (LUKS1 On-Disk Format Specification, section 2.4 "PHDR").

Every integer on disk is big-endian.  Strings are NUL-terminated and NUL-padded.

LUKS2 keeps two copies of a 4096-byte binary header, each followed by its JSON area:
the primary at offset 0 and the secondary at ``hdr_size``.  Each copy's checksum
(``csum``) covers the binary header with ``csum`` zeroed plus the whole JSON area.
LUKS1 has one 592-byte header (1024 bytes with its padding) in the first sector.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ..errors import FormatError

__all__ = [
    "LUKS2_MAGIC_1ST",
    "LUKS2_MAGIC_2ND",
    "LUKS2_HDR_BIN_LEN",
    "LUKS2_HDR_16K_LEN",
    "LUKS2_HDR_OFFSET_MAX",
    "LUKS2_HDR2_OFFSETS",
    "LUKS2_METADATA_SIZES",
    "LUKS2_MAX_KEYSLOTS_SIZE",
    "LUKS2_DEFAULT_HDR_SIZE",
    "LUKS2_LABEL_L",
    "LUKS2_UUID_L",
    "LUKS2_SALT_L",
    "LUKS2_CHECKSUM_ALG_L",
    "LUKS2_CHECKSUM_L",
    "Luks2BinaryHeader",
    "LUKS_MAGIC",
    "LUKS_NUMKEYS",
    "LUKS_KEY_ENABLED",
    "LUKS_KEY_DISABLED",
    "LUKS_STRIPES",
    "LUKS_SALTSIZE",
    "LUKS_DIGESTSIZE",
    "LUKS_ALIGN_KEYSLOTS",
    "LUKS1_PHDR_SIZE",
    "Luks1Keyblock",
    "Luks1Header",
    "probe_version",
]

# -- LUKS2 --------------------------------------------------------------------------------

LUKS2_MAGIC_1ST = b"LUKS\xba\xbe"
LUKS2_MAGIC_2ND = b"SKUL\xba\xbe"
LUKS2_LABEL_L = 48
LUKS2_UUID_L = 40
LUKS2_SALT_L = 64
LUKS2_CHECKSUM_ALG_L = 32
LUKS2_CHECKSUM_L = 64

LUKS2_HDR_BIN_LEN = 4096
LUKS2_HDR_16K_LEN = 0x4000
LUKS2_HDR_OFFSET_MAX = 0x400000
#: where the secondary header may be, scanned when the primary is unreadable
LUKS2_HDR2_OFFSETS = (0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000,
                      0x200000, LUKS2_HDR_OFFSET_MAX)
#: the only sizes one header copy (binary header + JSON area) may have
LUKS2_METADATA_SIZES = frozenset(LUKS2_HDR2_OFFSETS)
LUKS2_MAX_KEYSLOTS_SIZE = 0x8000000  # 128 MiB
LUKS2_DEFAULT_HDR_SIZE = 0x1000000  # 16 MiB: both copies + keyslots area, by default

# struct luks2_hdr_disk: magic[6] version hdr_size seqid label[48] checksum_alg[32]
# salt[64] uuid[40] subsystem[48] hdr_offset _padding[184] csum[64] _padding4096[3584]
_LUKS2_HDR = struct.Struct(">6sHQQ48s32s64s40s48sQ184x64s3584x")
assert _LUKS2_HDR.size == LUKS2_HDR_BIN_LEN, _LUKS2_HDR.size
#: byte offset of ``csum`` inside the binary header (zeroed while checksumming)
CSUM_OFFSET = 448
assert CSUM_OFFSET == 6 + 2 + 8 + 8 + 48 + 32 + 64 + 40 + 48 + 8 + 184


def _cstr(raw: bytes, name: str) -> str:
    """A NUL-terminated string field; what follows the first NUL is ignored (as in C)."""
    value = raw.split(b"\0", 1)[0]
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"luks: header field {name} is not valid UTF-8") from None


def _put_cstr(value: str, size: int, name: str) -> bytes:
    raw = value.encode("utf-8")
    if b"\0" in raw:
        raise FormatError(f"luks: header field {name} contains a NUL byte")
    if len(raw) >= size:  # room for the terminating NUL, as cryptsetup enforces
        raise FormatError(f"luks: header field {name} is longer than {size - 1} bytes")
    return raw


@dataclass(frozen=True)
class Luks2BinaryHeader:
    """One copy of ``struct luks2_hdr_disk`` (4096 bytes)."""

    magic: bytes
    version: int
    hdr_size: int
    seqid: int
    label: str
    checksum_alg: str
    salt: bytes
    uuid: str
    subsystem: str
    hdr_offset: int
    csum: bytes = bytes(LUKS2_CHECKSUM_L)

    @property
    def secondary(self) -> bool:
        return self.magic == LUKS2_MAGIC_2ND

    @classmethod
    def from_bytes(cls, data: bytes) -> Luks2BinaryHeader:
        """Parse the first 4096 bytes of ``data``; checks magic and version only."""
        if len(data) < LUKS2_HDR_BIN_LEN:
            raise FormatError(f"luks2: binary header is {len(data)} bytes, expected "
                              f"{LUKS2_HDR_BIN_LEN}")
        (magic, version, hdr_size, seqid, label, checksum_alg, salt, uuid, subsystem,
         hdr_offset, csum) = _LUKS2_HDR.unpack_from(data)
        if magic not in (LUKS2_MAGIC_1ST, LUKS2_MAGIC_2ND):
            raise FormatError("luks2: bad magic (not a LUKS2 header)")
        if version != 2:
            raise FormatError(f"luks2: header version {version} is not 2")
        return cls(magic=magic, version=version, hdr_size=hdr_size, seqid=seqid,
                   label=_cstr(label, "label"), checksum_alg=_cstr(checksum_alg, "checksum_alg"),
                   salt=salt, uuid=_cstr(uuid, "uuid"), subsystem=_cstr(subsystem, "subsystem"),
                   hdr_offset=hdr_offset, csum=csum)

    def to_bytes(self) -> bytes:
        """The 4096 on-disk bytes (padding zeroed)."""
        if len(self.salt) != LUKS2_SALT_L or len(self.csum) != LUKS2_CHECKSUM_L:
            raise FormatError("luks2: salt and csum must be 64 bytes")
        return _LUKS2_HDR.pack(
            self.magic, self.version, self.hdr_size, self.seqid,
            _put_cstr(self.label, LUKS2_LABEL_L, "label"),
            _put_cstr(self.checksum_alg, LUKS2_CHECKSUM_ALG_L, "checksum_alg"),
            self.salt, _put_cstr(self.uuid, LUKS2_UUID_L, "uuid"),
            _put_cstr(self.subsystem, LUKS2_LABEL_L, "subsystem"),
            self.hdr_offset, self.csum)


# -- LUKS1 --------------------------------------------------------------------------------

LUKS_MAGIC = b"LUKS\xba\xbe"
LUKS_NUMKEYS = 8
LUKS_KEY_ENABLED = 0x00AC71F3
LUKS_KEY_DISABLED = 0x0000DEAD
LUKS_STRIPES = 4000
LUKS_SALTSIZE = 32
LUKS_DIGESTSIZE = 20
LUKS_ALIGN_KEYSLOTS = 4096
LUKS_CIPHERNAME_L = 32
LUKS_CIPHERMODE_L = 32
LUKS_HASHSPEC_L = 32
UUID_STRING_L = 40

# struct luks_phdr keyblock[]: active passwordIterations passwordSalt[32]
# keyMaterialOffset stripes
_KEYBLOCK = struct.Struct(">II32sII")
assert _KEYBLOCK.size == 48, _KEYBLOCK.size
# struct luks_phdr up to keyblock[]: magic[6] version cipherName[32] cipherMode[32]
# hashSpec[32] payloadOffset keyBytes mkDigest[20] mkDigestSalt[32] mkDigestIterations
# uuid[40]
_PHDR = struct.Struct(">6sH32s32s32sII20s32sI40s")
assert _PHDR.size == 208, _PHDR.size
LUKS1_PHDR_SIZE = _PHDR.size + LUKS_NUMKEYS * _KEYBLOCK.size
assert LUKS1_PHDR_SIZE == 592
_PHDR_PADDED = 1024  # sizeof(struct luks_phdr) with its _padding[432]


@dataclass(frozen=True)
class Luks1Keyblock:
    """One ``keyblock[]`` entry of ``struct luks_phdr``."""

    active: int = LUKS_KEY_DISABLED
    passwordIterations: int = 0
    passwordSalt: bytes = bytes(LUKS_SALTSIZE)
    keyMaterialOffset: int = 0
    stripes: int = LUKS_STRIPES

    @property
    def enabled(self) -> bool:
        return self.active == LUKS_KEY_ENABLED

    @classmethod
    def from_bytes(cls, data: bytes, offset: int = 0) -> Luks1Keyblock:
        return cls(*_KEYBLOCK.unpack_from(data, offset))

    def to_bytes(self) -> bytes:
        return _KEYBLOCK.pack(self.active, self.passwordIterations, self.passwordSalt,
                              self.keyMaterialOffset, self.stripes)


@dataclass(frozen=True)
class Luks1Header:
    """``struct luks_phdr``: the LUKS1 partition header."""

    version: int
    cipherName: str
    cipherMode: str
    hashSpec: str
    payloadOffset: int
    keyBytes: int
    mkDigest: bytes
    mkDigestSalt: bytes
    mkDigestIterations: int
    uuid: str
    keyblock: tuple[Luks1Keyblock, ...] = field(
        default_factory=lambda: tuple(Luks1Keyblock() for _ in range(LUKS_NUMKEYS)))
    magic: bytes = LUKS_MAGIC

    @classmethod
    def from_bytes(cls, data: bytes) -> Luks1Header:
        """Parse the first 592 bytes of ``data``; checks magic and version only."""
        if len(data) < LUKS1_PHDR_SIZE:
            raise FormatError(f"luks1: header is {len(data)} bytes, expected {LUKS1_PHDR_SIZE}")
        (magic, version, cipher_name, cipher_mode, hash_spec, payload_offset, key_bytes,
         mk_digest, mk_digest_salt, mk_digest_iterations, uuid) = _PHDR.unpack_from(data)
        if magic != LUKS_MAGIC:
            raise FormatError("luks1: bad magic (not a LUKS header)")
        if version != 1:
            raise FormatError(f"luks1: header version {version} is not 1")
        blocks = tuple(Luks1Keyblock.from_bytes(data, _PHDR.size + i * _KEYBLOCK.size)
                       for i in range(LUKS_NUMKEYS))
        return cls(version=version, cipherName=_cstr(cipher_name, "cipherName"),
                   cipherMode=_cstr(cipher_mode, "cipherMode"),
                   hashSpec=_cstr(hash_spec, "hashSpec"), payloadOffset=payload_offset,
                   keyBytes=key_bytes, mkDigest=mk_digest, mkDigestSalt=mk_digest_salt,
                   mkDigestIterations=mk_digest_iterations, uuid=_cstr(uuid, "uuid"),
                   keyblock=blocks, magic=magic)

    def to_bytes(self) -> bytes:
        """The 1024 on-disk bytes (the 592-byte header and its zeroed padding)."""
        if len(self.keyblock) != LUKS_NUMKEYS:
            raise FormatError(f"luks1: {len(self.keyblock)} key slots, expected {LUKS_NUMKEYS}")
        head = _PHDR.pack(self.magic, self.version,
                          _put_cstr(self.cipherName, LUKS_CIPHERNAME_L, "cipherName"),
                          _put_cstr(self.cipherMode, LUKS_CIPHERMODE_L, "cipherMode"),
                          _put_cstr(self.hashSpec, LUKS_HASHSPEC_L, "hashSpec"),
                          self.payloadOffset, self.keyBytes, self.mkDigest, self.mkDigestSalt,
                          self.mkDigestIterations, _put_cstr(self.uuid, UUID_STRING_L, "uuid"))
        out = head + b"".join(kb.to_bytes() for kb in self.keyblock)
        return out + bytes(_PHDR_PADDED - len(out))


def probe_version(data: bytes) -> int | None:
    """1 or 2 if ``data`` starts with a LUKS header of that version, else None."""
    if len(data) < 8 or data[:6] != LUKS_MAGIC:
        return None
    version = int.from_bytes(data[6:8], "big")
    return version if version in (1, 2) else None
