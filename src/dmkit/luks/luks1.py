"""LUKS1 volumes: read, open, add/change/remove/kill key slots, format.

LUKS1 On-Disk Format Specification 1.2.3; cryptsetup ``lib/luks1/keymanage.c``
(``LUKS_read_phdr``, ``LUKS_check_keyslots``, ``LUKS_generate_phdr``, ``LUKS_set_key``,
``LUKS_open_key``, ``LUKS_del_key``).  Key slots use PBKDF2 with the header's hash and
the volume's own cipher for their material.

LUKS1 has a single header copy, so writes are ordered to keep it valid: key material
goes to the (disabled) slot's area before the header enables the slot; a killed slot's
area is wiped before the header disables it, as cryptsetup does.
"""

from __future__ import annotations

import os
import uuid as _uuid
from dataclasses import replace
from typing import Callable

from ..block import BlockDevice, read_bytes, write_bytes
from ..errors import FormatError
from ..keys import SecretBytes
from .errors import KeyslotError, NoKeyError, ParameterError
from .hashes import hash_size, is_supported
from .kdf import PBKDF2_MIN_ITERATIONS, Pbkdf, benchmark_pbkdf2, pbkdf2
from .keyslot import digest, digest_matches, material_bytes, seal, unseal, wipe_buffer
from .layout import (LUKS1_PHDR_SIZE, LUKS_ALIGN_KEYSLOTS, LUKS_DIGESTSIZE, LUKS_KEY_DISABLED,
                     LUKS_KEY_ENABLED, LUKS_NUMKEYS, LUKS_SALTSIZE, LUKS_STRIPES, Luks1Header,
                     Luks1Keyblock)
from .storage import check_keyslot_cipher
from .volume import DataSegment, Unlocked

__all__ = ["read_luks1_header", "Luks1Volume", "format_luks1", "luks1_device_sectors"]

_MAX_KEY_BYTES = 512
_ALIGN = 1 << 20
_MKD_TIME_MS = 125


def _as_bytes(secret) -> bytes:
    if isinstance(secret, SecretBytes):
        return secret.reveal()
    if isinstance(secret, str):
        return secret.encode("utf-8")
    return bytes(secret)


def luks1_device_sectors(hdr: Luks1Header) -> int:
    """Sectors the header and all key slot areas take (``LUKS_device_sectors``)."""
    last = max(hdr.keyblock, key=lambda kb: kb.keyMaterialOffset)
    return last.keyMaterialOffset + material_bytes(hdr.keyBytes, LUKS_STRIPES) // 512


def _validate(hdr: Luks1Header, device_size: int | None) -> None:
    """``_check_and_convert_hdr`` + ``LUKS_check_keyslots`` + ``LUKS_check_device_size``."""
    if not is_supported(hdr.hashSpec) or hash_size(hdr.hashSpec) < LUKS_DIGESTSIZE:
        raise FormatError(f"luks1: hashSpec {hdr.hashSpec!r} is not supported")
    if not 1 <= hdr.keyBytes <= _MAX_KEY_BYTES:
        raise FormatError(f"luks1: keyBytes {hdr.keyBytes} is out of range 1..{_MAX_KEY_BYTES}")
    if hdr.mkDigestIterations < 1:
        raise FormatError("luks1: mkDigestIterations is zero")
    if not hdr.cipherName or not hdr.cipherMode:
        raise FormatError("luks1: cipherName or cipherMode is empty")
    secs = material_bytes(hdr.keyBytes, LUKS_STRIPES) // 512
    for i, kb in enumerate(hdr.keyblock):
        where = f"luks1: keyblock[{i}]"
        if kb.active not in (LUKS_KEY_ENABLED, LUKS_KEY_DISABLED):
            raise FormatError(f"{where}.active: {kb.active:#x} is neither enabled nor disabled")
        if kb.stripes != LUKS_STRIPES:
            raise FormatError(f"{where}.stripes: {kb.stripes} is not {LUKS_STRIPES}")
        if kb.keyMaterialOffset * 512 < 1024:
            raise FormatError(f"{where}.keyMaterialOffset: {kb.keyMaterialOffset} is inside "
                              "the header")
        if kb.enabled and kb.passwordIterations < 1:
            raise FormatError(f"{where}.passwordIterations: is zero")
        if hdr.payloadOffset and hdr.payloadOffset < kb.keyMaterialOffset + secs:
            raise FormatError(f"{where}.keyMaterialOffset: key material "
                              f"[{kb.keyMaterialOffset}, {kb.keyMaterialOffset + secs}) reaches "
                              f"beyond the payload offset {hdr.payloadOffset}")
    order = sorted(range(LUKS_NUMKEYS), key=lambda i: hdr.keyblock[i].keyMaterialOffset)
    for a, b in zip(order, order[1:]):
        if hdr.keyblock[b].keyMaterialOffset < hdr.keyblock[a].keyMaterialOffset + secs:
            raise FormatError(f"luks1: keyblock[{b}].keyMaterialOffset: overlaps the key "
                              f"material of slot {a}")
    if device_size is not None and luks1_device_sectors(hdr) * 512 > device_size:
        raise FormatError(f"luks1: header and key slots ({luks1_device_sectors(hdr) * 512} "
                          f"bytes) do not fit the device ({device_size} bytes)")


def read_luks1_header(source: bytes | bytearray | memoryview | BlockDevice) -> Luks1Header:
    """Read and validate a LUKS1 header from bytes or a BlockDevice."""
    if isinstance(source, BlockDevice):
        if source.size_bytes < LUKS1_PHDR_SIZE:
            raise FormatError(f"luks1: {source.name} is too small for a LUKS header")
        raw, size = bytes(read_bytes(source, 0, 1024 if source.size_bytes >= 1024
                                     else LUKS1_PHDR_SIZE)), source.size_bytes
    else:
        raw, size = bytes(source), len(source)
    hdr = Luks1Header.from_bytes(raw)
    _validate(hdr, size)
    return hdr


class Luks1Volume:
    """A LUKS1 header on ``device`` (the data device, or a detached header)."""

    version = 1

    def __init__(self, device: BlockDevice, header: Luks1Header, *,
                 rng: Callable[[int], bytes] = os.urandom):
        self.device = device
        self.header = header
        self.rng = rng
        self.problems: tuple[str, ...] = ()

    @classmethod
    def load(cls, device: BlockDevice, *, rng: Callable[[int], bytes] = os.urandom
             ) -> Luks1Volume:
        return cls(device, read_luks1_header(device), rng=rng)

    @property
    def uuid(self) -> str:
        return self.header.uuid

    def active_keyslots(self) -> list[int]:
        """The numbers of the enabled key slots."""
        return [i for i, kb in enumerate(self.header.keyblock) if kb.enabled]

    @property
    def cipher(self) -> str:
        return f"{self.header.cipherName}-{self.header.cipherMode}"

    def data_segment(self) -> DataSegment:
        h = self.header
        return DataSegment(cipher=self.cipher, key_bytes=h.keyBytes,
                           offset_sectors=h.payloadOffset)

    def _unlocked(self, key: SecretBytes, slot: int | None) -> Unlocked:
        return Unlocked(volume_key=key, keyslot=slot, segment=self.data_segment(),
                        uuid=self.uuid, version=1, volume=self)

    # -- opening ---------------------------------------------------------------------------------
    def verify_volume_key(self, volume_key) -> bool:
        h = self.header
        return digest_matches(h.hashSpec, _as_bytes(volume_key), h.mkDigestSalt,
                              h.mkDigestIterations, h.mkDigest)

    def _open_slot(self, i: int, passphrase: bytes) -> SecretBytes | None:
        h, kb = self.header, self.header.keyblock[i]
        check_keyslot_cipher(self.cipher, h.keyBytes)
        size = material_bytes(h.keyBytes, kb.stripes)
        material = bytes(read_bytes(self.device, kb.keyMaterialOffset * 512, size))
        derived = pbkdf2(h.hashSpec, passphrase, kb.passwordSalt, kb.passwordIterations,
                         h.keyBytes)
        try:
            candidate = unseal(material, derived, self.cipher, h.keyBytes, h.hashSpec,
                               kb.stripes)
        finally:
            wipe_buffer(derived)
        try:
            if self.verify_volume_key(bytes(candidate)):
                return SecretBytes(candidate)
            return None
        finally:
            wipe_buffer(candidate)

    def unlock(self, passphrase, *, keyslot: int | None = None) -> Unlocked:
        """Open with a passphrase; raises :class:`NoKeyError` if no enabled slot opens."""
        pw = _as_bytes(passphrase)
        if keyslot is not None:
            if not 0 <= keyslot < LUKS_NUMKEYS or not self.header.keyblock[keyslot].enabled:
                raise KeyslotError(f"Keyslot {keyslot} is not active.")
            slots = [keyslot]
        else:
            slots = [i for i, kb in enumerate(self.header.keyblock) if kb.enabled]
        for i in slots:
            key = self._open_slot(i, pw)
            if key is not None:
                return self._unlocked(key, i)
        raise NoKeyError()

    def unlock_with_volume_key(self, volume_key) -> Unlocked:
        key = SecretBytes(_as_bytes(volume_key))
        if not self.verify_volume_key(key):
            key.wipe()
            raise NoKeyError("Volume key does not match the volume.")
        return self._unlocked(key, None)

    # -- changing --------------------------------------------------------------------------------
    def _write_header(self, hdr: Luks1Header) -> None:
        _validate(hdr, self.device.size_bytes)
        write_bytes(self.device, 0, hdr.to_bytes())
        self.device.flush()
        self.header = hdr

    def _check_unchanged(self) -> None:
        try:
            now = read_luks1_header(self.device)
        except FormatError:
            now = None
        if now != self.header:
            raise FormatError(f"luks1: header on {self.device.name} changed since it was read; "
                              "nothing written")

    def add_keyslot(self, volume_key, passphrase, *, keyslot: int | None = None,
                    pbkdf: Pbkdf = Pbkdf(type="pbkdf2")) -> int:
        """Enable a disabled slot for ``passphrase``; ``volume_key`` is checked first.

        LUKS1 key slots are always PBKDF2 with the header's hash (``pbkdf.hash`` is not
        used); ``pbkdf.iterations`` forces the iteration count.
        """
        h = self.header
        key = _as_bytes(volume_key)
        if len(key) != h.keyBytes or not self.verify_volume_key(key):
            raise NoKeyError("Volume key does not match the volume.")
        if pbkdf.type != "pbkdf2":
            raise ParameterError("luks1: key slots use pbkdf2 only")
        if keyslot is None:
            free = [i for i, kb in enumerate(h.keyblock) if not kb.enabled]
            if not free:
                raise KeyslotError("All key slots full.")
            keyslot = free[0]
        elif not 0 <= keyslot < LUKS_NUMKEYS:
            raise KeyslotError(f"Key slot {keyslot} is invalid.")
        elif h.keyblock[keyslot].enabled:
            raise KeyslotError(f"Key slot {keyslot} is full, please select another one.")
        kb = h.keyblock[keyslot]
        check_keyslot_cipher(self.cipher, h.keyBytes)
        iterations = pbkdf.iterations or benchmark_pbkdf2(h.hashSpec, h.keyBytes,
                                                          pbkdf.iter_time_ms)
        salt = self.rng(LUKS_SALTSIZE)
        derived = pbkdf2(h.hashSpec, _as_bytes(passphrase), salt, iterations, h.keyBytes)
        try:
            material = seal(key, derived, self.cipher, h.hashSpec, kb.stripes, self.rng)
        finally:
            wipe_buffer(derived)
        blocks = list(h.keyblock)
        blocks[keyslot] = replace(kb, active=LUKS_KEY_ENABLED,
                                  passwordIterations=max(iterations, PBKDF2_MIN_ITERATIONS),
                                  passwordSalt=salt)
        new = replace(h, keyblock=tuple(blocks))
        _validate(new, self.device.size_bytes)
        self._check_unchanged()
        write_bytes(self.device, kb.keyMaterialOffset * 512, material)
        self.device.flush()
        self._write_header(new)
        return keyslot

    def add_key(self, passphrase, new_passphrase, *, keyslot: int | None = None,
                pbkdf: Pbkdf = Pbkdf(type="pbkdf2")) -> int:
        with self.unlock(passphrase) as opened:
            return self.add_keyslot(opened.volume_key, new_passphrase, keyslot=keyslot,
                                    pbkdf=pbkdf)

    def kill_slot(self, keyslot: int) -> None:
        """Wipe the slot's key material, then disable it in the header."""
        h = self.header
        if not 0 <= keyslot < LUKS_NUMKEYS or not h.keyblock[keyslot].enabled:
            raise KeyslotError(f"Keyslot {keyslot} is not active.")
        kb = h.keyblock[keyslot]
        blocks = list(h.keyblock)
        blocks[keyslot] = replace(kb, active=LUKS_KEY_DISABLED, passwordIterations=0,
                                  passwordSalt=bytes(LUKS_SALTSIZE))
        new = replace(h, keyblock=tuple(blocks))
        _validate(new, self.device.size_bytes)
        self._check_unchanged()
        size = material_bytes(h.keyBytes, kb.stripes)
        write_bytes(self.device, kb.keyMaterialOffset * 512, self.rng(size))
        self.device.flush()
        self._write_header(new)

    def remove_key(self, passphrase) -> int:
        with self.unlock(passphrase) as opened:
            slot = opened.keyslot
        self.kill_slot(slot)
        return slot

    def change_key(self, passphrase, new_passphrase, *, keyslot: int | None = None,
                   pbkdf: Pbkdf = Pbkdf(type="pbkdf2")) -> int:
        """``luksChangeKey`` as cryptsetup does it for LUKS1: the new passphrase goes to a
        free slot, then the old slot is killed.  Returns the new slot number."""
        with self.unlock(passphrase, keyslot=keyslot) as opened:
            free = [i for i, kb in enumerate(self.header.keyblock) if not kb.enabled]
            if not free:
                raise KeyslotError("No free key slot for the new passphrase; remove one first.")
            new = self.add_keyslot(opened.volume_key, new_passphrase, keyslot=free[0],
                                   pbkdf=pbkdf)
            self.kill_slot(opened.keyslot)
        return new

    def repair(self) -> None:
        self._write_header(self.header)


def format_luks1(device: BlockDevice, passphrase, *, data_device: BlockDevice | None = None,
                 cipher: str = "aes-xts-plain64", key_bytes: int | None = None,
                 hash: str = "sha256", pbkdf: Pbkdf = Pbkdf(type="pbkdf2"),
                 data_offset: int | None = None, align: int = _ALIGN, uuid: str | None = None,
                 volume_key=None, keyslot: int | None = None,
                 rng: Callable[[int], bytes] = os.urandom) -> Unlocked:
    """``cryptsetup luksFormat --type luks1``.  ``data_offset`` and ``align`` are bytes;
    with ``data_device`` the header is detached and the payload offset defaults to 0."""
    name, sep, mode = cipher.partition("-")
    if not name or not sep or not mode:
        raise ParameterError(f"luks1: cipher {cipher!r} is not of the form cipher-mode")
    if key_bytes is None:
        key_bytes = 64 if mode.startswith("xts-") else 32
    if pbkdf.type != "pbkdf2":
        raise ParameterError("luks1: key slots use pbkdf2 only")
    hash = hash.lower()
    if not is_supported(hash) or hash_size(hash) < LUKS_DIGESTSIZE:
        raise ParameterError(f"Requested LUKS hash {hash} is not supported.")
    check_keyslot_cipher(cipher, key_bytes)
    if volume_key is not None:
        vk = _as_bytes(volume_key)
        if len(vk) != key_bytes:
            raise ParameterError(f"luks1: volume key is {len(vk)} bytes, expected {key_bytes}")
    else:
        vk = rng(key_bytes)
    if uuid is not None:
        try:
            uuid = str(_uuid.UUID(uuid))
        except ValueError:
            raise ParameterError("Wrong LUKS UUID format provided.") from None
    else:
        uuid = str(_uuid.UUID(bytes=rng(16), version=4))
    secs = material_bytes(key_bytes, LUKS_STRIPES) // 512
    align_secs = LUKS_ALIGN_KEYSLOTS // 512
    blocks, at = [], align_secs
    for _ in range(LUKS_NUMKEYS):
        blocks.append(Luks1Keyblock(keyMaterialOffset=at))
        at = -(-(at + secs) // align_secs) * align_secs
    if data_offset is not None:
        if data_offset % 512:
            raise ParameterError("luks1: data offset is not a multiple of 512")
        payload = data_offset // 512
    elif data_device is not None:
        payload = 0
    else:
        payload = -(-at // (align // 512)) * (align // 512)
    if payload and payload < at:
        raise ParameterError("Data offset for LUKS header must be either 0 or higher than "
                             "header size.")
    d_iter = PBKDF2_MIN_ITERATIONS if pbkdf.iterations else max(
        PBKDF2_MIN_ITERATIONS, benchmark_pbkdf2(hash, key_bytes, _MKD_TIME_MS))
    salt = rng(LUKS_SALTSIZE)
    hdr = Luks1Header(version=1, cipherName=name, cipherMode=mode, hashSpec=hash,
                      payloadOffset=payload, keyBytes=key_bytes,
                      mkDigest=digest(hash, vk, salt, d_iter, LUKS_DIGESTSIZE),
                      mkDigestSalt=salt, mkDigestIterations=d_iter, uuid=uuid,
                      keyblock=tuple(blocks))
    hdr.to_bytes()
    _validate(hdr, device.size_bytes)
    if keyslot is not None and not 0 <= keyslot < LUKS_NUMKEYS:
        raise KeyslotError(f"Key slot {keyslot} is invalid.")
    # wipe: zeros up to the payload (4 KiB when detached), random key slot areas
    zero_len = payload * 512 if payload else 4096
    zero_len = min(zero_len, device.size_bytes)
    for off in range(0, zero_len, 1 << 20):
        write_bytes(device, off, bytes(min(1 << 20, zero_len - off)))
    for kb in blocks:
        write_bytes(device, kb.keyMaterialOffset * 512, rng(secs * 512))
    device.flush()
    write_bytes(device, 0, hdr.to_bytes())
    device.flush()
    vol = Luks1Volume(device, hdr, rng=rng)
    slot = vol.add_keyslot(vk, passphrase, keyslot=keyslot, pbkdf=pbkdf)
    return vol._unlocked(SecretBytes(vk), slot)

