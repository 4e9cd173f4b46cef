"""Password-based key derivation for LUKS key slots: low-level.

PBKDF2 (RFC 8018) with any hash cryptsetup names, and Argon2i / Argon2id (RFC 9106,
version 0x13) as LUKS2 key slots use them (LUKS2 On-Disk Format Specification, section
3.2 "kdf"; cryptsetup ``lib/crypto_backend/argon2_generic.c``).  Argon2 comes from
``argon2-cffi``; cryptography's Argon2id is used when argon2-cffi is missing.

:class:`Pbkdf` holds the parameters of a *new* key slot: forced iterations make tests
fast and results reproducible; without them a short benchmark picks the cost for the
requested time, as cryptsetup's ``--iter-time`` does.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass

from ..errors import NotSupportedError
from .errors import ParameterError
from .hashes import hashlib_name, hash_ctor

__all__ = [
    "PBKDF2",
    "ARGON2I",
    "ARGON2ID",
    "KDF_TYPES",
    "Pbkdf",
    "pbkdf2",
    "argon2",
    "derive",
    "ARGON2_MAX_MEMORY_KB",
    "ARGON2_MIN_MEMORY_KB",
    "ARGON2_MAX_PARALLEL",
    "PBKDF2_MIN_ITERATIONS",
    "ARGON2_MIN_TIME",
]

PBKDF2 = "pbkdf2"
ARGON2I = "argon2i"
ARGON2ID = "argon2id"
KDF_TYPES = (PBKDF2, ARGON2I, ARGON2ID)

# cryptsetup's limits (crypt_pbkdf_get_limits)
PBKDF2_MIN_ITERATIONS = 1000
ARGON2_MIN_TIME = 4
ARGON2_MIN_MEMORY_KB = 32
ARGON2_MAX_MEMORY_KB = 4 * 1024 * 1024
ARGON2_MAX_PARALLEL = 4
_ARGON2_MAX_TIME = 2 ** 32 - 1


@dataclass(frozen=True)
class Pbkdf:
    """How to derive a new key slot's key (cryptsetup's ``--pbkdf*`` and ``--hash``).

    ``hash`` is also the AF splitter's hash and the volume key digest's hash.
    ``iterations`` forces the cost (PBKDF2 iterations, Argon2 time cost) and skips the
    benchmark; otherwise the cost is benchmarked to take ``iter_time_ms``.
    """

    type: str = ARGON2ID
    hash: str = "sha256"
    iterations: int | None = None
    memory_kb: int = 1024 * 1024
    parallel: int = 4
    iter_time_ms: int = 2000

    def __post_init__(self):
        if self.type not in KDF_TYPES:
            raise ParameterError(f"pbkdf {self.type!r} is not one of {', '.join(KDF_TYPES)}")
        hashlib_name(self.hash)
        if self.iterations is not None:
            low = PBKDF2_MIN_ITERATIONS if self.type == PBKDF2 else 1
            if not low <= self.iterations <= 2 ** 32 - 1:
                raise ParameterError(f"pbkdf iterations {self.iterations} out of range "
                                 f"{low}..{2 ** 32 - 1}")
        if self.type != PBKDF2:
            if not ARGON2_MIN_MEMORY_KB <= self.memory_kb <= ARGON2_MAX_MEMORY_KB:
                raise ParameterError(f"pbkdf memory {self.memory_kb} KiB out of range "
                                 f"{ARGON2_MIN_MEMORY_KB}..{ARGON2_MAX_MEMORY_KB}")
            if not 1 <= self.parallel <= ARGON2_MAX_PARALLEL:
                raise ParameterError(f"pbkdf parallel {self.parallel} out of range "
                                 f"1..{ARGON2_MAX_PARALLEL}")
        if self.iter_time_ms <= 0:
            raise ParameterError("pbkdf iteration time must be positive")

    @property
    def benchmark(self) -> bool:
        return self.iterations is None


def pbkdf2(hash_name: str, password: bytes, salt: bytes, iterations: int,
           length: int) -> bytearray:
    hl = hashlib_name(hash_name)
    hash_ctor(hash_name)  # NotSupportedError if this OpenSSL lacks it
    try:
        return bytearray(hashlib.pbkdf2_hmac(hl, bytes(password), bytes(salt), iterations,
                                             length))
    except ValueError as e:
        raise NotSupportedError(f"luks: pbkdf2 with {hash_name} failed: {e}") from None


def argon2(kind: str, password: bytes, salt: bytes, time_cost: int, memory_kb: int,
           parallel: int, length: int) -> bytearray:
    """Argon2i or Argon2id, version 0x13, no secret or associated data."""
    if kind not in (ARGON2I, ARGON2ID):
        raise NotSupportedError(f"luks: kdf {kind!r} is not supported")
    try:
        from argon2.low_level import Type, hash_secret_raw
    except ImportError:
        if kind != ARGON2ID:
            raise NotSupportedError("luks: argon2i needs the argon2-cffi package") from None
        from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
        return bytearray(Argon2id(salt=bytes(salt), length=length, iterations=time_cost,
                                  lanes=parallel, memory_cost=memory_kb)
                         .derive(bytes(password)))
    return bytearray(hash_secret_raw(bytes(password), bytes(salt), time_cost, memory_kb,
                                     parallel, length, Type.I if kind == ARGON2I else Type.ID,
                                     version=0x13))


def derive(kind: str, password: bytes, salt: bytes, length: int, *, hash: str | None = None,
           iterations: int = 0, time: int = 0, memory: int = 0, cpus: int = 0) -> bytearray:
    """Derive ``length`` bytes with a key slot's stored ``kdf`` parameters."""
    if kind == PBKDF2:
        return pbkdf2(hash or "sha256", password, salt, iterations, length)
    return argon2(kind, password, salt, time, memory, cpus, length)


# -- benchmark ------------------------------------------------------------------------------

def benchmark_pbkdf2(hash_name: str, key_size: int, time_ms: int) -> int:
    """PBKDF2 iterations that take about ``time_ms`` here (at least 1000)."""
    iterations = 1000
    while True:
        t0 = time.perf_counter()
        pbkdf2(hash_name, b"foobarfo", b"0123456789abcdef0123456789abcdef", iterations,
               key_size)
        ms = (time.perf_counter() - t0) * 1000
        if ms >= 50 or iterations >= 2 ** 30:
            break
        iterations *= 4
    return max(PBKDF2_MIN_ITERATIONS, min(2 ** 32 - 1, int(iterations * time_ms / max(ms, 1e-3))))


def benchmark_argon2(kind: str, memory_kb: int, parallel: int, key_size: int,
                     time_ms: int) -> tuple[int, int]:
    """(time cost, memory KiB) that take about ``time_ms``: the memory is lowered first if
    even the minimum time cost is too slow, as cryptsetup's benchmark does."""
    t_cost = ARGON2_MIN_TIME
    try:  # as cryptsetup: never more than half of the physical memory
        half_kb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2048
        memory_kb = max(ARGON2_MIN_MEMORY_KB, min(memory_kb, half_kb))
    except (ValueError, OSError, AttributeError):
        pass
    while True:
        t0 = time.perf_counter()
        argon2(kind, b"foobarfo", b"0123456789abcdef", t_cost, memory_kb, parallel, key_size)
        ms = (time.perf_counter() - t0) * 1000
        if ms > time_ms and memory_kb > ARGON2_MIN_MEMORY_KB and t_cost == ARGON2_MIN_TIME:
            memory_kb = max(ARGON2_MIN_MEMORY_KB, int(memory_kb * time_ms / ms))
            continue
        break
    if ms < time_ms:
        t_cost = min(_ARGON2_MAX_TIME, max(ARGON2_MIN_TIME, int(t_cost * time_ms / max(ms, 1e-3))))
    return t_cost, memory_kb
