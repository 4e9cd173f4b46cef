"""Shared fixtures of the keyring tests: the kernel-made vectors and their master keys."""

from __future__ import annotations

import pytest

from dmkit.keys import KeyNotFoundError, SecretBytes

from ._util import load_vector


@pytest.fixture(scope="session")
def kernel_vectors() -> dict:
    """tests/vectors/keys/encrypted-keys.json: blobs made by Linux 6.18 (see the README)."""
    return load_vector("encrypted-keys.json")


@pytest.fixture(scope="session")
def masters(kernel_vectors) -> dict[str, bytes]:
    """Master key bytes by description (``kmk``, ``kmk8``, ``kmk23``, ``kmk64``)."""
    return {name: bytes.fromhex(m["raw_hex"]) for name, m in kernel_vectors["masters"].items()}


@pytest.fixture
def lookup(masters):
    """A master lookup over the vector masters: ``"user:kmk"`` -> its bytes."""

    def look(master_desc: str) -> SecretBytes:
        kind, _, name = master_desc.partition(":")
        assert kind == "user"
        if name not in masters:
            raise KeyNotFoundError(f"master key {master_desc} not found")
        return SecretBytes(masters[name])

    return look
