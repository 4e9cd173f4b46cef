"""The low-level parts: AF splitter, KDFs, key slot area encryption, digests."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from dmkit.errors import NotSupportedError
from dmkit.luks.af import af_merge, af_split, af_split_sectors, diffuse
from dmkit.luks.errors import ParameterError
from dmkit.luks.kdf import Pbkdf, argon2, benchmark_pbkdf2, pbkdf2
from dmkit.luks.keyslot import digest_matches, seal, unseal
from dmkit.luks.storage import check_keyslot_cipher, decrypt_area, encrypt_area, \
    parse_cipher_spec

from ._util import seeded_rng


def _diffuse_reference(block: bytes, h: str) -> bytes:
    ds = hashlib.new(h).digest_size
    out = b""
    for i in range(0, len(block), ds):
        piece = block[i:i + ds]
        out += hashlib.new(h, (i // ds).to_bytes(4, "big") + piece).digest()[:len(piece)]
    return out


@pytest.mark.parametrize("h", ["sha1", "sha256", "sha512"])
@pytest.mark.parametrize("size", [16, 32, 64, 96, 100])
def test_af_round_trip_and_layout(h, size):
    key = bytes(range(size))
    split = af_split(key, 4000, h, seeded_rng(size))
    assert len(split) == af_split_sectors(size, 4000) * 512
    assert split[size * 4000:] == bytes(len(split) - size * 4000)
    assert af_merge(split, size, 4000, h) == key
    # the stripes are the rng's bytes, then the key xor the running diffusion
    rng = seeded_rng(size)
    acc = bytes(size)
    for i in range(3999):
        block = rng(size)
        assert split[i * size:(i + 1) * size] == block
        acc = _diffuse_reference(bytes(a ^ b for a, b in zip(block, acc)), h)
    assert bytes(a ^ b for a, b in zip(split[3999 * size:4000 * size], acc)) == key
    assert diffuse(key, h) == _diffuse_reference(key, h)


def test_af_merge_of_damaged_stripe_differs():
    key = bytes(32)
    split = af_split(key, 4000, "sha256", seeded_rng())
    split[100] ^= 1
    assert af_merge(split, 32, 4000, "sha256") != key


def test_pbkdf2_rfc6070():
    assert pbkdf2("sha1", b"password", b"salt", 1, 20).hex() == \
        "0c60c80f961f0e71f3a9b524af6012062fe037a6"
    assert pbkdf2("sha1", b"password", b"salt", 4096, 20).hex() == \
        "4b007901b765489abead49d926f721d065a429c1"


def test_argon2_kinds_differ_and_are_stable():
    a = argon2("argon2id", b"pw", b"s" * 32, 1, 64, 1, 32)
    b = argon2("argon2i", b"pw", b"s" * 32, 1, 64, 1, 32)
    assert a != b and len(a) == 32
    assert argon2("argon2id", b"pw", b"s" * 32, 1, 64, 1, 32) == a


def test_argon2id_matches_cryptography():
    from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
    want = Argon2id(salt=b"s" * 32, length=64, iterations=2, lanes=2,
                    memory_cost=128).derive(b"pw")
    assert argon2("argon2id", b"pw", b"s" * 32, 2, 128, 2, 64) == want


def test_pbkdf_parameters_are_validated():
    with pytest.raises(ParameterError):
        Pbkdf(type="scrypt")
    with pytest.raises(ParameterError):
        Pbkdf(type="pbkdf2", iterations=10)
    with pytest.raises(ParameterError):
        Pbkdf(type="argon2id", memory_kb=8)
    with pytest.raises(ParameterError):
        Pbkdf(type="argon2id", parallel=9)
    with pytest.raises(NotSupportedError):
        Pbkdf(hash="md4")
    assert benchmark_pbkdf2("sha256", 32, 10) >= 1000


def test_cipher_spec_parsing():
    assert parse_cipher_spec("aes-xts-plain64") == ("aes", "xts", "plain64")
    assert parse_cipher_spec("aes-cbc-essiv:sha256") == ("aes", "cbc", "essiv:sha256")
    assert parse_cipher_spec("aes-ecb") == ("aes", "ecb", "")
    assert parse_cipher_spec("aes") == ("aes", "cbc", "plain")
    assert parse_cipher_spec("aes-plain") == ("aes", "cbc", "plain")
    assert parse_cipher_spec("cipher_null") == ("cipher_null", "ecb", "")


@pytest.mark.parametrize("spec,ks", [("aes-xts-plain64", 64), ("aes-xts-plain64", 32),
                                     ("aes-xts-plain", 32), ("aes-cbc-essiv:sha256", 32),
                                     ("aes-cbc-plain64", 16), ("aes-cbc-plain64be", 24),
                                     ("aes-cbc-benbi", 32), ("aes-cbc-null", 32),
                                     ("aes-ctr-plain64", 32), ("aes-ecb", 32),
                                     ("cipher_null-ecb", 0)])
def test_area_encryption_round_trip(spec, ks):
    key = bytes(range(1, ks + 1))
    data = bytes(range(256)) * 8
    ct = encrypt_area(spec, key, data)
    assert (ct == data) == spec.startswith("cipher_null")
    assert decrypt_area(spec, key, ct) == data
    assert encrypt_area(spec, key, data, start_sector=5)[512:] != ct[512:] or \
        spec in ("aes-ecb", "aes-cbc-null", "cipher_null-ecb")


def _sector_ref(mode, key: bytes, iv: bytes, data: bytes) -> bytes:
    e = Cipher(algorithms.AES(key), mode(iv)).encryptor()
    return e.update(data) + e.finalize()


def test_iv_generators_known_answers():
    key = bytes(range(32))
    data = bytes(512)
    s = 2 ** 32 + 5
    assert encrypt_area("aes-cbc-plain", key, data, s) == \
        _sector_ref(modes.CBC, key, (5).to_bytes(16, "little"), data)
    assert encrypt_area("aes-cbc-plain64", key, data, s) == \
        _sector_ref(modes.CBC, key, s.to_bytes(16, "little"), data)
    assert encrypt_area("aes-cbc-plain64be", key, data, s) == \
        _sector_ref(modes.CBC, key, bytes(8) + s.to_bytes(8, "big"), data)
    assert encrypt_area("aes-cbc-benbi", key, data, 3) == \
        _sector_ref(modes.CBC, key, bytes(8) + (3 * 32 + 1).to_bytes(8, "big"), data)
    salt = hashlib.sha256(key).digest()
    e = Cipher(algorithms.AES(salt), modes.ECB()).encryptor()
    essiv = e.update((7).to_bytes(16, "little")) + e.finalize()
    assert encrypt_area("aes-cbc-essiv:sha256", key, data, 7) == \
        _sector_ref(modes.CBC, key, essiv, data)
    xkey = bytes(range(64))
    assert encrypt_area("aes-xts-plain64", xkey, data * 2, 9)[512:] == \
        _sector_ref(modes.XTS, xkey, (10).to_bytes(16, "little"), data)


@pytest.mark.parametrize("spec,ks", [("serpent-xts-plain64", 64), ("aes-xts-plain64", 48),
                                     ("aes-gcm-random", 32), ("aes-cbc-lmk", 32),
                                     ("aes-cbc-essiv", 32), ("aes-xts-essiv:md5", 32),
                                     ("-xts", 32)])
def test_unsupported_area_ciphers(spec, ks):
    with pytest.raises(NotSupportedError):
        check_keyslot_cipher(spec, ks)


def test_seal_unseal_and_digest():
    vk = bytes(range(64))
    derived = bytes(range(100, 164))
    material = seal(vk, derived, "aes-xts-plain64", "sha256", 4000, seeded_rng())
    assert len(material) == 500 * 512
    assert unseal(material, derived, "aes-xts-plain64", 64, "sha256", 4000) == vk
    assert unseal(material, bytes(64), "aes-xts-plain64", 64, "sha256", 4000) != vk
    want = pbkdf2("sha256", vk, b"s" * 32, 1000, 32)
    assert digest_matches("sha256", vk, b"s" * 32, 1000, bytes(want))
    assert not digest_matches("sha256", vk[::-1], b"s" * 32, 1000, bytes(want))
