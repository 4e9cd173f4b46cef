"""LUKS2 header I/O: both copies, checksums, sequence ids, recovery, safe writes.

LUKS2 On-Disk Format Specification, section 2 ("Binary header") and 2.1 ("Header
redundancy"); cryptsetup ``lib/luks2/luks2_disk_metadata.c``.

Reading checks each copy on its own (magic, version, offset, size, checksum, JSON) and
takes the valid one with the higher ``seqid``; the other copy's problem is reported in
:attr:`Luks2Header.problems` and mended by the next write.  Reading never writes.

Writing validates the new metadata first, checks that the on-disk header did not change
since it was read (cryptsetup's concurrent-update check), then writes the primary copy
and then the secondary, each as cryptsetup does: binary header with a zeroed checksum,
JSON area, binary header with the checksum, flush.  A crash at any point leaves at
least one valid copy.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass, replace
from typing import Callable

from ..block import BlockDevice, read_bytes, write_bytes
from ..errors import BlockIOError, FormatError
from ._json import json_area, parse_json_area
from .hashes import hash_ctor, is_supported
from .layout import (CSUM_OFFSET, LUKS2_CHECKSUM_L, LUKS2_HDR2_OFFSETS, LUKS2_HDR_BIN_LEN,
                     LUKS2_MAGIC_1ST, LUKS2_MAGIC_2ND, LUKS2_METADATA_SIZES, Luks2BinaryHeader)
from .metadata import Luks2Metadata

__all__ = ["Luks2Header", "read_luks2_header", "build_luks2_copies", "write_luks2_header",
           "check_unchanged", "checksum", "Source"]


class Source:
    """Bytes or a BlockDevice, read by byte offset; reads past the end are FormatErrors."""

    def __init__(self, src: bytes | bytearray | memoryview | BlockDevice):
        self.dev = src if isinstance(src, BlockDevice) else None
        self.buf = None if self.dev is not None else memoryview(bytes(src))
        self.size = self.dev.size_bytes if self.dev is not None else len(self.buf)
        self.name = self.dev.name if self.dev is not None else "buffer"

    def read(self, offset: int, length: int, what: str) -> bytes:
        if offset < 0 or offset + length > self.size:
            raise FormatError(f"{what} at byte {offset} is beyond the end of {self.name} "
                              f"({self.size} bytes)")
        if self.dev is not None:
            return bytes(read_bytes(self.dev, offset, length))
        return self.buf[offset:offset + length].tobytes()


def checksum(alg: str, binary: bytes, json_bytes: bytes) -> bytes:
    """The ``csum`` of one copy: hash of the binary header (csum zeroed) + JSON area,
    zero-padded to 64 bytes."""
    h = hash_ctor(alg)()
    h.update(binary[:CSUM_OFFSET])
    h.update(bytes(LUKS2_CHECKSUM_L))
    h.update(binary[CSUM_OFFSET + LUKS2_CHECKSUM_L:LUKS2_HDR_BIN_LEN])
    h.update(json_bytes)
    d = h.digest()
    return d + bytes(LUKS2_CHECKSUM_L - len(d))


@dataclass(frozen=True)
class Luks2Header:
    """A LUKS2 header: the binary fields shared by both copies and the JSON metadata.

    ``salt1``/``salt2`` are the primary's and secondary's salts.  ``problems`` lists what
    is wrong with the copy that was not used (empty when both copies are valid and
    equal); ``used`` is ``"primary"`` or ``"secondary"``.
    """

    hdr_size: int
    seqid: int
    uuid: str
    metadata: Luks2Metadata
    label: str = ""
    subsystem: str = ""
    checksum_alg: str = "sha256"
    salt1: bytes = bytes(64)
    salt2: bytes = bytes(64)
    used: str = "primary"
    problems: tuple[str, ...] = ()
    #: which copies are not valid on disk (a write replaces their salt)
    bad_copies: frozenset = frozenset()

    @property
    def json_size(self) -> int:
        return self.hdr_size - LUKS2_HDR_BIN_LEN

    def binary(self, secondary: bool) -> Luks2BinaryHeader:
        return Luks2BinaryHeader(
            magic=LUKS2_MAGIC_2ND if secondary else LUKS2_MAGIC_1ST, version=2,
            hdr_size=self.hdr_size, seqid=self.seqid, label=self.label,
            checksum_alg=self.checksum_alg, salt=self.salt2 if secondary else self.salt1,
            uuid=self.uuid, subsystem=self.subsystem,
            hdr_offset=self.hdr_size if secondary else 0)


# -- reading -------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Copy:
    binary: Luks2BinaryHeader
    metadata: Luks2Metadata


def _read_copy(src: Source, offset: int, secondary: bool) -> tuple[_Copy | None, str, int | None]:
    """One header copy at ``offset``: (copy, '', hdr_size) or (None, problem, hdr_size)."""
    which = "secondary" if secondary else "primary"
    try:
        raw = src.read(offset, LUKS2_HDR_BIN_LEN, f"luks2: {which} header")
        b = Luks2BinaryHeader.from_bytes(raw)
    except FormatError as e:
        return None, str(e), None
    if b.magic != (LUKS2_MAGIC_2ND if secondary else LUKS2_MAGIC_1ST):
        return None, f"luks2: {which} header has the other copy's magic", None
    if b.hdr_offset != offset:
        return None, (f"luks2: {which} header hdr_offset {b.hdr_offset} does not match its "
                      f"position {offset}"), None
    if b.hdr_size not in LUKS2_METADATA_SIZES:
        return None, f"luks2: {which} header has bogus hdr_size {b.hdr_size}", None
    if secondary and b.hdr_size != offset:
        return None, (f"luks2: secondary header hdr_size {b.hdr_size} does not match its "
                      f"offset {offset}"), None
    if not is_supported(b.checksum_alg):
        return None, (f"luks2: {which} header checksum_alg {b.checksum_alg!r} is not "
                      "supported"), b.hdr_size
    try:
        area = src.read(offset + LUKS2_HDR_BIN_LEN, b.hdr_size - LUKS2_HDR_BIN_LEN,
                        f"luks2: {which} JSON area")
    except FormatError as e:
        return None, str(e), b.hdr_size
    if not hmac.compare_digest(checksum(b.checksum_alg, raw, area), b.csum):
        return None, f"luks2: {which} header checksum mismatch", b.hdr_size
    try:
        doc = parse_json_area(area, f"luks2: {which} header")
        md = Luks2Metadata.from_dict(doc, json_area_size=b.hdr_size - LUKS2_HDR_BIN_LEN,
                                     device_size=src.size)
    except FormatError as e:
        msg = str(e)
        if not msg.startswith(f"luks2: {which}"):
            msg = msg.replace("luks2: ", f"luks2: {which} header: ", 1)
        return None, msg, b.hdr_size
    return _Copy(b, md), "", b.hdr_size


def read_luks2_header(source: bytes | bytearray | memoryview | BlockDevice) -> Luks2Header:
    """Read and validate a LUKS2 header from bytes or a BlockDevice.

    Raises FormatError (naming both copies' problems) if no copy is valid.
    """
    src = source if isinstance(source, Source) else Source(source)
    p, p_err, p_size = _read_copy(src, 0, False)
    s, s_err = None, "luks2: secondary header not found"
    if p_size is not None:
        s, s_err, _ = _read_copy(src, p_size, True)
    else:
        for off in LUKS2_HDR2_OFFSETS:
            s, err, _ = _read_copy(src, off, True)
            if s is not None:
                break
            if off == LUKS2_HDR2_OFFSETS[0]:
                s_err = err
    if p is None and s is None:
        p_why = p_err.replace("luks2: primary header: ", "", 1)
        s_why = s_err.replace("luks2: secondary header: ", "", 1)
        if p_why == s_why and p_why != p_err:
            raise FormatError(f"luks2: both header copies: {p_why}")
        raise FormatError(f"{p_err}; {s_err.replace('luks2: ', '', 1)}")
    problems = []
    bad = set()
    if p is not None and s is not None:
        if p.binary.uuid != s.binary.uuid:
            problems.append(f"luks2: primary and secondary headers have different UUIDs "
                            f"({p.binary.uuid}, {s.binary.uuid})")
        if s.binary.seqid > p.binary.seqid:
            problems.append(f"luks2: primary header is obsolete (seqid {p.binary.seqid} < "
                            f"{s.binary.seqid})")
            bad.add("primary")
            use = s
        else:
            use = p
            if s.binary.seqid < p.binary.seqid:
                problems.append(f"luks2: secondary header is obsolete (seqid "
                                f"{s.binary.seqid} < {p.binary.seqid})")
                bad.add("secondary")
            elif s.metadata != p.metadata or replace(s.binary, magic=p.binary.magic,
                                                     salt=p.binary.salt, csum=p.binary.csum,
                                                     hdr_offset=0) != p.binary:
                problems.append(f"luks2: primary and secondary headers differ with equal seqid "
                                f"{p.binary.seqid}; using the primary")
                bad.add("secondary")
    elif p is None:
        problems.append(p_err)
        bad.add("primary")
        use = s
    else:
        problems.append(s_err)
        bad.add("secondary")
        use = p
    b = use.binary
    salt1 = p.binary.salt if p is not None else bytes(64)
    salt2 = s.binary.salt if s is not None else bytes(64)
    return Luks2Header(hdr_size=b.hdr_size, seqid=b.seqid, uuid=b.uuid, metadata=use.metadata,
                       label=b.label, subsystem=b.subsystem, checksum_alg=b.checksum_alg,
                       salt1=salt1, salt2=salt2, used="secondary" if use is s else "primary",
                       problems=tuple(problems), bad_copies=frozenset(bad))


# -- writing -------------------------------------------------------------------------------

def build_luks2_copies(header: Luks2Header) -> tuple[bytes, bytes]:
    """The primary and secondary copies (binary header + JSON area, with checksums)."""
    area = json_area(header.metadata.to_dict(), header.json_size)
    out = []
    for secondary in (False, True):
        raw = header.binary(secondary).to_bytes()
        csum = checksum(header.checksum_alg, raw, area)
        out.append(raw[:CSUM_OFFSET] + csum + raw[CSUM_OFFSET + LUKS2_CHECKSUM_L:] + area)
    return out[0], out[1]


def check_unchanged(dev: BlockDevice, header: Luks2Header) -> None:
    try:
        now = read_luks2_header(dev)
    except FormatError:
        now = None
    if now is None or now.uuid != header.uuid or now.seqid != header.seqid:
        raise FormatError(f"luks2: header on {dev.name} changed since it was read "
                          "(concurrent update?); nothing written")


def write_luks2_header(dev: BlockDevice, header: Luks2Header, metadata: Luks2Metadata, *,
                       rng: Callable[[int], bytes] = os.urandom, check_seqid: bool = True,
                       **binary_changes) -> Luks2Header:
    """Write ``metadata`` with ``seqid + 1`` to both copies; returns the new header.

    ``metadata`` is validated again against the header size and the device; a copy that
    was bad gets a fresh salt, as cryptsetup's recovery does.  ``binary_changes`` may set
    ``label``, ``subsystem`` or ``uuid``.
    """
    Luks2Metadata.from_dict(metadata.to_dict(), json_area_size=header.json_size,
                            device_size=dev.size_bytes)
    if check_seqid:
        check_unchanged(dev, header)
    salt1 = rng(64) if "primary" in header.bad_copies else header.salt1
    salt2 = rng(64) if "secondary" in header.bad_copies else header.salt2
    new = replace(header, seqid=header.seqid + 1, metadata=metadata, salt1=salt1, salt2=salt2,
                  used="primary", problems=(), bad_copies=frozenset(), **binary_changes)
    area = json_area(metadata.to_dict(), new.json_size)
    for secondary in (False, True):
        offset = new.hdr_size if secondary else 0
        raw = new.binary(secondary).to_bytes()
        write_bytes(dev, offset, raw)
        write_bytes(dev, offset + LUKS2_HDR_BIN_LEN, area)
        csum = checksum(new.checksum_alg, raw, area)
        write_bytes(dev, offset + CSUM_OFFSET, csum)
        dev.flush()
    return new


def read_back_ok(dev: BlockDevice, header: Luks2Header) -> None:
    """Raise BlockIOError unless what is on ``dev`` now is ``header``."""
    now = read_luks2_header(dev)
    if now.seqid != header.seqid or now.metadata != header.metadata or now.problems:
        raise BlockIOError(f"luks2: header on {dev.name} does not read back as written")
