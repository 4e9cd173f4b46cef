"""The crypt target's data path for every cipher, IV mode and integrity profile (numpy).

:class:`~dmkit.targets.crypt.target.CryptTarget` uses this unless the numpy-free path
(:mod:`dmkit.crypto.fastxts`: ``xts(aes)`` with plain/plain64/plain64be IVs, one key, no
integrity, the C accelerator built) can do the table; both give the same bytes.  Imported
when the first such key is set, so parsing a table or reading a plain XTS volume does not
load numpy.

Per request: the units' IV sectors (``cc = target sector + iv_offset``, shifted with
``iv_large_sectors``), their key instance (``cc & (keycount - 1)``), the IVs from the
generator (for reads with ``random`` IVs: the IVs stored in the integrity metadata), then
one batched call per key instance; AEAD requests also carry the tags in the metadata.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from ...block import SECTOR_SHIFT, Bio, BioIntegrityPayload
from ...block.bio import OP_READ, OP_WRITE
from ...crypto import AuthenticationFailed
from ...crypto.iv import (
    BenbiIv,
    EboivIv,
    EssivIv,
    NullIv,
    Plain64BeIv,
    Plain64Iv,
    PlainIv,
    RandomIv,
)
from ...errors import IntegrityError, TableError
from .spec import build_ciphers

__all__ = ["make_ciphers", "read", "write"]

log = logging.getLogger("dmkit.crypt")


# -- keys ---------------------------------------------------------------------------------------

def make_ciphers(t, key: bytes) -> tuple[list, object]:
    """The cipher instances for ``key`` and the IV generator (``crypt_set_key``)."""
    ciphers = build_ciphers(t.spec, key, aead=t.aead, tag_size=t.integrity_tag_size)
    part = len(key) // t.spec.keycount
    subkeys = [key[i * part:(i + 1) * part] for i in range(t.spec.keycount)]
    try:
        return ciphers, _iv_generator(t, ciphers, subkeys)
    except ValueError as e:
        for c in ciphers:
            c.wipe()
        raise TableError(f"crypt: Error creating IV: {e}") from None


def _iv_generator(t, ciphers, subkeys):
    mode, size = t.ivmode, t.iv_size
    if mode is None:
        return None
    if mode == "plain":
        return PlainIv(size)
    if mode == "plain64":
        return Plain64Iv(size)
    if mode == "plain64be":
        return Plain64BeIv(size)
    if mode == "null":
        return NullIv(size)
    if mode == "benbi":
        return BenbiIv(size, t._block_size)
    if mode == "random":
        return RandomIv(size, rng=lambda nbytes: (t.rng or os.urandom)(nbytes))
    if mode == "essiv":
        return EssivIv(size, t.spec.ivopts, subkeys, t._block_size)
    return EboivIv(size, ciphers[0], t.sector_size)


# -- requests -----------------------------------------------------------------------------------

def _scratch(t, nbytes: int) -> np.ndarray:
    buf = getattr(t._tls, "buf", None)
    if buf is None or len(buf) < nbytes:
        buf = t._tls.buf = np.empty(nbytes, np.uint8)
    return buf[:nbytes]


def _units(t, bio: Bio):
    n = bio.nr_sectors // t._step
    rel = np.arange(n, dtype=np.uint64) * np.uint64(t._step) + np.uint64(bio.sector)
    cc = rel + np.uint64(t.iv_offset)
    iv_sectors = cc >> np.uint64(t._shift) if t.iv_large_sectors else cc
    count = len(t._ciphers)
    key_index = (cc & np.uint64(count - 1)) if count > 1 else None
    return n, rel, iv_sectors, key_index


def _payload(t, n: int):
    if not t.on_disk_tag_size:
        return None, None
    meta = bytearray(n * t.on_disk_tag_size)
    payload = BioIntegrityPayload(memoryview(meta), t.on_disk_tag_size, t.sector_size)
    return payload, np.frombuffer(meta, np.uint8).reshape(n, t.on_disk_tag_size)


def _aads(t, rel: np.ndarray, ivs: np.ndarray) -> list[bytes]:
    a = np.empty((len(rel), 8 + t.iv_size), np.uint8)
    a[:, :8] = rel.astype("<u8").view(np.uint8).reshape(-1, 8)
    a[:, 8:] = ivs
    return [row.tobytes() for row in a]


def _ivs(t, iv_sectors, key_index, meta, *, reading: bool):
    if t._ivgen is None:
        return np.zeros((len(iv_sectors), t.iv_size), np.uint8)
    if reading and t.integrity_iv_size:
        k = t.integrity_tag_size
        return np.ascontiguousarray(meta[:, k:k + t.iv_size])
    return t._ivgen.generate(iv_sectors, key_index)


def _skcrypt(t, decrypt: bool, src, dst, ivs, key_index) -> None:
    unit = t.sector_size
    if key_index is None:
        c = t._ciphers[0]
        (c.decrypt if decrypt else c.encrypt)(src, dst, ivs, unit)
        return
    n = len(src) // unit
    s2, d2 = src.reshape(n, unit), dst.reshape(n, unit)
    for i, c in enumerate(t._ciphers):
        sel = np.nonzero(key_index == np.uint64(i))[0]
        if len(sel):
            part = np.ascontiguousarray(s2[sel])
            out = np.empty_like(part)
            (c.decrypt if decrypt else c.encrypt)(part, out, ivs[sel], unit)
            d2[sel] = out


def read(t, bio: Bio) -> None:
    n, rel, iv_sectors, key_index = _units(t, bio)
    ct = _scratch(t, bio.nr_sectors << SECTOR_SHIFT)
    payload, meta = _payload(t, n)
    t.dev.submit(Bio(OP_READ, t.offset + bio.sector, bio.nr_sectors, memoryview(ct),
                     bio.flags, payload))
    out = np.frombuffer(bio.data, np.uint8)
    ivs = _ivs(t, iv_sectors, key_index, meta, reading=True)
    if not t.aead:
        _skcrypt(t, True, ct, out, ivs, key_index)
        return
    tags = np.ascontiguousarray(meta[:, :t.integrity_tag_size])
    try:
        t._ciphers[0].open(ct, out, ivs, _aads(t, rel, ivs), tags, t.sector_size)
    except AuthenticationFailed as e:
        out[:] = 0  # never hand back unauthenticated data
        sector = int(rel[e.index])
        log.error("crypt: %s: INTEGRITY AEAD ERROR, sector %d", t.dev.name, sector)
        err = IntegrityError(f"crypt: {t.dev.name}: INTEGRITY AEAD ERROR, sector {sector}")
        err.sector = sector
        raise err from None


def write(t, bio: Bio) -> None:
    n, rel, iv_sectors, key_index = _units(t, bio)
    src = np.frombuffer(bio.data, np.uint8)
    ct = _scratch(t, bio.nr_sectors << SECTOR_SHIFT)
    payload, meta = _payload(t, n)
    ivs = _ivs(t, iv_sectors, key_index, meta, reading=False)
    if t.aead:
        tags = t._ciphers[0].seal(src, ct, ivs, _aads(t, rel, ivs), t.sector_size)
        meta[:, :t.integrity_tag_size] = tags
    else:
        _skcrypt(t, False, src, ct, ivs, key_index)
    if t.integrity_iv_size:
        k = t.integrity_tag_size
        meta[:, k:k + t.iv_size] = ivs
    t.dev.submit(Bio(OP_WRITE, t.offset + bio.sector, bio.nr_sectors, memoryview(ct),
                     bio.flags, payload))
