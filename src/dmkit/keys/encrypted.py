"""The kernel's ``encrypted`` key type, low level: payload grammar, length rules, the blob.

Spec: Documentation/security/keys/trusted-encrypted.rst, and the code that is the format:
security/keys/encrypted-keys/encrypted.c (``datablob_parse``, ``encrypted_key_alloc``,
``get_derived_key``, ``derived_key_encrypt``/``_decrypt``, ``datablob_hmac_append``/
``_verify``, ``datablob_format``) and ecryptfs_format.c.  Names follow that file.

Payloads given to ``add_key``/``keyctl update``::

    new [default|ecryptfs|enc32] user:<master>|trusted:<master> <datalen> [<hex data>]
    load [default|ecryptfs|enc32] user:<master>|trusted:<master> <datalen> <hex blob>
    update user:<master>|trusted:<master>

The blob, exactly as ``keyctl pipe`` prints it (lower-case hex, no newline)::

    "<format> <master_desc> <datalen> " || hex(iv[16] || 00 || encrypted_data || hmac[32])

    encrypted_data = AES-256-CBC(enc_key, iv, decrypted_data || zeros to a 16-byte multiple)
    hmac           = HMAC-SHA256(auth_key, format 00 master_desc 00 datalen 00 iv 00 encrypted_data)
    enc_key        = SHA-256(b"ENC_KEY\\0"  || master || zeros)  # a zero-filled buffer of
    auth_key       = SHA-256(b"AUTH_KEY\\0" || master || zeros)  # max(9 + len(master), 32)

The rules are the kernel's, including its quirks, because a blob the kernel accepts must
load here and the other way round:

* ``datalen`` is 20..4096 (``kstrtol`` base 10, so ``032`` and ``+32`` are 32); the text is
  kept as written and covered by the HMAC, and ``keyctl pipe`` prints it back unchanged.
* ``enc32`` needs a ``datalen`` of 32; ``ecryptfs`` needs 64 and a key description of
  exactly 16 hexadecimal characters.
* ``load`` without a format word verifies an HMAC that starts at ``master_desc`` (blobs of
  kernels before formats existed); the key is then a ``default`` key, and its next blob
  has the format and an HMAC over it.
* The two hex characters between IV and data are skipped, not parsed; padding bytes after
  ``datalen`` are decrypted and thrown away, not checked.
* Tokens are separated by exactly one space or tab (``strsep``); text after the last
  token the command needs is ignored.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac as _hmac
import re
from dataclasses import dataclass
from typing import Union

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .errors import KeyAuthError, KeyFormatError, KeyNotSupportedError
from .secret import SecretBytes

__all__ = [
    "FORMAT_DEFAULT",
    "FORMAT_ECRYPTFS",
    "FORMAT_ENC32",
    "FORMATS",
    "MIN_DATA_SIZE",
    "MAX_DATA_SIZE",
    "KEY_ENC32_PAYLOAD_LEN",
    "ECRYPTFS_MAX_KEY_BYTES",
    "KEY_ECRYPTFS_DESC_LEN",
    "IV_SIZE",
    "HASH_SIZE",
    "MAX_PAYLOAD_SIZE",
    "Blob",
    "NewPayload",
    "LoadPayload",
    "UpdatePayload",
    "derive_key",
    "encrypted_datalen",
    "parse_datalen",
    "check_master_desc",
    "check_format",
    "check_ecryptfs_desc",
    "check_length_rules",
    "parse_payload",
    "decode_hex_blob",
    "wrap",
    "unwrap",
]

FORMAT_DEFAULT = "default"
FORMAT_ECRYPTFS = "ecryptfs"
FORMAT_ENC32 = "enc32"
FORMATS = (FORMAT_DEFAULT, FORMAT_ECRYPTFS, FORMAT_ENC32)

KEY_TRUSTED_PREFIX = "trusted:"
KEY_USER_PREFIX = "user:"

MIN_DATA_SIZE = 20
MAX_DATA_SIZE = 4096
KEY_ENC32_PAYLOAD_LEN = 32
ECRYPTFS_MAX_KEY_BYTES = 64
KEY_ECRYPTFS_DESC_LEN = 16
IV_SIZE = 16  # AES block: crypto_skcipher_ivsize("cbc(aes)")
BLOCK_SIZE = 16
HASH_SIZE = 32  # SHA256_DIGEST_SIZE
#: ``encrypted_instantiate``/``encrypted_update`` refuse a payload longer than this
MAX_PAYLOAD_SIZE = 32767

_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_TOKEN_SEP = re.compile(r"[ \t]")

BytesLike = Union[bytes, bytearray, memoryview, SecretBytes]


def _view(b: BytesLike) -> memoryview | bytes:
    return b.view() if isinstance(b, SecretBytes) else b


# --- key derivation and the cipher --------------------------------------------------------

def derive_key(label: str, master_key: BytesLike) -> bytes:
    """``get_derived_key``: SHA-256 of ``label\\0 master`` in a zero-filled buffer.

    The buffer is ``len("AUTH_KEY") + 1 + len(master)`` bytes and at least 32; the master
    starts right after ``label``'s NUL, so ``ENC_KEY`` leaves one more zero at the end.
    """
    if label not in ("ENC_KEY", "AUTH_KEY"):
        raise ValueError(f"unknown derived key label {label!r}")
    master = _view(master_key)
    buf = bytearray(max(len("AUTH_KEY") + 1 + len(master), HASH_SIZE))
    start = len(label) + 1
    buf[: len(label)] = label.encode()
    buf[start : start + len(master)] = master
    try:
        return hashlib.sha256(buf).digest()
    finally:
        buf[:] = bytes(len(buf))


def encrypted_datalen(decrypted_datalen: int) -> int:
    """Length of the encrypted data: ``roundup(decrypted_datalen, 16)``."""
    return -(-decrypted_datalen // BLOCK_SIZE) * BLOCK_SIZE


def _cbc(key: bytes, iv: bytes):
    return Cipher(algorithms.AES(key), modes.CBC(iv))


# --- validation rules ----------------------------------------------------------------------

def parse_datalen(text: str) -> int:
    """``kstrtol(datalen, 10)`` and the 20..4096 range of ``encrypted_key_alloc``."""
    s = text
    sign = 1
    if s.startswith("-"):
        sign, s = -1, s[1:]
    elif s.startswith("+"):
        s = s[1:]
    if s.endswith("\n"):  # kstrto* accept one trailing newline
        s = s[:-1]
    if not s or not s.isascii() or not s.isdigit():
        raise KeyFormatError(f"encrypted key: key length {text!r} is not a decimal number")
    value = sign * int(s)
    if not MIN_DATA_SIZE <= value <= MAX_DATA_SIZE:
        raise KeyFormatError(
            f"encrypted key: key length {value} is outside {MIN_DATA_SIZE}..{MAX_DATA_SIZE}")
    return value


def check_master_desc(master_desc: str, orig_desc: str | None = None) -> None:
    """``valid_master_desc``: ``user:NAME`` or ``trusted:NAME``; an update keeps the prefix."""
    if master_desc.startswith(KEY_TRUSTED_PREFIX):
        prefix = KEY_TRUSTED_PREFIX
    elif master_desc.startswith(KEY_USER_PREFIX):
        prefix = KEY_USER_PREFIX
    else:
        raise KeyFormatError(
            f"encrypted key: master key {master_desc!r} must be 'user:NAME' or 'trusted:NAME'")
    if len(master_desc) == len(prefix):
        raise KeyFormatError(f"encrypted key: master key {master_desc!r} has no name")
    if orig_desc is not None and not orig_desc.startswith(prefix):
        raise KeyFormatError(
            f"encrypted key: update may change the master key's name, not its type "
            f"({orig_desc.split(':', 1)[0]}: to {prefix})")


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise KeyFormatError(
            f"encrypted key: unknown format {fmt!r} (one of {', '.join(FORMATS)})")


def check_ecryptfs_desc(description: str) -> None:
    """``valid_ecryptfs_desc``: exactly 16 hexadecimal characters."""
    if len(description) != KEY_ECRYPTFS_DESC_LEN:
        raise KeyFormatError(
            f"encrypted key {description!r}: an ecryptfs key's description must be "
            f"{KEY_ECRYPTFS_DESC_LEN} hexadecimal characters long")
    if not set(description) <= _HEX_DIGITS:
        raise KeyFormatError(
            f"encrypted key {description!r}: an ecryptfs key's description must contain "
            f"only hexadecimal characters")


def check_length_rules(fmt: str | None, decrypted_datalen: int) -> None:
    """The per-format lengths of ``encrypted_key_alloc`` (range already checked)."""
    if fmt == FORMAT_ECRYPTFS and decrypted_datalen != ECRYPTFS_MAX_KEY_BYTES:
        raise KeyFormatError(
            f"encrypted key: the ecryptfs format needs a key length of "
            f"{ECRYPTFS_MAX_KEY_BYTES} bytes, not {decrypted_datalen}")
    if fmt == FORMAT_ENC32 and decrypted_datalen != KEY_ENC32_PAYLOAD_LEN:
        raise KeyFormatError(
            f"encrypted key: the enc32 format needs a key length of "
            f"{KEY_ENC32_PAYLOAD_LEN} bytes, not {decrypted_datalen}")


def _check_master_supported(master_desc: str) -> None:
    if master_desc.startswith(KEY_TRUSTED_PREFIX):
        raise KeyNotSupportedError(
            f"encrypted key: master key {master_desc!r} is a trusted key: trusted keys need "
            f"a TPM, not supported")


# --- the blob -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Blob:
    """One wrapped ``encrypted`` key: the fields of ``struct encrypted_key_payload``.

    ``format`` is ``None`` only for a ``load`` payload written without a format word, whose
    HMAC starts at ``master_desc``.  ``datalen`` is the decimal text as written.  Nothing
    here is secret: ``encrypted_data`` is ciphertext.
    """

    format: str | None
    master_desc: str
    datalen: str
    iv: bytes
    encrypted_data: bytes
    hmac: bytes

    def __post_init__(self) -> None:
        if self.format is not None:
            check_format(self.format)
        check_master_desc(self.master_desc)
        n = parse_datalen(self.datalen)
        check_length_rules(self.format, n)
        if len(self.iv) != IV_SIZE:
            raise KeyFormatError(f"encrypted key: IV is {len(self.iv)} bytes, not {IV_SIZE}")
        if len(self.encrypted_data) != encrypted_datalen(n):
            raise KeyFormatError(
                f"encrypted key: {len(self.encrypted_data)} bytes of encrypted data for "
                f"key length {n} (needs {encrypted_datalen(n)})")
        if len(self.hmac) != HASH_SIZE:
            raise KeyFormatError(f"encrypted key: HMAC is {len(self.hmac)} bytes, not {HASH_SIZE}")

    @property
    def decrypted_datalen(self) -> int:
        return parse_datalen(self.datalen)

    def hmac_input(self) -> bytes:
        """What ``datablob_hmac_append``/``_verify`` authenticate."""
        body = (self.master_desc.encode() + b"\0" + self.datalen.encode() + b"\0"
                + self.iv + b"\0" + self.encrypted_data)
        if self.format is None:
            return body
        return self.format.encode() + b"\0" + body

    def hex_data(self) -> str:
        return (self.iv + b"\0" + self.encrypted_data + self.hmac).hex()

    def to_text(self) -> str:
        """The blob as ``keyctl pipe`` prints it (``datablob_format``)."""
        if self.format is None:
            raise KeyFormatError("encrypted key: a blob without a format word has no keyctl "
                                 "pipe form; load it and read the key back")
        return f"{self.format} {self.master_desc} {self.datalen} {self.hex_data()}"

    def load_payload(self) -> str:
        """The ``add_key`` payload that loads this blob: ``load [<format>] ...``."""
        fmt = "" if self.format is None else self.format + " "
        return f"load {fmt}{self.master_desc} {self.datalen} {self.hex_data()}"

    @classmethod
    def from_text(cls, text: str) -> Blob:
        """Parse ``keyctl pipe`` output (one trailing newline allowed, as a file has)."""
        if text.endswith("\n"):
            text = text[:-1]
        payload = parse_payload("load " + text)
        if not isinstance(payload, LoadPayload):  # pragma: no cover - grammar guarantees it
            raise KeyFormatError("encrypted key: not a blob")
        return payload.blob()


def decode_hex_blob(fmt: str | None, master_desc: str, datalen: str, hex_blob: str) -> Blob:
    """``encrypted_key_decrypt``'s parsing of the hex part of a ``load`` payload."""
    n = parse_datalen(datalen)
    enc_len = encrypted_datalen(n)
    asciilen = (IV_SIZE + 1 + enc_len + HASH_SIZE) * 2
    if len(hex_blob) != asciilen:
        raise KeyFormatError(
            f"encrypted key: hex blob is {len(hex_blob)} characters, key length {n} "
            f"needs {asciilen}")
    iv_hex = hex_blob[: 2 * IV_SIZE]
    data_hex = hex_blob[2 * IV_SIZE + 2 : 2 * IV_SIZE + 2 + 2 * enc_len]  # skips the gap byte
    hmac_hex = hex_blob[2 * IV_SIZE + 2 + 2 * enc_len :]
    try:
        parts = [binascii.a2b_hex(p) for p in (iv_hex, data_hex, hmac_hex)]
    except (binascii.Error, ValueError):
        raise KeyFormatError("encrypted key: hex blob has a character that is not a hex digit") \
            from None
    return Blob(fmt, master_desc, datalen, parts[0], parts[1], parts[2])


# --- payload grammar -------------------------------------------------------------------------

@dataclass(frozen=True)
class NewPayload:
    """``new [format] master datalen [hex data]``; ``decrypted_data`` is hex text or None."""

    format: str | None
    master_desc: str
    datalen: str
    decrypted_data: str | None = None

    def __repr__(self) -> str:  # the hex data is key material
        data = "None" if self.decrypted_data is None else "<hidden>"
        return (f"NewPayload(format={self.format!r}, master_desc={self.master_desc!r}, "
                f"datalen={self.datalen!r}, decrypted_data={data})")


@dataclass(frozen=True)
class LoadPayload:
    """``load [format] master datalen hexblob``."""

    format: str | None
    master_desc: str
    datalen: str
    hex_blob: str

    def blob(self) -> Blob:
        return decode_hex_blob(self.format, self.master_desc, self.datalen, self.hex_blob)


@dataclass(frozen=True)
class UpdatePayload:
    """``update master``."""

    master_desc: str


def _payload_text(payload: str | bytes | bytearray | memoryview) -> str:
    if isinstance(payload, str):
        raw = payload.encode("utf-8", "surrogateescape")
    else:
        raw = bytes(payload)
    if not 0 < len(raw) <= MAX_PAYLOAD_SIZE:
        raise KeyFormatError(f"encrypted key: payload is {len(raw)} bytes "
                             f"(1..{MAX_PAYLOAD_SIZE})")
    raw = raw.split(b"\0", 1)[0]  # the kernel reads it as a C string
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyFormatError("encrypted key: payload is not UTF-8 text") from None


def parse_payload(payload: str | bytes | bytearray | memoryview, *, update: bool = False
                  ) -> NewPayload | LoadPayload | UpdatePayload:
    """``datablob_parse`` plus the checks ``encrypted_key_alloc`` makes before any crypto.

    ``update=True`` parses as the ``.update`` method does (only ``update`` allowed);
    otherwise as ``.instantiate`` (``new`` or ``load``).  Error messages never repeat the
    data or blob tokens.
    """
    fields = _TOKEN_SEP.split(_payload_text(payload))

    def field(i: int) -> str | None:
        return fields[i] if i < len(fields) else None

    keyword = fields[0]
    if keyword not in ("new", "load", "update"):
        raise KeyFormatError(f"encrypted key: unknown command {keyword!r} "
                             f"(new, load or update)")
    p = field(1)
    if p is None:
        raise KeyFormatError(f"encrypted key: {keyword}: missing parameters")
    if p in FORMATS:
        fmt: str | None = p
        master_desc = field(2)
        i = 3
    else:
        fmt, master_desc, i = None, p, 2
    if master_desc is None:
        raise KeyFormatError(f"encrypted key: {keyword}: master key parameter is missing")
    if fmt is None and ":" not in master_desc:
        # datablob_parse takes an unknown format word for the master key; say both.  A long
        # token may be misplaced key data: it is not repeated whole.
        shown = master_desc if len(master_desc) <= 24 else master_desc[:8] + "..."
        raise KeyFormatError(f"encrypted key: {shown!r} is neither a format "
                             f"({', '.join(FORMATS)}) nor a master key (user:NAME)")
    check_master_desc(master_desc)

    if keyword == "update":
        if not update:
            raise KeyFormatError("encrypted key: 'update' is for an existing key, not a new one")
        return UpdatePayload(master_desc)
    if update:
        raise KeyFormatError(f"encrypted key: {keyword!r} is not allowed in an update "
                             f"(only 'update user:NAME')")

    datalen = field(i)
    if datalen is None:
        raise KeyFormatError(f"encrypted key: {keyword}: key length is missing")
    n = parse_datalen(datalen)
    check_length_rules(fmt, n)
    if keyword == "new":
        data = field(i + 1)
        if data is not None:
            if len(data) != 2 * n:
                raise KeyFormatError(
                    f"encrypted key: provided data is {len(data)} hex characters, key length "
                    f"{n} needs {2 * n}")
            if not set(data) <= _HEX_DIGITS:
                raise KeyFormatError("encrypted key: provided data must contain only "
                                     "hexadecimal characters")
        return NewPayload(fmt, master_desc, datalen, data)
    hex_blob = field(i + 1)
    if hex_blob is None:
        raise KeyFormatError("encrypted key: load: hex blob is missing")
    blob = decode_hex_blob(fmt, master_desc, datalen, hex_blob)
    del blob  # syntax checked here; LoadPayload.blob() decodes again on use
    return LoadPayload(fmt, master_desc, datalen, hex_blob)


# --- wrap and unwrap --------------------------------------------------------------------------

def wrap(decrypted_data: BytesLike, *, master_key: BytesLike, master_desc: str,
         fmt: str | None, datalen: str, iv: bytes) -> Blob:
    """Encrypt and authenticate as ``encrypted_read`` does (``derived_key_encrypt`` then
    ``datablob_hmac_append``).  ``fmt=None`` makes the format-less blob of old kernels."""
    _check_master_supported(master_desc)
    n = parse_datalen(datalen)
    data = _view(decrypted_data)
    if len(data) != n:
        raise KeyFormatError(f"encrypted key: {len(data)} bytes of key data for key length {n}")
    if len(iv) != IV_SIZE:
        raise KeyFormatError(f"encrypted key: IV is {len(iv)} bytes, not {IV_SIZE}")
    padded = bytearray(encrypted_datalen(n))
    padded[:n] = data
    enc_key = bytearray(derive_key("ENC_KEY", master_key))
    try:
        encryptor = _cbc(bytes(enc_key), bytes(iv)).encryptor()
        encrypted_data = encryptor.update(bytes(padded)) + encryptor.finalize()
    finally:
        padded[:] = bytes(len(padded))
        enc_key[:] = bytes(HASH_SIZE)
    unsigned = Blob(fmt, master_desc, datalen, bytes(iv), encrypted_data, bytes(HASH_SIZE))
    auth_key = derive_key("AUTH_KEY", master_key)
    digest = _hmac.new(auth_key, unsigned.hmac_input(), hashlib.sha256).digest()
    return Blob(fmt, master_desc, datalen, bytes(iv), encrypted_data, digest)


def unwrap(blob: Blob, master_key: BytesLike, *, what: str = "encrypted key") -> SecretBytes:
    """Verify the HMAC (constant time) and decrypt (``encrypted_key_decrypt``).

    Raises :class:`KeyAuthError` when the HMAC does not match: a wrong master key or a
    blob altered anywhere, the text fields included.  ``what`` names the key in messages.
    """
    _check_master_supported(blob.master_desc)
    auth_key = derive_key("AUTH_KEY", master_key)
    digest = _hmac.new(auth_key, blob.hmac_input(), hashlib.sha256).digest()
    if not _hmac.compare_digest(digest, blob.hmac):
        raise KeyAuthError(f"{what}: HMAC check failed: wrong master key {blob.master_desc} "
                           f"or an altered blob")
    enc_key = bytearray(derive_key("ENC_KEY", master_key))
    try:
        decryptor = _cbc(bytes(enc_key), blob.iv).decryptor()
        padded = bytearray(decryptor.update(blob.encrypted_data) + decryptor.finalize())
    finally:
        enc_key[:] = bytes(HASH_SIZE)
    try:
        return SecretBytes(memoryview(padded)[: blob.decrypted_datalen])
    finally:
        padded[:] = bytes(len(padded))
