"""dm-integrity tag functions: the kernel's ``internal_hash`` algorithms, batched.

Upstream: ``integrity_sector_checksum`` in ``drivers/md/dm-integrity.c`` (Linux 6.1).  The
tag of the block that starts at logical sector ``s`` (512-byte units, counted from the
start of the provided device, even for 4096-byte blocks) is::

    digest = H( [salt (16 bytes) if SB_FLAG_FIXED_HMAC]  ||  le64(s)  ||  block )
    tag    = digest[:tag_size]  zero-padded to tag_size when the digest is shorter

``H`` is any kernel ``shash``; the salt is mixed in for *every* algorithm when the
superblock has fix_hmac, crc32c included.  The kernel's checksums are not the textbook
ones in every case, and this module matches the kernel:

- ``crc32c`` (``crypto/crc32c_generic.c``): seed ~0, final inversion, stored little-endian
  (the usual CRC-32C); an optional 4-byte key replaces the seed;
- ``crc32`` (``crypto/crc32_generic.c``): seed 0 and *no* inversion (raw ``crc32_le``),
  stored little-endian; not zlib's CRC-32.  An optional 4-byte key is the seed;
- ``xxhash64``: seed 0 (or an 8-byte little-endian key), the 64-bit value stored
  little-endian (xxhash's canonical ``digest()`` is big-endian);
- hashes and ``hmac(hash)`` are the standard ones; ``blake2b-N`` takes an optional key.

Tags are computed for many blocks per call.  For the hashes and ``hmac(h)``, when the
optional C accelerator :mod:`._tagsevp` is built, a request's tags are one call into it
(libcrypto, the GIL released); it is checked against the loop below when a tag function
is made.  Otherwise, and for the other algorithms, per block there is one short sequence
of C calls (copy a prepared state, two updates, digest).  For ``hmac(h)`` the states are
hashlib's, of RFC 2104's inner pad (and salt) and outer pad, rather than ``hmac``
objects (whose ``copy`` is Python code).  For the CRCs, one call per block: the state
after salt and sector is computed for all blocks at once from tables (a CRC is affine in
its input).  Stored tags are compared in one constant-time comparison per request for
cryptographic algorithms.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Callable

import crc32c as _crc32c
import numpy as np
import xxhash as _xxhash

from .layout import DISCARD_FILLER, MAX_TAG_SIZE, SALT_SIZE

try:  # optional C accelerator (setup.py); without it the hashlib loop gives the same bytes
    from . import _tagsevp
except ImportError:  # pragma: no cover - depends on the build
    _tagsevp = None

__all__ = [
    "TagAlgorithm",
    "TagFunction",
    "algorithm",
    "algorithm_names",
    "kernel_name",
]

_LE64 = struct.Struct("<Q")
_M32 = 0xFFFFFFFF
#: below this many blocks a request's tags come from the hashlib loop: the C call's set-up
#: (fetching the digest, two pad states) costs about as much as hashing a block
_EVP_MIN_BLOCKS = 2


@dataclass(frozen=True)
class TagAlgorithm:
    """One kernel ``shash`` usable as ``internal_hash``.

    ``key``: "required" (hmac, cmac), "optional" (crc32c, crc32, xxhash64, blake2b) or
    "none".  ``cryptographic``: tags are compared in constant time.
    """

    name: str
    digest_size: int
    key: str
    cryptographic: bool
    #: (key, salt) -> a fresh state primed with the salt; the state has update/copy
    _prime: Callable
    #: state -> digest bytes
    _finish: Callable
    key_sizes: tuple[int, ...] | None = None
    #: for ``hmac(h)``: hashlib's name of ``h`` (the tag loop then runs on two hashlib
    #: states, RFC 2104's inner and outer pads, instead of ``hmac`` objects)
    hmac_hash: str | None = None
    #: for ``h`` and ``hmac(h)``: libcrypto's name of ``h``, for the C accelerator
    evp_name: str | None = None

    def check_key(self, key: bytes | None) -> None:
        if key is None or len(key) == 0:
            if self.key == "required":
                raise ValueError(f"{self.name} needs a key")
            return
        if self.key == "none":
            raise ValueError(f"{self.name} takes no key")
        if self.key_sizes is not None and len(key) not in self.key_sizes:
            sizes = "/".join(map(str, self.key_sizes))
            raise ValueError(f"{self.name}: key of {len(key)} bytes, expected {sizes}")


# -- the checksum states ------------------------------------------------------------------

class _Crc32cState:
    """CRC-32C continuing from a value (the ``crc32c`` package's ``value`` is the finished,
    inverted CRC of what came before, so continuing is a plain call)."""

    __slots__ = ("v",)

    def __init__(self, v: int):
        self.v = v

    def update(self, data) -> None:
        self.v = _crc32c.crc32c(data, self.v)

    def copy(self) -> "_Crc32cState":
        return _Crc32cState(self.v)


class _Crc32KernelState:
    """The kernel's raw ``crc32_le`` (no pre/post inversion) built on zlib, whose
    ``crc32(data, v)`` is ``~crc32_le(~v, data)``."""

    __slots__ = ("c",)

    def __init__(self, c: int):
        self.c = c

    def update(self, data) -> None:
        self.c = zlib.crc32(data, self.c ^ _M32) ^ _M32

    def copy(self) -> "_Crc32KernelState":
        return _Crc32KernelState(self.c)


def _prime_crc32c(key, salt):
    seed = _M32 if not key else int.from_bytes(key, "little")
    st = _Crc32cState(seed ^ _M32)          # the package's value is the inverted register
    if salt:
        st.update(salt)
    return st


def _finish_crc32c(st) -> bytes:
    return st.v.to_bytes(4, "little")


def _prime_crc32(key, salt):
    st = _Crc32KernelState(int.from_bytes(key, "little") if key else 0)
    if salt:
        st.update(salt)
    return st


def _finish_crc32(st) -> bytes:
    return st.c.to_bytes(4, "little")


def _prime_xxh64(key, salt):
    st = _xxhash.xxh64(seed=int.from_bytes(key, "little") if key else 0)
    if salt:
        st.update(salt)
    return st


def _finish_xxh64(st) -> bytes:
    return st.intdigest().to_bytes(8, "little")


def _hash_primer(hname: str):
    def prime(key, salt):
        st = hashlib.new(hname)
        if salt:
            st.update(salt)
        return st
    return prime


def _blake2b_primer(size: int):
    def prime(key, salt):
        st = hashlib.blake2b(digest_size=size, key=key or b"")
        if salt:
            st.update(salt)
        return st
    return prime


def _hmac_primer(hname: str):
    def prime(key, salt):
        st = _hmac.new(key, None, hname)
        if salt:
            st.update(salt)
        return st
    return prime


def _hmac_pads(hname: str, key: bytes, salt: bytes | None):
    """RFC 2104's two hash states for ``hmac(hname)`` with ``key``: the inner pad (and the
    salt after it, which every tag's message starts with) and the outer pad."""
    block = hashlib.new(hname).block_size
    if len(key) > block:
        key = hashlib.new(hname, key).digest()
    key = key.ljust(block, b"\0")
    inner = hashlib.new(hname, bytes(b ^ 0x36 for b in key))
    outer = hashlib.new(hname, bytes(b ^ 0x5C for b in key))
    if salt:
        inner.update(salt)
    return inner, outer


def _cmac_aes_prime(key, salt):
    from cryptography.hazmat.primitives import cmac
    from cryptography.hazmat.primitives.ciphers import algorithms
    st = cmac.CMAC(algorithms.AES(key))
    if salt:
        st.update(salt)
    return st


def _finish_digest(st) -> bytes:
    return st.digest()


def _finish_cmac(st) -> bytes:
    return st.finalize()


# kernel hash name -> hashlib name
_HASHES = {
    "md5": "md5", "sha1": "sha1", "sha224": "sha224", "sha256": "sha256", "sha384": "sha384",
    "sha512": "sha512", "sha3-224": "sha3_224", "sha3-256": "sha3_256",
    "sha3-384": "sha3_384", "sha3-512": "sha3_512", "rmd160": "ripemd160", "sm3": "sm3",
}
# kernel hash name -> libcrypto's name, for the C accelerator (each is checked against the
# hashlib path when a TagFunction is made; see TagFunction._evp_agrees)
_EVP_NAMES = {
    "md5": "MD5", "sha1": "SHA1", "sha224": "SHA224", "sha256": "SHA256",
    "sha384": "SHA384", "sha512": "SHA512", "sha3-224": "SHA3-224", "sha3-256": "SHA3-256",
    "sha3-384": "SHA3-384", "sha3-512": "SHA3-512", "sm3": "SM3",
}


def _available(hname: str) -> bool:
    try:
        hashlib.new(hname)
    except (ValueError, TypeError):
        return False
    return True


def _build_registry() -> dict[str, TagAlgorithm]:
    reg: dict[str, TagAlgorithm] = {}

    def add(alg: TagAlgorithm) -> None:
        reg[alg.name] = alg

    add(TagAlgorithm("crc32c", 4, "optional", False, _prime_crc32c, _finish_crc32c, (4,)))
    add(TagAlgorithm("crc32", 4, "optional", False, _prime_crc32, _finish_crc32, (4,)))
    add(TagAlgorithm("xxhash64", 8, "optional", False, _prime_xxh64, _finish_xxh64, (8,)))
    for kname, hname in _HASHES.items():
        if not _available(hname):
            continue
        size = hashlib.new(hname).digest_size
        evp = _EVP_NAMES.get(kname)
        add(TagAlgorithm(kname, size, "none", True, _hash_primer(hname), _finish_digest,
                         evp_name=evp))
        add(TagAlgorithm(f"hmac({kname})", size, "required", True, _hmac_primer(hname),
                         _finish_digest, hmac_hash=hname, evp_name=evp))
    for bits in (160, 256, 384, 512):
        add(TagAlgorithm(f"blake2b-{bits}", bits // 8, "optional", True,
                         _blake2b_primer(bits // 8), _finish_digest, tuple(range(1, 65))))
    add(TagAlgorithm("cmac(aes)", 16, "required", True, _cmac_aes_prime, _finish_cmac,
                     (16, 24, 32)))
    return reg


_REGISTRY = _build_registry()


def kernel_name(name: str) -> str:
    """The kernel's name for an algorithm given by the kernel's or cryptsetup's name
    (``hmac-sha256`` -> ``hmac(sha256)``, ``cmac-aes`` -> ``cmac(aes)``)."""
    n = name.strip().lower()
    m = re.fullmatch(r"(hmac|cmac)-(.+)", n)
    if m:
        n = f"{m.group(1)}({m.group(2)})"
    return n


def algorithm(name: str) -> TagAlgorithm:
    """The tag algorithm called ``name`` (kernel or cryptsetup spelling)."""
    kname = kernel_name(name)
    try:
        return _REGISTRY[kname]
    except KeyError:
        raise ValueError(f"integrity: unknown or unavailable tag algorithm {name!r} "
                         f"(known: {', '.join(algorithm_names())})") from None


def algorithm_names() -> list[str]:
    return sorted(_REGISTRY)


# -- the tag function of one device -----------------------------------------------------------

class TagFunction:
    """Tags of one device: algorithm, key, tag size, block size and (with fix_hmac) salt.

    ``tags(data, first_sector)`` computes the tags of consecutive blocks; ``verify``
    compares them with stored tags and returns the index of the first bad block or None.
    """

    def __init__(self, alg: TagAlgorithm | str, *, key: bytes | None = None,
                 tag_size: int | None = None, block_size: int = 512,
                 salt: bytes | None = None):
        self.algorithm = algorithm(alg) if isinstance(alg, str) else alg
        self.algorithm.check_key(key)
        self.tag_size = self.algorithm.digest_size if tag_size is None else tag_size
        if not 1 <= self.tag_size <= MAX_TAG_SIZE:
            raise ValueError(f"tag size {self.tag_size} is not in 1..{MAX_TAG_SIZE}")
        if block_size not in (512, 1024, 2048, 4096):
            raise ValueError(f"block size {block_size} is not 512, 1024, 2048 or 4096")
        if salt is not None and len(salt) != SALT_SIZE:
            raise ValueError(f"salt must be {SALT_SIZE} bytes")
        self.block_size = block_size
        self.sectors_per_block = block_size >> 9
        self.salted = salt is not None
        self._state = self.algorithm._prime(bytes(key) if key else None, salt)
        self._finish = self.algorithm._finish
        digest = self.algorithm.digest_size
        if digest >= self.tag_size:
            self._fix = lambda d, n=self.tag_size: d[:n]
        else:
            pad = bytes(self.tag_size - digest)
            self._fix = lambda d, p=pad: d + p
        # The checksums keep their state in one int: one C call per block, the state after
        # salt and sector computed for all blocks at once (this is most of the time of a
        # crc32c read).
        self._int_tags = None
        self._prefix_tables = None
        self._slices: list[slice] = []
        if isinstance(self._state, _Crc32cState):
            self._int_tags = self._crc32c_values
            self._crc_fn, self._crc_seed = _crc32c.crc32c, self._state.v
        elif isinstance(self._state, _Crc32KernelState):
            self._int_tags = self._crc32_values
            self._crc_fn, self._crc_seed = zlib.crc32, self._state.c ^ _M32
        # HMAC: the inner and outer pads' hashlib states, copied per block.
        self._hmac_pads = None
        if self.algorithm.hmac_hash is not None:
            self._hmac_pads = _hmac_pads(self.algorithm.hmac_hash, bytes(key), salt)
        # Hashes and hmac(hash): one C call per request (libcrypto, the GIL released) when
        # the accelerator is built and gives this function the hashlib loop's bytes.
        self._evp = None
        if _tagsevp is not None and self.algorithm.evp_name is not None:
            self._evp = (self.algorithm.evp_name, bytes(key) if key else None, salt or b"")
            if not self._evp_agrees():
                self._evp = None

    @property
    def cryptographic(self) -> bool:
        return self.algorithm.cryptographic

    def tag(self, block, sector: int) -> bytes:
        """The tag of one block starting at logical ``sector``."""
        return self.tags(block, sector)

    def tags(self, data, first_sector: int) -> bytes:
        """Tags of the consecutive blocks in ``data``, the first at logical ``first_sector``."""
        mv = memoryview(data).cast("B")
        bs = self.block_size
        n = len(mv) // bs
        if n * bs != len(mv):
            raise ValueError(f"{len(mv)} bytes is not a whole number of {bs}-byte blocks")
        if self._int_tags is not None:
            values = self._int_tags(mv, n, first_sector)
            packed = struct.pack(f"<{n}I", *values)
            if self.tag_size == 4:
                return packed
            fix = self._fix
            return b"".join(fix(packed[4 * i:4 * i + 4]) for i in range(n))
        if self._evp is not None and n >= _EVP_MIN_BLOCKS:
            name, key, prefix = self._evp
            joined = _tagsevp.digests(name, key, prefix, mv, bs, first_sector,
                                      self.sectors_per_block)
            if self.tag_size == self.algorithm.digest_size:
                return joined
            return self._fix_joined(joined, n)
        if self._hmac_pads is not None:
            digests = self._hmac_digests(mv, n, first_sector)
            if self.tag_size == self.algorithm.digest_size:
                return b"".join(digests)
            fix = self._fix
            return b"".join([fix(d) for d in digests])
        state, finish, fix, pack = self._state, self._finish, self._fix, _LE64.pack
        spb = self.sectors_per_block
        out = []
        append = out.append
        for i in range(n):
            h = state.copy()
            h.update(pack(first_sector + i * spb))
            h.update(mv[i * bs:(i + 1) * bs])
            append(fix(finish(h)))
        return b"".join(out)

    def _evp_agrees(self) -> bool:
        """Whether the C accelerator computes the hashlib loop's tags for this function
        (checked once, on two blocks whose sector needs all eight bytes): a libcrypto that
        lacks the digest, or names it differently, leaves the hashlib loop in use."""
        name, key, prefix = self._evp
        bs = self.block_size
        sample = bytes(range(256)) * (2 * bs // 256)
        sector = 0x0123456789ABCDE8 & ~(self.sectors_per_block - 1)
        try:
            joined = _tagsevp.digests(name, key, prefix, sample, bs, sector,
                                      self.sectors_per_block)
        except ValueError:
            return False
        evp, self._evp = self._evp, None
        try:
            want = self.tags(sample, sector)
        finally:
            self._evp = evp
        got = joined if self.tag_size == self.algorithm.digest_size \
            else self._fix_joined(joined, 2)
        return got == want

    def _fix_joined(self, joined: bytes, n: int) -> bytes:
        """``n`` concatenated digests truncated or zero-padded to the tag size."""
        ds, ts = self.algorithm.digest_size, self.tag_size
        a = np.frombuffer(joined, dtype=np.uint8).reshape(n, ds)
        if ts <= ds:
            return a[:, :ts].tobytes()
        out = np.zeros((n, ts), dtype=np.uint8)
        out[:, :ds] = a
        return out.tobytes()

    def _hmac_digests(self, mv: memoryview, n: int, first_sector: int) -> list[bytes]:
        """HMAC(key, [salt] || le64(sector) || block) per block, RFC 2104 spelled out:
        H(opad-state || H(ipad-state [|| salt] || sector || block)), seven C calls.  The
        block views come from cached slices (no index arithmetic per block)."""
        inner, outer = self._hmac_pads
        icopy, ocopy = inner.copy, outer.copy
        spb = self.sectors_per_block
        out: list[bytes] = []
        append = out.append
        sector = first_sector
        for block in self._block_views(mv, n):
            h = icopy()
            h.update(sector.to_bytes(8, "little"))
            h.update(block)
            o = ocopy()
            o.update(h.digest())
            append(o.digest())
            sector += spb
        return out

    def _prefix_values(self, n: int, first_sector: int) -> list[int]:
        """The checksum state after salt and ``le64(sector)`` for the ``n`` blocks from
        ``first_sector``.  A CRC of fixed-length data is affine in the data over GF(2), so
        the state after 8 sector bytes is the state after 8 zero bytes XOR one table value
        per byte: 8 gathers for all blocks instead of one call per block."""
        tables = self._prefix_tables
        if tables is None:
            crc, seed = self._crc_fn, self._crc_seed
            base = crc(bytes(8), seed)
            t8 = np.array([[crc((b << (8 * k)).to_bytes(8, "little"), seed) ^ base
                            for b in range(256)] for k in range(8)], dtype=np.uint32)
            # the low 16 bits' contribution in one table (256 KiB)
            t16 = (t8[0][np.arange(65536) & 0xFF] ^ t8[1][np.arange(65536) >> 8])
            self._prefix_tables = tables = (base, t8, t16)
        base, t8, t16 = tables
        spb = self.sectors_per_block
        low = first_sector & 0xFFFF
        if low + n * spb <= 0x10000:
            # every block's sector shares the high 48 bits: one value for them, one gather
            high = base
            for k in range(2, 8):
                high ^= int(t8[k][(first_sector >> (8 * k)) & 0xFF])
            return (t16[np.arange(low, low + n * spb, spb)] ^ np.uint32(high)).tolist()
        sectors = np.arange(n, dtype=np.uint64) * np.uint64(spb) + np.uint64(first_sector)
        by = sectors.view(np.uint8).reshape(n, 8)
        v = np.full(n, base, dtype=np.uint32)
        for k in range(8):
            v ^= t8[k][by[:, k]]
        return v.tolist()

    def _block_views(self, mv: memoryview, n: int):
        """The ``n`` blocks of ``mv`` as views (an iterator; slice objects cached)."""
        cache = self._slices
        if len(cache) < n:
            bs = self.block_size
            cache.extend(slice(i * bs, (i + 1) * bs) for i in range(len(cache), n))
        return map(mv.__getitem__, cache[:n] if len(cache) > n else cache)

    def _crc32c_values(self, mv: memoryview, n: int, first_sector: int) -> list[int]:
        if n < 8:
            crc, pack, v0 = _crc32c.crc32c, _LE64.pack, self._state.v
            bs, spb = self.block_size, self.sectors_per_block
            return [crc(mv[i * bs:(i + 1) * bs], crc(pack(first_sector + i * spb), v0))
                    for i in range(n)]
        return list(map(_crc32c.crc32c, self._block_views(mv, n),
                        self._prefix_values(n, first_sector)))

    def _crc32_values(self, mv: memoryview, n: int, first_sector: int) -> list[int]:
        if n < 8:
            crc, pack, c0 = zlib.crc32, _LE64.pack, self._state.c ^ _M32
            bs, spb = self.block_size, self.sectors_per_block
            return [crc(mv[i * bs:(i + 1) * bs], crc(pack(first_sector + i * spb), c0))
                    ^ _M32 for i in range(n)]
        return [v ^ _M32 for v in map(zlib.crc32, self._block_views(mv, n),
                                       self._prefix_values(n, first_sector))]

    def verify(self, data, first_sector: int, stored, *,
               allow_discards: bool = False) -> int | None:
        """Compare the tags of ``data`` with ``stored``; the index of the first block whose
        tag differs (and, with ``allow_discards``, is not all 0xF6), or None."""
        bad = self.bad_blocks(data, first_sector, stored, allow_discards=allow_discards)
        return int(bad[0]) if bad.size else None

    @property
    def can_read_tags(self) -> bool:
        """Whether :meth:`read_tags` is available: the C accelerator computes this
        function's tags and has ``read_digests``."""
        return self._evp is not None and hasattr(_tagsevp, "read_digests")

    def read_tags(self, fd: int, offset: int, buf, first_sector: int,
                  piece: int) -> bytes:
        """Read ``len(buf)`` bytes at byte ``offset`` of ``fd`` into ``buf`` and return
        their tags (as :meth:`tags` of ``buf`` at ``first_sector``), the copy out of the
        page cache overlapped with the hashing ``piece`` bytes at a time (see
        ``_tagsevp.c``).  Raises OSError as a read would; only when
        :attr:`can_read_tags`."""
        mv = memoryview(buf).cast("B")
        bs = self.block_size
        n = len(mv) // bs
        name, key, prefix = self._evp
        joined = _tagsevp.read_digests(fd, offset, mv, piece, name, key, prefix, bs,
                                       first_sector, self.sectors_per_block)
        if self.tag_size == self.algorithm.digest_size:
            return joined
        return self._fix_joined(joined, n)

    def bad_blocks(self, data, first_sector: int, stored, *,
                   allow_discards: bool = False) -> np.ndarray:
        """Indices of all blocks of ``data`` whose stored tag does not verify."""
        return self.mismatches(self.tags(data, first_sector), stored,
                               allow_discards=allow_discards)

    def mismatches(self, computed: bytes, stored, *,
                   allow_discards: bool = False) -> np.ndarray:
        """Indices of the blocks whose ``computed`` tag differs from the ``stored`` one
        (in constant time for cryptographic algorithms while all agree)."""
        # compare_digest and numpy take any bytes-like object; copy only other buffers
        stored_b = stored if isinstance(stored, (bytes, bytearray)) else bytes(stored)
        if len(stored_b) != len(computed):
            raise ValueError(f"{len(stored_b)} bytes of stored tags for "
                             f"{len(computed) // self.tag_size} blocks")
        if self.cryptographic:
            equal = _hmac.compare_digest(computed, stored_b)
        else:
            equal = computed == stored_b
        if equal:
            return np.empty(0, dtype=np.intp)
        # Only after the whole request failed do we look for which blocks did: that is
        # what gets reported anyway, so it need not be constant time.
        ts = self.tag_size
        a = np.frombuffer(computed, dtype=np.uint8).reshape(-1, ts)
        b = np.frombuffer(stored_b, dtype=np.uint8).reshape(-1, ts)
        bad = np.any(a != b, axis=1)
        if allow_discards:
            bad &= ~np.all(b == DISCARD_FILLER, axis=1)
        return np.flatnonzero(bad)
