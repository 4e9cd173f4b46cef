"""Helpers of the keyring tests."""

from __future__ import annotations

import base64
import json
import pathlib
import random

VECTORS = pathlib.Path(__file__).resolve().parent.parent / "vectors" / "keys"


def load_vector(name: str) -> dict:
    with open(VECTORS / name, encoding="utf-8") as f:
        return json.load(f)


def seeded_rng(seed: int):
    """A deterministic stand-in for os.urandom."""
    r = random.Random(seed)
    return lambda n: r.randbytes(n)


def secret_forms(secret: bytes) -> list[bytes]:
    """The ways key bytes could show up in text: raw, hex (both cases), base64."""
    h = secret.hex()
    return [secret, h.encode(), h.upper().encode(), base64.b64encode(secret),
            base64.b64encode(secret).rstrip(b"=")]


def assert_no_secret(haystack: bytes | str, secrets: dict[str, bytes], where: str) -> None:
    if isinstance(haystack, str):
        haystack = haystack.encode("utf-8", "surrogateescape")
    for name, secret in secrets.items():
        for form in secret_forms(secret):
            assert form not in haystack, f"{name} appears in {where}"
