"""Offline formatting of a dm-integrity device: what ``integritysetup format`` leaves on disk.

Upstream: cryptsetup ``src/integritysetup.c`` (``action_format``, ``_wipe_data_device``) and
``lib/setup.c`` (``_crypt_format_integrity``), and in ``drivers/md/dm-integrity.c`` (Linux
6.1) ``dm_integrity_ctr`` (a zeroed superblock is initialised: ``initialize_superblock``),
``create_journal``, ``init_journal``, ``write_journal``, ``section_mac``, ``sb_mac`` and the
stream/block journal encryption (``xor_journal``, ``crypt_journal``).

``integritysetup format`` does three things, and so does :func:`format_device`:

1. zero the 4 KiB superblock area of the metadata device (cryptsetup);
2. load a table on it: the kernel sees a zeroed superblock, writes an empty journal
   (``init_journal``: every sector zero with the commit id of sequence 0 in its last 8
   bytes, every entry marked unused, section MACs and encryption when the table has
   ``journal_mac``/``journal_crypt``) and then the superblock (with its MAC under fix_hmac
   and a journal MAC);
3. unless ``--no-wipe``, write zeros over the whole provided device through the target in
   direct mode: every data block becomes zero and every tag the tag of a zero block at its
   sector.  Nothing else is written: tag-area padding keeps whatever it held.

Given the same device content, options and salt, the result is byte for byte the kernel's
(checked against images ``integritysetup format`` made in a real kernel:
``tests/vectors/integrity/oracle-format/``).

Layouts the kernel itself gets wrong are refused: with the old padding
(``--integrity-legacy-padding``) and an interleave smaller than the tag buffer, the kernel
rounds every area's tag position down to a buffer boundary, onto the previous area's data
(see :mod:`.geometry`).
"""

from __future__ import annotations

import errno as _errno
import os
import struct
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ...block import SECTOR_SHIFT, BlockDevice, write_bytes
from ...errors import FormatError
from .geometry import DEFAULT_BUFFER_SECTORS, Geometry, format_superblock
from .jcrypt import JournalCipher
from .layout import (
    COMMIT_IDS,
    JOURNAL_BLOCK_SECTORS,
    JOURNAL_MAC_PER_SECTOR,
    JOURNAL_MAC_SIZE,
    JOURNAL_SECTOR_DATA,
    N_COMMIT_IDS,
    SALT_SIZE,
    SB_SECTORS,
    SbFlags,
    Superblock,
)
from .tags import TagFunction, algorithm

__all__ = [
    "FormatParams",
    "FormatPlan",
    "JournalCipher",
    "plan_format",
    "format_device",
    "empty_journal",
    "encrypt_journal",
    "decrypt_journal",
    "default_tag_size",
    "WIPE_CHUNK_SECTORS",
]

#: data sectors zeroed (and tags written) per request while wiping
WIPE_CHUNK_SECTORS = 16384
_LE64 = struct.Struct("<Q")


def default_tag_size(internal_hash: str) -> int:
    """integritysetup's tag size when ``--tag-size`` is not given: the digest size
    (``INTEGRITY_hash_tag_size``; 4 for crc32/crc32c, 8 for xxhash64)."""
    return algorithm(internal_hash).digest_size


@dataclass(frozen=True)
class FormatParams:
    """What a format needs from the command line: the table's parameters.

    Algorithm names are the kernel's or cryptsetup's (``hmac-sha256``, ``hmac(sha256)``).
    ``fix_padding``/``fix_hmac`` are integritysetup's defaults (its ``--integrity-legacy-*``
    options turn them off).  ``journal_sectors`` ``None`` is the kernel's default
    (device/128, at most 131072 sectors).
    """

    internal_hash: str = "crc32c"
    key: bytes | None = field(default=None, repr=False)
    tag_size: int | None = None
    block_size: int = 512
    interleave_sectors: int | None = None
    journal_sectors: int | None = None
    buffer_sectors: int = DEFAULT_BUFFER_SECTORS
    sectors_per_bit: int | None = None
    fix_padding: bool = True
    fix_hmac: bool = True
    journal_mac: str | None = None
    journal_mac_key: bytes | None = field(default=None, repr=False)
    journal_crypt: str | None = None
    journal_crypt_key: bytes | None = field(default=None, repr=False)
    start_sector: int = 0

    @property
    def effective_tag_size(self) -> int:
        return self.tag_size or default_tag_size(self.internal_hash)


# -- the empty journal ----------------------------------------------------------------------

def _journal_mac_fn(name: str, key: bytes | None) -> Callable[[bytes], bytes]:
    """A function from bytes to the digest of ``journal_mac``'s algorithm (keyed)."""
    alg = algorithm(name)
    alg.check_key(key)
    # TagAlgorithm's primer/finisher are the one place the kernel's shash quirks (crc32
    # without inversion, little-endian xxhash64) are written down; reuse them unsalted.
    prime, finish = alg._prime, alg._finish
    base = prime(bytes(key) if key else None, None)

    def mac(data: bytes) -> bytes:
        st = base.copy()
        st.update(data)
        return finish(st)
    return mac


def _sector_salts(jg) -> np.ndarray:
    """``(section << 32) ^ sector`` of every journal sector, the commit ids' xor."""
    sec = np.arange(jg.total_sectors, dtype=np.uint64)
    ssec = np.uint64(jg.section_sectors)
    return ((sec // ssec) << np.uint64(32)) ^ (sec % ssec)


def _recode_commit_ids(buf: bytes, jg, src, dst) -> bytes:
    """Rewrite every sector's commit id from the ``src`` set to the ``dst`` set (an id that
    matches none is left as it is)."""
    if tuple(src) == tuple(dst):
        return bytes(buf)
    arr = np.frombuffer(buf, dtype="<u8").reshape(jg.total_sectors, 64).copy()
    salt = _sector_salts(jg)
    ids = arr[:, 63] ^ salt
    out = arr[:, 63].copy()
    for k in range(N_COMMIT_IDS):
        hit = ids == np.uint64(src[k])
        out[hit] = np.uint64(dst[k]) ^ salt[hit]
    arr[:, 63] = out
    return arr.tobytes()


def encrypt_journal(plain, geometry: Geometry, cipher: JournalCipher) -> bytes:
    """A plain journal area (default commit ids, section MACs already in place) as the
    kernel writes it with ``journal_crypt``: the inverse of :func:`decrypt_journal`."""
    jg = geometry.journal
    plain = bytes(memoryview(plain).cast("B")[:jg.total_sectors << SECTOR_SHIFT])
    crypt = cipher.bind(jg)
    return crypt.encrypt(_recode_commit_ids(plain, jg, COMMIT_IDS, crypt.commit_ids), 0)


def decrypt_journal(raw, geometry: Geometry, cipher: JournalCipher) -> bytes:
    """The journal area ``raw`` decrypted as the kernel's replay does, with every commit
    id rewritten from the cipher's commit ids to the default ones (a commit id that matches
    none is left alone), so that :func:`~.journal.scan_journal` reads it as a plain journal.
    The section MACs are not checked."""
    jg = geometry.journal
    buf = bytearray(memoryview(raw).cast("B")[:jg.total_sectors << SECTOR_SHIFT])
    crypt = cipher.bind(jg)
    crypt.decrypt_into(buf)
    return _recode_commit_ids(bytes(buf), jg, crypt.commit_ids, COMMIT_IDS)


def empty_journal(geometry: Geometry, *, journal_mac: str | None = None,
                  journal_mac_key: bytes | None = None,
                  journal_cipher: JournalCipher | None = None) -> bytes:
    """The journal area exactly as ``init_journal(ic, 0, journal_sections, 0)`` writes it
    on a new device, section MACs and encryption included."""
    sb = geometry.superblock
    jg = geometry.journal
    ssec = jg.section_sectors
    # every sector: zeros, then the commit id of sequence 0 xored with (section<<32)^sector
    arr = np.zeros((jg.total_sectors, 64), dtype="<u8")
    arr[:, 63] = np.uint64(COMMIT_IDS[0]) ^ _sector_salts(jg)
    buf = bytearray(arr.tobytes())
    # every entry unused: sector_hi (bytes 4..8 of the entry) = 0xFFFFFFFF
    n = np.arange(jg.section_entries)
    in_section = ((n % JOURNAL_BLOCK_SECTORS) << SECTOR_SHIFT) \
        + (n // JOURNAL_BLOCK_SECTORS) * jg.entry_size + 4
    pos = (np.arange(jg.journal_sections)[:, None] * (ssec << SECTOR_SHIFT)
           + in_section[None, :]).ravel()
    view = np.frombuffer(buf, dtype=np.uint8)
    for k in range(4):
        view[pos + k] = 0xFF
    if journal_mac is not None:
        mac = _journal_mac_fn(journal_mac, journal_mac_key)
        salted = sb.has(SbFlags.FIXED_HMAC)
        for i in range(jg.journal_sections):
            parts = [sb.salt, _LE64.pack(i)] if salted else []
            for e in range(jg.section_entries):
                rel, off = jg.entry_position(e)
                p = ((i * ssec + rel) << SECTOR_SHIFT) + off
                parts.append(bytes(buf[p:p + 8]))
            digest = mac(b"".join(parts))
            digest = (digest + bytes(JOURNAL_MAC_SIZE))[:JOURNAL_MAC_SIZE]
            for j in range(JOURNAL_BLOCK_SECTORS):
                p = ((i * ssec + j) << SECTOR_SHIFT) + JOURNAL_SECTOR_DATA \
                    - JOURNAL_MAC_PER_SECTOR
                buf[p:p + JOURNAL_MAC_PER_SECTOR] = \
                    digest[j * JOURNAL_MAC_PER_SECTOR:(j + 1) * JOURNAL_MAC_PER_SECTOR]
    if journal_cipher is not None:
        return encrypt_journal(buf, geometry, journal_cipher)
    return bytes(buf)


def _superblock_area(sb: Superblock, journal_mac: str | None,
                     journal_mac_key: bytes | None) -> bytes:
    """The 4 KiB superblock area; with fix_hmac and a journal MAC the end of its first
    sector holds ``sb_mac``: the MAC of the bytes before it."""
    area = bytearray(sb.to_area_bytes())
    if journal_mac is not None and sb.has(SbFlags.FIXED_HMAC):
        mac = _journal_mac_fn(journal_mac, journal_mac_key)
        size = algorithm(journal_mac).digest_size
        if Superblock.SIZE + size > 512:
            raise ValueError(f"journal MAC {journal_mac}: a {size}-byte digest does not fit "
                             "in the superblock sector")
        area[512 - size:512] = mac(bytes(area[:512 - size]))
    return bytes(area)


# -- planning ----------------------------------------------------------------------------

@dataclass(frozen=True)
class FormatPlan:
    """Everything a format writes, computed before anything is written."""

    superblock: Superblock
    geometry: Geometry
    superblock_area: bytes = field(repr=False)
    journal: bytes = field(repr=False)
    tag_function: TagFunction = field(repr=False)

    @property
    def provided_data_sectors(self) -> int:
        return self.superblock.provided_data_sectors


def check_layout(geometry: Geometry, *, device: str = "integrity") -> None:
    """Refuse a layout whose tags the kernel would place on data (old padding with an
    interleave below the tag buffer: each area's tags are rounded down to a buffer)."""
    if geometry.separate_metadata or geometry.nr_areas < 2:
        return
    tag_sector, _, _, _ = geometry.area_layout(1)
    actual = geometry.tag_offset(1 << geometry.log2_interleave_sectors)
    if actual != tag_sector << SECTOR_SHIFT:
        raise FormatError(
            f"{device}: the old padding with {geometry.superblock.interleave_sectors}-sector "
            f"interleave and {1 << geometry.log2_buffer_sectors}-sector tag buffers puts the "
            f"tags of area 1 at byte {actual}, inside area 0's data (the kernel would "
            "corrupt it): use a larger --interleave-sectors, --buffer-sectors at most the "
            "interleave, or the fixed padding")


def plan_format(data_device_sectors: int, meta_device_sectors: int | None = None, *,
                params: FormatParams, salt: bytes | None = None,
                device: str = "integrity") -> FormatPlan:
    """The superblock, journal and tag function of a new device on devices of these sizes.

    ``salt`` (16 bytes) is used when fix_hmac takes effect; the kernel draws it at random.
    Raises FormatError (naming ``device``) or ValueError for options the kernel refuses.
    """
    p = params
    alg = algorithm(p.internal_hash)
    alg.check_key(p.key)
    tag_size = p.effective_tag_size
    if p.journal_mac is not None:
        algorithm(p.journal_mac).check_key(p.journal_mac_key)
    cipher = None
    if p.journal_crypt is not None:
        if not p.journal_crypt_key:
            raise ValueError(f"journal encryption {p.journal_crypt} needs a key")
        cipher = JournalCipher(p.journal_crypt, p.journal_crypt_key)
    if salt is not None and len(salt) != SALT_SIZE:
        raise ValueError(f"salt must be {SALT_SIZE} bytes")
    # With a separate metadata device the kernel sizes the journal so that the journal and
    # the tags fit the device (calculate_device_limits) but leaves the reserved sectors out
    # of that sum: with start_sector > 0 the tags could end past the device's end.  Size
    # them for what follows the reserved sectors instead: the same journal whenever the
    # kernel's fits, a smaller one where the kernel's would not.
    fit_meta_sectors = meta_device_sectors
    if meta_device_sectors is not None and p.start_sector:
        fit_meta_sectors = max(meta_device_sectors - p.start_sector, 0)
    try:
        sb = format_superblock(
            data_device_sectors, fit_meta_sectors, tag_size=tag_size,
            block_size=p.block_size, journal_sectors=p.journal_sectors,
            interleave_sectors=p.interleave_sectors, buffer_sectors=p.buffer_sectors,
            sectors_per_bit=p.sectors_per_bit, start_sector=p.start_sector,
            internal_hash=True, journal_mac=p.journal_mac is not None,
            fix_padding=p.fix_padding, fix_hmac=p.fix_hmac, salt=salt)
    except ValueError as e:
        raise FormatError(f"{device}: {e}", errno=_errno.EINVAL) from None
    geo = Geometry.from_superblock(sb, data_device_sectors, meta_device_sectors,
                                   start_sector=p.start_sector,
                                   buffer_sectors=p.buffer_sectors, device=device)
    check_layout(geo, device=device)
    tag_fn = TagFunction(alg, key=p.key, tag_size=tag_size, block_size=p.block_size,
                         salt=sb.salt if sb.has(SbFlags.FIXED_HMAC) else None)
    journal = empty_journal(geo, journal_mac=p.journal_mac, journal_mac_key=p.journal_mac_key,
                            journal_cipher=cipher)
    area = _superblock_area(sb, p.journal_mac, p.journal_mac_key)
    return FormatPlan(sb, geo, area, journal, tag_fn)


# -- writing -------------------------------------------------------------------------------

def format_device(data_dev: BlockDevice, meta_dev: BlockDevice | None = None, *,
                  params: FormatParams, wipe: bool = True,
                  random: Callable[[int], bytes] = os.urandom,
                  progress: Callable[[int, int], object] | None = None,
                  plan: FormatPlan | None = None) -> FormatPlan:
    """Format ``data_dev`` (and ``meta_dev``, the separate metadata device) as
    ``integritysetup format`` does; returns the plan that was written.

    ``random(16)`` draws the salt (fix_hmac).  ``progress(done_sectors, total)`` is called
    while wiping.  Everything is computed and checked before the first write.
    """
    md = meta_dev if meta_dev is not None else data_dev
    if plan is None:
        plan = plan_format(data_dev.nr_sectors,
                           meta_dev.nr_sectors if meta_dev is not None else None,
                           params=params, salt=random(SALT_SIZE), device=md.name)
    geo = plan.geometry
    start = geo.start_sector
    md.write(geo.journal_start_sector, plan.journal)
    md.write(start, plan.superblock_area)
    if wipe:
        wipe_tags_and_data(data_dev, meta_dev, plan, progress=progress)
    md.flush()
    if meta_dev is not None:
        data_dev.flush()
    return plan


def wipe_tags_and_data(data_dev: BlockDevice, meta_dev: BlockDevice | None, plan: FormatPlan,
                       *, progress: Callable[[int, int], object] | None = None,
                       chunk_sectors: int = WIPE_CHUNK_SECTORS) -> None:
    """Write zeros over every provided block and the tag of a zero block at its sector,
    in large requests (what the kernel's direct-mode wipe leaves)."""
    md = meta_dev if meta_dev is not None else data_dev
    geo = plan.geometry
    tf = plan.tag_function
    total = plan.provided_data_sectors
    spb = geo.sectors_per_block
    chunk_sectors = max(chunk_sectors // spb * spb, spb)
    zeros = bytes(chunk_sectors << SECTOR_SHIFT)
    zmv = memoryview(zeros)
    done = 0
    for ext in geo.extents(0, total):
        pos = 0
        while pos < ext.nr_sectors:
            n = min(chunk_sectors, ext.nr_sectors - pos)
            data_sector = ext.data_sector + pos
            if data_dev.can_write_zeroes:
                data_dev.write_zeroes(data_sector, n)
            else:
                data_dev.write(data_sector, zmv[:n << SECTOR_SHIFT])
            tags = tf.tags(zmv[:n << SECTOR_SHIFT], ext.logical_sector + pos)
            write_bytes(md, ext.tag_offset + (pos // spb) * tf.tag_size, tags)
            pos += n
            done += n
            if progress is not None:
                progress(done, total)


def existing_superblock(meta_dev: BlockDevice, start_sector: int = 0) -> Superblock | None:
    """The dm-integrity superblock already on ``meta_dev`` (magic present), if any, parsed
    without validation beyond the magic; None when there is none."""
    if meta_dev.nr_sectors < start_sector + SB_SECTORS:
        return None
    raw = bytes(meta_dev.read(start_sector, 1)[:Superblock.SIZE])
    if raw[:8] != b"integrt\0":
        return None
    try:
        return Superblock.from_bytes(raw, device=meta_dev.name)
    except FormatError:
        return Superblock(version=raw[8], log2_interleave_sectors=raw[9],
                          integrity_tag_size=int.from_bytes(raw[10:12], "little"),
                          journal_sections=int.from_bytes(raw[12:16], "little"),
                          provided_data_sectors=int.from_bytes(raw[16:24], "little"),
                          flags=SbFlags(0), log2_sectors_per_block=raw[28])

