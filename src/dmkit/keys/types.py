"""The key types: ``user``, ``logon``, ``encrypted``; ``trusted`` is refused (it needs a TPM).

Kernel: security/keys/user_defined.c (``user``, ``logon``: 1..32767 payload bytes; a
``logon`` description is ``prefix:rest`` and the type has no read method), and
security/keys/encrypted-keys/encrypted.c (``encrypted``; the blob is in
:mod:`dmkit.keys.encrypted`).

Keys are validated when built and immutable: an update makes a new key object.  The key
bytes live in :class:`~dmkit.keys.secret.SecretBytes` and are wiped by :meth:`Key.wipe`.
Nothing here looks keys up: an ``encrypted`` key is given a *master lookup*, a callable
from ``"user:NAME"`` to the master key's bytes, by its keyring.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable, ClassVar

from .errors import KeyAccessError, KeyFormatError, KeyNotSupportedError
from .secret import SecretBytes

if TYPE_CHECKING:
    from .encrypted import Blob


def _enc():
    """:mod:`.encrypted`, loaded when an ``encrypted`` key is first made or read: it
    imports the cipher library, which ``user`` and ``logon`` keys do not need."""
    from . import encrypted
    return encrypted

__all__ = [
    "KEY_MAX_DESC_SIZE",
    "USER_MAX_PAYLOAD",
    "KEY_TYPES",
    "Key",
    "UserKey",
    "LogonKey",
    "EncryptedKey",
    "MasterLookup",
    "check_description",
    "refuse_trusted",
]

#: ``KEY_MAX_DESC_SIZE`` counts the NUL: 4095 bytes of description at most
KEY_MAX_DESC_SIZE = 4096
#: ``user_preparse``: 1..32767 bytes
USER_MAX_PAYLOAD = 32767
#: the types a dmkit keyring holds
KEY_TYPES = ("user", "logon", "encrypted")

#: from a master description (``user:kmk``) to that key's bytes
MasterLookup = Callable[[str], SecretBytes]
#: ``rng(n)`` returns ``n`` random bytes
Rng = Callable[[int], bytes]


def check_description(key_type: str, description: str) -> None:
    """What ``add_key`` requires of every description: non-empty text, no NUL, < 4096 bytes."""
    if not isinstance(description, str) or not description:
        raise KeyFormatError(f"{key_type} key: the description is empty")
    if "\0" in description:
        raise KeyFormatError(f"{key_type} key: the description contains a NUL")
    if len(description.encode("utf-8", "surrogateescape")) >= KEY_MAX_DESC_SIZE:
        raise KeyFormatError(f"{key_type} key: the description is longer than "
                             f"{KEY_MAX_DESC_SIZE - 1} bytes")


def refuse_trusted(description: str = "") -> KeyNotSupportedError:
    """The error for any use of the ``trusted`` type."""
    name = f" {description!r}" if description else ""
    return KeyNotSupportedError(f"trusted key{name}: trusted keys need a TPM, not supported")


class Key:
    """One key: a type, a description and a payload.  Subclasses fix the type's rules."""

    type: ClassVar[str] = ""
    #: whether the payload (or, for ``encrypted``, the blob) may be read back
    readable: ClassVar[bool] = True

    __slots__ = ("description",)

    description: str

    def wipe(self) -> None:
        raise NotImplementedError

    def info(self) -> dict:
        """What may be shown about the key: never its bytes."""
        return {"type": self.type, "description": self.description}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description!r}>"


class UserKey(Key):
    """``user``: an arbitrary payload of 1..32767 bytes that may be read back."""

    type = "user"
    __slots__ = ("_payload",)

    def __init__(self, description: str, payload: bytes | bytearray | memoryview | SecretBytes):
        check_description(self.type, description)
        self._check_description(description)
        if not 1 <= len(payload) <= USER_MAX_PAYLOAD:
            raise KeyFormatError(f"{self.type} key {description!r}: payload is {len(payload)} "
                                 f"bytes (1..{USER_MAX_PAYLOAD})")
        self.description = description
        self._payload = SecretBytes(payload)

    @classmethod
    def _check_description(cls, description: str) -> None:
        pass

    def __len__(self) -> int:
        return len(self._payload)

    def read(self) -> bytes:
        """The payload, as ``keyctl read``/``pipe`` give it."""
        return self._payload.reveal()

    def material(self) -> SecretBytes:
        """The bytes a target uses: a copy its owner wipes."""
        return SecretBytes(self._payload)

    def info(self) -> dict:
        return {**super().info(), "length": len(self._payload)}

    def wipe(self) -> None:
        self._payload.wipe()


class LogonKey(UserKey):
    """``logon``: like ``user`` but never readable back; the description is ``prefix:name``."""

    type = "logon"
    readable = False
    __slots__ = ()

    @classmethod
    def _check_description(cls, description: str) -> None:
        # logon_vet_description: a ':' that is not the first character
        if description.find(":") <= 0:
            raise KeyFormatError(f"logon key {description!r}: the description must be "
                                 f"'prefix:name' (e.g. 'dmkit:{description}')")

    def read(self) -> bytes:
        raise KeyAccessError(f"logon key {self.description!r} cannot be read back: logon keys "
                             f"are only for targets")


class EncryptedKey(Key):
    """``encrypted``: random (or given) bytes that leave the keyring only wrapped.

    Either *open* (the decrypted data is here) or *sealed* (only a blob is here, not yet
    verified; a store holds keys this way until their master key is needed).  Reading an
    encrypted key gives its blob wrapped by the current master key, as ``keyctl pipe``.
    """

    type = "encrypted"
    __slots__ = ("format", "master_desc", "datalen", "iv", "_data", "_sealed")

    def __init__(self, description: str, *, format: str, master_desc: str, datalen: str,
                 iv: bytes, decrypted_data: SecretBytes | None = None,
                 sealed: Blob | None = None):
        """Low level; use :meth:`new`, :meth:`instantiate` or :meth:`from_blob`."""
        enc = _enc()
        check_description(self.type, description)
        enc.check_format(format)
        if format == enc.FORMAT_ECRYPTFS:
            enc.check_ecryptfs_desc(description)
        enc.check_master_desc(master_desc)
        if master_desc.startswith(enc.KEY_TRUSTED_PREFIX):
            raise KeyNotSupportedError(
                f"encrypted key {description!r}: master key {master_desc!r} is a trusted key: "
                f"trusted keys need a TPM, not supported")
        n = enc.parse_datalen(datalen)
        enc.check_length_rules(format, n)
        if len(iv) != enc.IV_SIZE:
            raise KeyFormatError(f"encrypted key {description!r}: IV is {len(iv)} bytes")
        if (decrypted_data is None) == (sealed is None):
            raise ValueError("an encrypted key is either open (decrypted_data) or sealed (blob)")
        if decrypted_data is not None and len(decrypted_data) != n:
            raise KeyFormatError(f"encrypted key {description!r}: {len(decrypted_data)} bytes "
                                 f"of data for key length {n}")
        self.description = description
        self.format = format
        self.master_desc = master_desc
        self.datalen = datalen
        self.iv = bytes(iv)
        self._data = decrypted_data
        self._sealed = sealed

    # --- construction ----------------------------------------------------------------------

    @classmethod
    def new(cls, description: str, master_desc: str, length: int, *,
            format: str = "default", rng: Rng = os.urandom,
            decrypted_data: bytes | SecretBytes | None = None) -> EncryptedKey:
        """``new [format] master length``: random data and IV drawn from ``rng``.

        ``decrypted_data`` gives the data instead (the kernel's ``new ... <hex>`` form, or
        a test that needs a known key); the IV is still drawn from ``rng``.
        """
        enc = _enc()
        datalen = str(length)
        n = enc.parse_datalen(datalen)
        enc.check_format(format)
        enc.check_length_rules(format, n)
        iv = rng(enc.IV_SIZE)
        if decrypted_data is None:
            data = SecretBytes(rng(n))
        else:
            data = SecretBytes(decrypted_data)
        return cls(description, format=format, master_desc=master_desc, datalen=datalen,
                   iv=iv, decrypted_data=data)

    @classmethod
    def from_blob(cls, description: str, blob: Blob | str,
                  master: MasterLookup | None = None) -> EncryptedKey:
        """A key from its blob: verified and open with ``master``, sealed without."""
        enc = _enc()
        if isinstance(blob, str):
            blob = enc.Blob.from_text(blob)
        fmt = blob.format or enc.FORMAT_DEFAULT
        if master is None:
            if blob.format is None:
                raise KeyFormatError(f"encrypted key {description!r}: a blob without a format "
                                     f"word must be verified when it is loaded")
            return cls(description, format=fmt, master_desc=blob.master_desc,
                       datalen=blob.datalen, iv=blob.iv, sealed=blob)
        # check what the kernel checks before it looks for the master
        cls(description, format=fmt, master_desc=blob.master_desc, datalen=blob.datalen,
            iv=blob.iv, sealed=blob)
        data = enc.unwrap(blob, master(blob.master_desc), what=f"encrypted key {description!r}")
        return cls(description, format=fmt, master_desc=blob.master_desc,
                   datalen=blob.datalen, iv=blob.iv, decrypted_data=data)

    @classmethod
    def instantiate(cls, description: str, payload: str | bytes, master: MasterLookup, *,
                    rng: Rng = os.urandom, allow_user_decrypted_data: bool = False
                    ) -> EncryptedKey:
        """``add_key("encrypted", description, payload)``: ``new ...`` or ``load ...``.

        ``allow_user_decrypted_data`` is the kernel's ``CONFIG_USER_DECRYPTED_DATA`` (off by
        default there, and here): whether ``new ... <hex data>`` is accepted.
        """
        enc = _enc()
        p = enc.parse_payload(payload)
        if isinstance(p, enc.NewPayload):
            fmt = p.format or enc.FORMAT_DEFAULT
            given = None
            if p.decrypted_data is not None:
                if not allow_user_decrypted_data:
                    raise KeyFormatError(
                        "encrypted key: new keys from provided data are disabled (the "
                        "kernel's CONFIG_USER_DECRYPTED_DATA is off by default)")
                given = SecretBytes(bytes.fromhex(p.decrypted_data))
            n = enc.parse_datalen(p.datalen)
            iv = rng(enc.IV_SIZE)
            data = given if given is not None else SecretBytes(rng(n))
            # the length text stays as written ("032"): the HMAC covers it
            return cls(description, format=fmt, master_desc=p.master_desc, datalen=p.datalen,
                       iv=iv, decrypted_data=data)
        assert isinstance(p, enc.LoadPayload)
        return cls.from_blob(description, p.blob(), master)

    # --- use ----------------------------------------------------------------------------------

    @property
    def sealed(self) -> bool:
        return self._data is None

    @property
    def decrypted_datalen(self) -> int:
        return _enc().parse_datalen(self.datalen)

    def unseal(self, master: MasterLookup) -> EncryptedKey:
        """The open key, verified with its master (itself if already open)."""
        if self._sealed is None:
            return self
        return EncryptedKey.from_blob(self.description, self._sealed, master)

    def material(self, master: MasterLookup | None = None) -> SecretBytes:
        """The decrypted data a target uses (a copy its owner wipes)."""
        if self._data is None:
            if master is None:
                raise KeyAccessError(f"encrypted key {self.description!r} is sealed: its "
                                     f"master key {self.master_desc} is needed")
            opened = self.unseal(master)
            try:
                return opened.material()
            finally:
                opened.wipe()
        return SecretBytes(self._data)

    def blob(self, master: MasterLookup) -> Blob:
        """The blob wrapped by the current master, as ``encrypted_read`` makes it."""
        enc = _enc()
        if self._data is None:
            opened = self.unseal(master)
            try:
                return opened.blob(master)
            finally:
                opened.wipe()
        return enc.wrap(self._data, master_key=master(self.master_desc),
                        master_desc=self.master_desc, fmt=self.format, datalen=self.datalen,
                        iv=self.iv)

    def read(self, master: MasterLookup) -> bytes:
        """``keyctl read``/``pipe``: the blob text."""
        return self.blob(master).to_text().encode()

    def sealed_blob(self) -> Blob | None:
        """The unverified blob a sealed key was built from (``None`` when open)."""
        return self._sealed

    def update(self, payload: str, master: MasterLookup | None = None) -> EncryptedKey:
        """``keyctl update KEY "update user:NEW"``: same data and IV, another master.

        Like the kernel, the new master need not exist yet: it is needed when the key is
        next read.  A sealed key is opened first with its current master.
        """
        enc = _enc()
        p = enc.parse_payload(payload, update=True)
        assert isinstance(p, enc.UpdatePayload)
        enc.check_master_desc(p.master_desc, self.master_desc)
        opened = self
        if self._data is None:
            if master is None:
                raise KeyAccessError(f"encrypted key {self.description!r} is sealed: its "
                                     f"master key {self.master_desc} is needed to update it")
            opened = self.unseal(master)
        return EncryptedKey(self.description, format=self.format, master_desc=p.master_desc,
                            datalen=self.datalen, iv=self.iv,
                            decrypted_data=SecretBytes(opened._data))

    def info(self) -> dict:
        return {**super().info(), "length": self.decrypted_datalen, "format": self.format,
                "master": self.master_desc, "sealed": self.sealed}

    def wipe(self) -> None:
        if self._data is not None:
            self._data.wipe()
