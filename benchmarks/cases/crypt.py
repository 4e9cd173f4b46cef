"""Cases for the crypt target and its sector cipher.

- ``crypt-xts-read`` / ``crypt-xts-write``: a linear mapping over an aes-xts-plain64 crypt
  mapping over one image (512-byte sectors), read or written start to end, against raw
  positional I/O on the image;
- ``crypt-xts-cipher``: dmkit's batched AES-XTS sector cipher decrypting each request
  (plain64 IVs, 512-byte units) against one OpenSSL XTS call over the same request — the
  "cryptsetup benchmark"-like ceiling, measured in the same run.  No I/O in either.
"""

from __future__ import annotations

import os

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from dmkit.block import SECTOR_SHIFT
from dmkit.crypto import AesXts, Plain64Iv
from dmkit.dm import join_args

from ..registry import CaseContext, Workload, register
from .targets import _require_target, _target_workload

__all__: list[str] = []

_KEY = bytes(range(64))


def _crypt(ctx: CaseContext, op: str) -> Workload:
    _require_target("crypt")
    nr = ctx.total_bytes >> SECTOR_SHIFT

    def table(paths: list[str]) -> str:
        # linear over crypt, as a LUKS volume is mapped; the crypt device is named in the
        # table through a nested table line is not possible, so crypt is the top target
        return f"0 {nr} crypt aes-xts-plain64 {_KEY.hex()} 0 {join_args(paths[:1])} 0\n"

    return _target_workload(ctx, op, "crypt", [ctx.total_bytes], table)


@register("crypt-xts-read", op="read",
          description="sequential read (decrypt) of an aes-xts-plain64 crypt mapping, 512-byte sectors")
def crypt_read(ctx: CaseContext) -> Workload:
    return _crypt(ctx, "read")


@register("crypt-xts-write", op="write",
          description="sequential write (encrypt) of an aes-xts-plain64 crypt mapping, one flush")
def crypt_write(ctx: CaseContext) -> Workload:
    return _crypt(ctx, "write")


@register("crypt-xts-cipher", op="read",
          description="AES-XTS decrypt of each request, plain64 per 512-byte unit (dmkit batched) "
                      "vs one OpenSSL XTS call per request; baseline is the cipher ceiling, not I/O")
def crypt_cipher(ctx: CaseContext) -> Workload:
    req = ctx.request_bytes
    data = os.urandom(req)
    out = ctx.buffer
    units = req // 512
    cipher = AesXts(_KEY)
    ivgen = Plain64Iv(16)
    alg = algorithms.AES(_KEY)
    passes = ctx.total_bytes // req

    def run() -> int:
        for i in range(passes):
            ivs = ivgen.generate(np.arange(i * units, (i + 1) * units, dtype=np.uint64))
            cipher.decrypt(data, out, ivs, 512)
        return passes * req

    def baseline() -> int:
        for _ in range(passes):
            Cipher(alg, modes.XTS(bytes(16))).decryptor().update_into(data, out_big)
        return passes * req

    out_big = bytearray(req + 15)
    ctx.stack.callback(cipher.wipe)
    return Workload(run=run, baseline=baseline,
                    baseline_name="one OpenSSL AES-XTS call per request (cryptography)",
                    details={"unit_bytes": 512, "iv": "plain64"})
