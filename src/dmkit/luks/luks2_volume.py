"""LUKS2 volumes: open a key slot, add, change, remove and kill key slots, tokens, format.

LUKS2 On-Disk Format Specification, sections 3.2-3.5; cryptsetup
``lib/luks2/luks2_keyslot_luks2.c`` (key slot store/open), ``luks2_json_format.c``
(header generation and key slot area allocation), ``luks2_digest_pbkdf2.c`` and
``lib/setup.c`` (``_crypt_format_luks2``, ``crypt_keyslot_change_by_passphrase``).

Every change is validated in full before the first byte is written.  Key material goes
to a free area first and the header follows, so a failure leaves the old header (and
every key slot it lists) intact; removing a key slot wipes its area, then writes the
header, as cryptsetup does.
"""

from __future__ import annotations

import os
import uuid as _uuid
from typing import Callable

from ..block import BlockDevice, read_bytes, write_bytes
from ..errors import FormatError, NotSupportedError
from ..keys import SecretBytes
from .errors import KeyslotError, NoKeyError, ParameterError
from .hashes import hash_size
from .kdf import PBKDF2, PBKDF2_MIN_ITERATIONS, Pbkdf, benchmark_argon2, \
    benchmark_pbkdf2, derive
from .keyslot import digest, digest_matches, material_bytes, seal, unseal, wipe_buffer
from .layout import LUKS2_DEFAULT_HDR_SIZE, LUKS2_HDR_BIN_LEN, LUKS2_MAX_KEYSLOTS_SIZE, \
    LUKS2_METADATA_SIZES, LUKS_STRIPES
from .luks2 import Luks2Header, check_unchanged, read_luks2_header, write_luks2_header
from .metadata import KNOWN_REQUIREMENTS, LUKS2_KEYSLOTS_MAX, LUKS2_TOKENS_MAX, Kdf, Keyslot, \
    Luks2Metadata, b64encode
from .storage import check_keyslot_cipher
from .volume import DataSegment, Unlocked, integrity_key_bytes, integrity_spec, \
    integrity_tag_bytes

__all__ = ["Luks2Volume", "format_luks2", "luks2_layout", "DEFAULT_KEYSLOT_CIPHER",
           "DEFAULT_KEYSLOT_KEY_BYTES"]

DEFAULT_KEYSLOT_CIPHER = "aes-xts-plain64"
DEFAULT_KEYSLOT_KEY_BYTES = 64
_SALT = 32
_DIGEST_TIME_MS = 125
_ALIGN = 1 << 20  # cryptsetup's DEFAULT_DISK_ALIGNMENT


def _as_bytes(secret) -> bytes:
    if isinstance(secret, SecretBytes):
        return secret.reveal()
    if isinstance(secret, str):
        return secret.encode("utf-8")
    return bytes(secret)


def _new_kdf(pbkdf: Pbkdf, key_bytes: int, rng) -> Kdf:
    """The ``kdf`` of a new key slot: fresh salt, cost forced or benchmarked."""
    salt = rng(_SALT)
    if pbkdf.type == PBKDF2:
        iterations = pbkdf.iterations or benchmark_pbkdf2(pbkdf.hash, key_bytes,
                                                          pbkdf.iter_time_ms)
        return Kdf(PBKDF2, salt, hash=pbkdf.hash, iterations=iterations)
    if pbkdf.iterations:
        t_cost, memory = pbkdf.iterations, pbkdf.memory_kb
    else:
        t_cost, memory = benchmark_argon2(pbkdf.type, pbkdf.memory_kb, pbkdf.parallel,
                                          key_bytes, pbkdf.iter_time_ms)
    return Kdf(pbkdf.type, salt, time=t_cost, memory=memory, cpus=pbkdf.parallel)


def _derive(kdf: Kdf, passphrase: bytes, length: int) -> bytearray:
    return derive(kdf.type, passphrase, kdf.salt, length, hash=kdf.hash,
                  iterations=kdf.iterations or 0, time=kdf.time or 0, memory=kdf.memory or 0,
                  cpus=kdf.cpus or 0)


def _area_length(key_bytes: int) -> int:
    """cryptsetup's key slot area size for a key (``get_area_size``): 4 KiB aligned."""
    return -(-key_bytes * LUKS_STRIPES // 4096) * 4096


def _find_area_gap(md_doc: dict, metadata_size: int, keyslots_size: int,
                   key_bytes: int) -> tuple[int, int] | None:
    """First fit after the metadata copies (``LUKS2_find_area_gap``)."""
    length = _area_length(key_bytes)
    used = sorted((int(k["area"]["offset"]), int(k["area"]["size"]))
                  for k in md_doc["keyslots"].values())
    offset = 2 * metadata_size
    for lo, size in used:
        if offset < lo and offset + length <= lo:
            break
        offset = max(offset, lo + size)
    if offset + length > 2 * metadata_size + keyslots_size:
        return None
    return offset, length


class Luks2Volume:
    """A LUKS2 header on ``device`` (the metadata device: the data device itself, or a
    detached header), and the operations cryptsetup offers on it."""

    version = 2

    def __init__(self, device: BlockDevice, header: Luks2Header, *,
                 rng: Callable[[int], bytes] = os.urandom):
        self.device = device
        self.header = header
        self.rng = rng

    @classmethod
    def load(cls, device: BlockDevice, *, rng: Callable[[int], bytes] = os.urandom
             ) -> Luks2Volume:
        return cls(device, read_luks2_header(device), rng=rng)

    # -- what the header says ----------------------------------------------------------------
    @property
    def metadata(self) -> Luks2Metadata:
        return self.header.metadata

    @property
    def uuid(self) -> str:
        return self.header.uuid

    @property
    def problems(self) -> tuple[str, ...]:
        return self.header.problems

    def active_keyslots(self) -> list[int]:
        """The numbers of the key slots in use."""
        return sorted(self.metadata.keyslots)

    def _require_usable(self, action: str) -> None:
        reqs = self.metadata.config.requirements
        unknown = [r for r in reqs if r not in KNOWN_REQUIREMENTS]
        if unknown:
            raise FormatError(f"luks2: config.requirements.mandatory: unknown requirement "
                              f"{unknown[0]!r}; cannot {action}")
        if reqs:
            raise NotSupportedError(f"luks2: the header requires {reqs[0]!r} (reencryption), "
                                    f"which dmkit does not support; cannot {action}")

    def data_segment(self) -> DataSegment:
        """The data segment the volume opens as (segment 0, or ``backup-final``)."""
        seg = self.metadata.default_segment
        if seg.type != "crypt":
            raise NotSupportedError(f"luks2: segment {seg.id} is of type {seg.type!r}")
        dig = self.metadata.digest_of_segment(seg.id)
        key_bytes = 0
        if dig is not None and dig.keyslots:
            key_bytes = self.metadata.keyslots[dig.keyslots[0]].key_size
        return DataSegment(
            cipher=seg.encryption, key_bytes=key_bytes, offset_sectors=seg.offset // 512,
            size_sectors=None if seg.size is None else seg.size // 512,
            iv_offset=seg.iv_tweak, sector_size=seg.sector_size,
            integrity=seg.integrity.type if seg.integrity else None,
            flags=self.metadata.config.flags, segment_id=seg.id,
            digest_id=dig.id if dig is not None else 0)

    def _unlocked(self, key: SecretBytes, keyslot: int | None) -> Unlocked:
        return Unlocked(volume_key=key, keyslot=keyslot, segment=self.data_segment(),
                        uuid=self.uuid, version=2, volume=self)

    # -- opening --------------------------------------------------------------------------------
    def verify_volume_key(self, volume_key) -> bool:
        """True if ``volume_key`` matches the default segment's digest (constant time)."""
        seg = self.metadata.default_segment
        d = self.metadata.digest_of_segment(seg.id)
        if d is None or d.type != "pbkdf2":
            raise NotSupportedError(f"luks2: segment {seg.id} has no pbkdf2 digest")
        return digest_matches(d.hash, _as_bytes(volume_key), d.salt, d.iterations, d.digest)

    def _keyslot_candidates(self, keyslot: int | None) -> list[Keyslot]:
        md = self.metadata
        seg_digest = md.digest_of_segment(md.default_segment.id)
        if keyslot is not None:
            if keyslot not in md.keyslots:
                raise KeyslotError(f"Keyslot {keyslot} is not active.")
            if seg_digest is None or keyslot not in seg_digest.keyslots:
                raise KeyslotError(f"Keyslot {keyslot} is not bound to the data segment.")
            return [md.keyslots[keyslot]]
        bound = [k for k in md.keyslots.values()
                 if k.type == "luks2" and seg_digest is not None and k.id in seg_digest.keyslots]
        order = {k: i for i, k in enumerate(md.to_dict()["keyslots"])}
        bound.sort(key=lambda k: order[str(k.id)])
        return [k for k in bound if k.priority == 2] + [k for k in bound if k.priority == 1]

    def _open_keyslot(self, ks: Keyslot, passphrase: bytes) -> SecretBytes | None:
        """The volume key if ``passphrase`` opens ``ks``, else None."""
        if ks.type != "luks2":
            raise NotSupportedError(f"luks2: keyslot {ks.id} has type {ks.type!r}")
        check_keyslot_cipher(ks.area_encryption, ks.area_key_size)
        size = material_bytes(ks.key_size, ks.af_stripes)
        material = self._read(ks.area_offset, size, f"keyslot {ks.id} area")
        derived = _derive(ks.kdf, passphrase, ks.area_key_size)
        try:
            candidate = unseal(material, derived, ks.area_encryption, ks.key_size, ks.af_hash,
                               ks.af_stripes)
        finally:
            wipe_buffer(derived)
        try:
            d = self.metadata.digest_of_keyslot(ks.id)
            if d is None or d.type != "pbkdf2":
                return None
            if not digest_matches(d.hash, bytes(candidate), d.salt, d.iterations, d.digest):
                return None
            return SecretBytes(candidate)
        finally:
            wipe_buffer(candidate)

    def _read(self, offset: int, length: int, what: str) -> bytes:
        if offset + length > self.device.size_bytes:
            raise FormatError(f"luks2: {what} is beyond the end of {self.device.name}")
        return bytes(read_bytes(self.device, offset, length))

    def unlock(self, passphrase, *, keyslot: int | None = None) -> Unlocked:
        """Open with a passphrase (bytes or str): try ``keyslot`` or every key slot bound
        to the data segment, preferred ones first.  Raises :class:`NoKeyError`."""
        self._require_usable("open the volume")
        pw = _as_bytes(passphrase)
        unsupported = None
        for ks in self._keyslot_candidates(keyslot):
            try:
                key = self._open_keyslot(ks, pw)
            except NotSupportedError as e:
                unsupported = e
                continue
            if key is not None:
                return self._unlocked(key, ks.id)
        if unsupported is not None:
            raise unsupported
        raise NoKeyError()

    def unlock_with_volume_key(self, volume_key) -> Unlocked:
        """Check a volume key (``--volume-key-file``) against the digest."""
        key = SecretBytes(_as_bytes(volume_key))
        if not self.verify_volume_key(key):
            key.wipe()
            raise NoKeyError("Volume key does not match the volume.")
        return self._unlocked(key, None)

    def unlock_token(self, keyring, *, token: int | None = None) -> Unlocked:
        """Open through a ``luks2-keyring`` token: its passphrase is the ``user`` key named
        by ``key_description`` in ``keyring`` (anything with ``material(type, desc)``)."""
        tokens = [t for t in self.metadata.tokens.values() if t.type == "luks2-keyring"
                  and (token is None or t.id == token)]
        if token is not None and not tokens:
            raise KeyslotError(f"Token {token} is not a luks2-keyring token.")
        for t in tokens:
            try:
                secret = keyring.material("user", t.key_description)
            except LookupError:
                continue
            try:
                for slot in t.keyslots:
                    try:
                        return self.unlock(secret, keyslot=slot)
                    except NoKeyError:
                        continue
            finally:
                if hasattr(secret, "wipe"):
                    secret.wipe()
        raise NoKeyError("No usable token is available.")

    # -- changing ------------------------------------------------------------------------------
    def _commit(self, doc: dict, *, before=(), after=()) -> None:
        """Validate ``doc``, check nobody changed the header, do ``before`` writes, write
        the header, then ``after`` wipes."""
        md = Luks2Metadata.from_dict(doc, json_area_size=self.header.json_size,
                                     device_size=self.device.size_bytes)
        check_unchanged(self.device, self.header)
        for offset, data in before:
            write_bytes(self.device, offset, data)
        if before:
            self.device.flush()
        self.header = write_luks2_header(self.device, self.header, md, rng=self.rng,
                                         check_seqid=False)
        for offset, data in after:
            write_bytes(self.device, offset, data)
        if after:
            self.device.flush()

    def _keyslot_cipher(self, key_bytes: int, cipher: str | None,
                        cipher_key_bytes: int | None) -> tuple[str, int]:
        if cipher is not None:
            size = cipher_key_bytes or key_bytes
            check_keyslot_cipher(cipher, size)
            return cipher, size
        seg = self.metadata.default_segment
        if seg.integrity is None and seg.encryption and "random" not in seg.encryption:
            try:
                check_keyslot_cipher(seg.encryption, key_bytes)
                return seg.encryption, key_bytes
            except NotSupportedError:
                pass
        return DEFAULT_KEYSLOT_CIPHER, DEFAULT_KEYSLOT_KEY_BYTES

    def _new_keyslot(self, doc: dict, key: bytes, passphrase: bytes, pbkdf: Pbkdf,
                     cipher: str | None, cipher_key_bytes: int | None,
                     ) -> tuple[dict, int, bytes]:
        """The JSON of a new key slot and its sealed material at a free area."""
        cfg = self.metadata.config
        gap = _find_area_gap(doc, cfg.metadata_size, cfg.keyslots_size, len(key))
        if gap is None:
            raise KeyslotError("No space for new keyslot.")
        offset, length = gap
        enc, enc_bytes = self._keyslot_cipher(len(key), cipher, cipher_key_bytes)
        kdf = _new_kdf(pbkdf, enc_bytes, self.rng)
        ks = {"type": "luks2", "key_size": len(key),
              "af": {"type": "luks1", "stripes": LUKS_STRIPES, "hash": pbkdf.hash},
              "area": {"type": "raw", "offset": str(offset), "size": str(length),
                       "encryption": enc, "key_size": enc_bytes},
              "kdf": kdf.to_json()}
        derived = _derive(kdf, passphrase, enc_bytes)
        try:
            material = seal(key, derived, enc, pbkdf.hash, LUKS_STRIPES, self.rng)
        finally:
            wipe_buffer(derived)
        return ks, offset, bytes(material)

    def add_keyslot(self, volume_key, passphrase, *, keyslot: int | None = None,
                    pbkdf: Pbkdf = Pbkdf(), keyslot_cipher: str | None = None,
                    keyslot_key_bytes: int | None = None) -> int:
        """Add a key slot for ``passphrase`` holding ``volume_key`` (checked against the
        digest first).  Returns the key slot number."""
        self._require_usable("add a key slot")
        key = _as_bytes(volume_key)
        if not self.verify_volume_key(key):
            raise NoKeyError("Volume key does not match the volume.")
        doc = self.metadata.to_dict()
        if keyslot is None:
            free = [i for i in range(LUKS2_KEYSLOTS_MAX) if str(i) not in doc["keyslots"]]
            if not free:
                raise KeyslotError("All key slots full.")
            keyslot = free[0]
        elif not 0 <= keyslot < LUKS2_KEYSLOTS_MAX:
            raise KeyslotError(f"Key slot {keyslot} is invalid.")
        elif str(keyslot) in doc["keyslots"]:
            raise KeyslotError(f"Key slot {keyslot} is full, please select another one.")
        ks, offset, material = self._new_keyslot(doc, key, _as_bytes(passphrase), pbkdf,
                                                 keyslot_cipher, keyslot_key_bytes)
        doc["keyslots"][str(keyslot)] = ks
        seg_digest = self.metadata.digest_of_segment(self.metadata.default_segment.id)
        if seg_digest is None:
            raise NotSupportedError("luks2: the data segment has no digest to bind a key to")
        doc["digests"][str(seg_digest.id)]["keyslots"].append(str(keyslot))
        self._commit(doc, before=[(offset, material)])
        return keyslot

    def add_key(self, passphrase, new_passphrase, *, keyslot: int | None = None,
                pbkdf: Pbkdf = Pbkdf(), **kw) -> int:
        """``luksAddKey``: open with ``passphrase``, add a slot for ``new_passphrase``."""
        with self.unlock(passphrase) as opened:
            return self.add_keyslot(opened.volume_key, new_passphrase, keyslot=keyslot,
                                    pbkdf=pbkdf, **kw)

    def change_key(self, passphrase, new_passphrase, *, keyslot: int | None = None,
                   pbkdf: Pbkdf = Pbkdf(), keyslot_cipher: str | None = None,
                   keyslot_key_bytes: int | None = None) -> int:
        """``luksChangeKey``: the key slot ``passphrase`` opens keeps its number and now
        opens with ``new_passphrase``.  The new material goes to a free area first; the
        old area is wiped once the header points to the new one."""
        self._require_usable("change a key slot")
        with self.unlock(passphrase, keyslot=keyslot) as opened:
            old = self.metadata.keyslots[opened.keyslot]
            doc = self.metadata.to_dict()
            ks, offset, material = self._new_keyslot(
                doc, opened.volume_key.reveal(), _as_bytes(new_passphrase), pbkdf,
                keyslot_cipher, keyslot_key_bytes)
        if "priority" in doc["keyslots"][str(old.id)]:
            ks["priority"] = doc["keyslots"][str(old.id)]["priority"]
        doc["keyslots"][str(old.id)] = ks
        wipe = (old.area_offset, self.rng(old.area_size))
        self._commit(doc, before=[(offset, material)], after=[wipe])
        return old.id

    def kill_slot(self, keyslot: int) -> None:
        """``luksKillSlot``: wipe the key slot's area and remove it from the header (also
        from digests and tokens).  Killing the last key slot is allowed, as in cryptsetup
        (the CLI asks first)."""
        self._require_usable("remove a key slot")
        if keyslot not in self.metadata.keyslots:
            raise KeyslotError(f"Keyslot {keyslot} is not active.")
        old = self.metadata.keyslots[keyslot]
        doc = self.metadata.to_dict()
        del doc["keyslots"][str(keyslot)]
        for section in ("digests", "tokens"):
            for obj in doc[section].values():
                if str(keyslot) in obj.get("keyslots", []):
                    obj["keyslots"].remove(str(keyslot))
        for k in [k for k, d in doc["digests"].items() if not d["keyslots"] and not d["segments"]]:
            del doc["digests"][k]
        # cryptsetup's order: wipe the area, then write the header without the slot
        self._commit(doc, before=[(old.area_offset, self.rng(old.area_size))])

    def remove_key(self, passphrase) -> int:
        """``luksRemoveKey``: kill the key slot ``passphrase`` opens; returns its number."""
        with self.unlock(passphrase) as opened:
            slot = opened.keyslot
        self.kill_slot(slot)
        return slot

    # -- tokens, labels, repair ---------------------------------------------------------------
    def add_keyring_token(self, key_description: str, keyslots=(), *,
                          token: int | None = None) -> int:
        """Add a ``luks2-keyring`` token naming a ``user`` key that holds a passphrase."""
        doc = self.metadata.to_dict()
        if token is None:
            free = [i for i in range(LUKS2_TOKENS_MAX) if str(i) not in doc["tokens"]]
            if not free:
                raise KeyslotError("All tokens full.")
            token = free[0]
        elif str(token) in doc["tokens"] or not 0 <= token < LUKS2_TOKENS_MAX:
            raise KeyslotError(f"Token {token} is in use or invalid.")
        if not key_description:
            raise ParameterError("luks2: a keyring token needs a key description")
        doc["tokens"][str(token)] = {"type": "luks2-keyring",
                                     "keyslots": [str(k) for k in keyslots],
                                     "key_description": key_description}
        self._commit(doc)
        return token

    def remove_token(self, token: int) -> None:
        doc = self.metadata.to_dict()
        if str(token) not in doc["tokens"]:
            raise KeyslotError(f"Token {token} is not in use.")
        del doc["tokens"][str(token)]
        self._commit(doc)

    def set_label(self, label: str | None = None, subsystem: str | None = None) -> None:
        changes = {}
        if label is not None:
            changes["label"] = label
        if subsystem is not None:
            changes["subsystem"] = subsystem
        check_unchanged(self.device, self.header)
        self.header = write_luks2_header(self.device, self.header, self.metadata, rng=self.rng,
                                         check_seqid=False, **changes)

    def repair(self) -> None:
        """Rewrite both copies (``seqid + 1``), mending the one that was bad or obsolete."""
        self.header = write_luks2_header(self.device, self.header, self.metadata, rng=self.rng)


# -- format ------------------------------------------------------------------------------------

def _cipher_check(cipher: str, key_bytes: int, integrity: str | None) -> None:
    name, sep, rest = cipher.partition("-")
    if not name or not sep or not rest or cipher.startswith("capi:") or " " in cipher:
        raise ParameterError(f"luks2: cipher {cipher!r} is not of the form cipher-mode[-iv]")
    mode = rest.split("-")[0]
    cipher_key = key_bytes - (integrity_key_bytes(integrity) if integrity else 0)
    if cipher_key <= 0:
        raise ParameterError("Volume key is too small for encryption with integrity extensions.")
    if mode == "xts" and cipher_key not in (32, 64):
        raise ParameterError(f"luks2: {cipher} needs a 256- or 512-bit key, not {cipher_key * 8}")
    if integrity in ("aead",) and mode not in ("gcm", "ccm") and not name.startswith("aegis"):
        raise ParameterError(f"luks2: integrity aead needs an AEAD cipher mode, not {cipher}")
    if integrity == "poly1305" and not name.endswith("chacha20"):
        raise ParameterError(f"luks2: integrity poly1305 needs chacha20, not {cipher}")
    if "random" in rest and not integrity:
        raise ParameterError(f"luks2: {cipher} (random IV) needs --integrity")


def luks2_layout(device_size: int, *, metadata_size: int = 16384,
                 keyslots_size: int | None = None, data_offset: int | None = None,
                 align: int = _ALIGN, detached: bool = False) -> tuple[int, int]:
    """``(keyslots_size, data_offset)`` in bytes, as :func:`format_luks2` chooses them for
    a header device of ``device_size`` bytes (cryptsetup's ``LUKS2_generate_hdr`` with
    its defaults: a 16 MiB header area shrunk to the device, the data aligned to 1 MiB)."""
    min_offset = 2 * metadata_size
    if data_offset is not None and (data_offset % 512 or (not detached and
                                                          data_offset < min_offset)):
        raise ParameterError("Requested data offset is too small." if data_offset % 512 == 0
                             else "luks2: data offset is not a multiple of 512")
    if keyslots_size is None:
        if data_offset and not detached:
            keyslots_size = data_offset - min_offset
        else:
            keyslots_size = LUKS2_DEFAULT_HDR_SIZE - min_offset
            if device_size < LUKS2_DEFAULT_HDR_SIZE:
                keyslots_size = max(0, device_size - min_offset)
    keyslots_size = min(keyslots_size - keyslots_size % 4096, LUKS2_MAX_KEYSLOTS_SIZE)
    if data_offset is not None and not detached and keyslots_size + min_offset > data_offset:
        keyslots_size = data_offset - min_offset
    if data_offset is None:
        data_offset = 0 if detached else -(-(min_offset + keyslots_size) // align) * align
    return keyslots_size, data_offset


def format_luks2(device: BlockDevice, passphrase, *, data_device: BlockDevice | None = None,
                 cipher: str = "aes-xts-plain64", key_bytes: int | None = None,
                 integrity: str | None = None, sector_size: int = 512,
                 pbkdf: Pbkdf = Pbkdf(), metadata_size: int = 16384,
                 keyslots_size: int | None = None, data_offset: int | None = None,
                 align: int = _ALIGN, uuid: str | None = None, label: str = "",
                 subsystem: str = "", volume_key=None, keyslot: int | None = None,
                 keyslot_cipher: str | None = None, keyslot_key_bytes: int | None = None,
                 rng: Callable[[int], bytes] = os.urandom) -> Unlocked:
    """``cryptsetup luksFormat --type luks2``: write a new LUKS2 header and key slot.

    ``device`` takes the header; with ``data_device`` the header is detached (the data
    starts at ``data_offset``, default 0, of ``data_device``).  ``key_bytes`` is the cipher
    key (default 32, 64 for XTS); an ``integrity`` MAC key is added to it, as cryptsetup
    does.  Sizes and offsets are bytes.  Metadata only: creating the dm-integrity
    superblock and wiping the data belong to the data path.  Returns the opened volume.
    """
    detached = data_device is not None
    stored_integrity = integrity_spec(integrity) if integrity else None
    if stored_integrity == "none" and integrity_tag_bytes("none", cipher) == 0:
        stored_integrity = None
    if key_bytes is None:
        key_bytes = 64 if cipher.partition("-")[2].startswith("xts-") else 32
    if stored_integrity:
        key_bytes += integrity_key_bytes(stored_integrity)
    if volume_key is not None:
        vk = _as_bytes(volume_key)
        if len(vk) != key_bytes:
            raise ParameterError(f"luks2: volume key is {len(vk)} bytes, expected {key_bytes}")
    else:
        vk = rng(key_bytes)
    _cipher_check(cipher, key_bytes, stored_integrity)
    if sector_size not in (512, 1024, 2048, 4096):
        raise ParameterError("Unsupported encryption sector size.")
    if metadata_size not in LUKS2_METADATA_SIZES:
        raise ParameterError(f"luks2: metadata size {metadata_size} is not one of "
                             f"{sorted(LUKS2_METADATA_SIZES)}")
    min_offset = 2 * metadata_size
    keyslots_size, data_offset = luks2_layout(device.size_bytes, metadata_size=metadata_size,
                                              keyslots_size=keyslots_size,
                                              data_offset=data_offset, align=align,
                                              detached=detached)
    if device.size_bytes < min_offset + keyslots_size:
        raise ParameterError(f"Device {device.name} is too small.")
    data_dev = data_device if detached else device
    if not stored_integrity and sector_size > 512 and data_dev.size_bytes > data_offset and \
            (data_dev.size_bytes - data_offset) % sector_size:
        raise ParameterError("Device size is not aligned to requested sector size.")
    if uuid is not None:
        try:
            uuid = str(_uuid.UUID(uuid))
        except ValueError:
            raise ParameterError("Wrong LUKS UUID format provided.") from None
    else:
        uuid = str(_uuid.UUID(bytes=rng(16), version=4))

    # the volume key digest (cryptsetup: minimum iterations when the pbkdf is forced)
    if pbkdf.iterations:
        d_iter = PBKDF2_MIN_ITERATIONS
    else:
        d_iter = max(PBKDF2_MIN_ITERATIONS,
                     benchmark_pbkdf2(pbkdf.hash, key_bytes, _DIGEST_TIME_MS))
    d_salt = rng(_SALT)
    d_len = hash_size(pbkdf.hash)
    segment = {"type": "crypt", "offset": str(data_offset), "size": "dynamic",
               "iv_tweak": "0", "encryption": cipher, "sector_size": sector_size}
    if stored_integrity:
        segment["integrity"] = {"type": stored_integrity, "journal_encryption": "none",
                                "journal_integrity": "none"}
    doc = {"keyslots": {}, "tokens": {}, "segments": {"0": segment},
           "digests": {"0": {"type": "pbkdf2", "keyslots": [], "segments": ["0"],
                             "hash": pbkdf.hash, "iterations": d_iter,
                             "salt": b64encode(d_salt),
                             "digest": b64encode(digest(pbkdf.hash, vk, d_salt, d_iter,
                                                        d_len))}},
           "config": {"json_size": str(metadata_size - LUKS2_HDR_BIN_LEN),
                      "keyslots_size": str(keyslots_size)}}
    md = Luks2Metadata.from_dict(doc, json_area_size=metadata_size - LUKS2_HDR_BIN_LEN,
                                 device_size=device.size_bytes)
    header = Luks2Header(hdr_size=metadata_size, seqid=1, uuid=uuid, metadata=md, label=label,
                         subsystem=subsystem, salt1=rng(64), salt2=rng(64))
    header.binary(False).to_bytes()  # label/subsystem length checks before any write
    if keyslot is not None and not 0 <= keyslot < LUKS2_KEYSLOTS_MAX:
        raise KeyslotError(f"Key slot {keyslot} is invalid.")
    if _find_area_gap(doc, metadata_size, keyslots_size, key_bytes) is None:
        raise KeyslotError("No space for new keyslot.")
    # wipe the header area and fill the key slots area with random data, as cryptsetup
    zero_len = 4096 if detached or data_offset == 0 else data_offset
    zero_len = min(zero_len, device.size_bytes)
    chunk = 1 << 20
    for off in range(0, zero_len, chunk):
        write_bytes(device, off, bytes(min(chunk, zero_len - off)))
    for off in range(min_offset, min_offset + keyslots_size, chunk):
        write_bytes(device, off, rng(min(chunk, min_offset + keyslots_size - off)))
    device.flush()
    header = write_luks2_header(device, header, md, rng=rng, check_seqid=False)
    vol = Luks2Volume(device, header, rng=rng)
    slot = vol.add_keyslot(vk, passphrase, keyslot=keyslot, pbkdf=pbkdf,
                           keyslot_cipher=keyslot_cipher, keyslot_key_bytes=keyslot_key_bytes)
    return vol._unlocked(SecretBytes(vk), slot)
