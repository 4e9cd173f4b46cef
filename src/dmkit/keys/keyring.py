"""An in-process keyring: the kernel keyring's operations on keys that live in dmkit.

The operations and their failures are the kernel's (Documentation/security/keys/core.rst,
keyctl(1)): ``add`` is ``add_key``, ``search`` is ``KEYCTL_SEARCH`` by type and
description, ``read`` is ``KEYCTL_READ`` (a ``user`` payload, an ``encrypted`` key's blob,
never a ``logon`` payload), ``update``, ``revoke`` and ``unlink`` likewise.  Master keys of
``encrypted`` keys are found as the kernel finds them: a ``user`` key of that description,
here first, then in the ``fallback`` source (the kernel keyring, through
:class:`~dmkit.keys.kernel.KernelKeyring`).

Targets get key bytes through :meth:`Keyring.material`, the one way to a ``logon`` key's
payload or an ``encrypted`` key's decrypted data; see :mod:`dmkit.keys.reference`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable, Iterator, Protocol

from .errors import (KeyExistsError, KeyFormatError, KeyNotFoundError, KeyRevokedError)
from .secret import SecretBytes
from .types import (EncryptedKey, Key, LogonKey, UserKey, check_description, refuse_trusted)

if TYPE_CHECKING:
    from .encrypted import Blob

__all__ = ["KeySource", "KeyInfo", "Keyring"]

log = logging.getLogger("dmkit.keys")


class KeySource(Protocol):
    """Anything that hands out key bytes by type and description (a keyring)."""

    def material(self, key_type: str, description: str) -> SecretBytes:
        """The bytes a target would use; raises :class:`KeyNotFoundError` if absent."""
        ...


@dataclass(frozen=True)
class KeyInfo:
    """What ``keyctl show``/``describe`` would tell about a key: never its bytes."""

    serial: int
    type: str
    description: str
    #: payload bytes (``user``/``logon``) or key length (``encrypted``); None if unknown
    length: int | None
    format: str | None = None
    master: str | None = None
    sealed: bool = False
    revoked: bool = False

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


class Keyring:
    """Keys by serial number; at most one key per (type, description), as in the kernel."""

    def __init__(self, *, rng: Callable[[int], bytes] = os.urandom,
                 fallback: KeySource | None = None, allow_user_decrypted_data: bool = False):
        self._rng = rng
        self.fallback = fallback
        self.allow_user_decrypted_data = allow_user_decrypted_data
        self._keys: dict[int, Key] = {}
        self._revoked: dict[int, tuple[str, str]] = {}
        self._next_serial = 1

    # --- adding --------------------------------------------------------------------------------

    def add(self, key_type: str, description: str, payload: bytes | str, *,
            replace: bool = False) -> int:
        """``add_key(type, description, payload)``; returns the key's serial.

        ``user``/``logon`` take the payload bytes; ``encrypted`` takes ``new ...`` or
        ``load ...`` text; ``trusted`` is refused.  An existing key of the same type and
        description is an error unless ``replace`` (then it keeps its serial, as the
        kernel's update-on-add does).
        """
        if key_type == "trusted":
            raise refuse_trusted(description)
        if key_type == "user":
            key: Key = UserKey(description, _payload_bytes(payload))
        elif key_type == "logon":
            key = LogonKey(description, _payload_bytes(payload))
        elif key_type == "encrypted":
            check_description(key_type, description)
            key = EncryptedKey.instantiate(
                description, payload, self.master_key, rng=self._rng,
                allow_user_decrypted_data=self.allow_user_decrypted_data)
        else:
            raise KeyFormatError(f"key type {key_type!r} is not supported "
                                 f"(user, logon, encrypted)")
        return self.add_key(key, replace=replace)

    def add_key(self, key: Key, *, replace: bool = False) -> int:
        """Put a built key in the keyring; returns its serial."""
        old = self.find(key.type, key.description)
        if old is not None:
            if not replace:
                raise KeyExistsError(f"{key.type} key {key.description!r} already exists")
            self._keys[old].wipe()
            self._keys[old] = key
            log.debug("replaced %s key %r (serial %d)", key.type, key.description, old)
            return old
        serial = self._next_serial
        self._next_serial += 1
        self._keys[serial] = key
        log.debug("added %s key %r (serial %d)", key.type, key.description, serial)
        return serial

    def new_encrypted(self, description: str, master_desc: str, length: int, *,
                      format: str = "default") -> int:
        """``keyctl add encrypted DESC "new [format] MASTER LENGTH"``."""
        fmt = "" if format is None else f"{format} "
        return self.add("encrypted", description, f"new {fmt}{master_desc} {length}")

    def load_encrypted(self, description: str, blob: Blob | str) -> int:
        """``keyctl add encrypted DESC "load BLOB"``: verified with the master now."""
        if isinstance(blob, str):
            from .encrypted import Blob
            blob = Blob.from_text(blob)
        key = EncryptedKey.from_blob(description, blob, self.master_key)
        return self.add_key(key)

    # --- finding ---------------------------------------------------------------------------------

    def find(self, key_type: str, description: str) -> int | None:
        """The serial of the key, or ``None`` (revoked keys included)."""
        for serial, key in self._keys.items():
            if key.type == key_type and key.description == description:
                return serial
        for serial, ident in self._revoked.items():
            if ident == (key_type, description):
                return serial
        return None

    def search(self, key_type: str, description: str) -> int:
        """``KEYCTL_SEARCH``: the serial, or :class:`KeyNotFoundError`/``KeyRevokedError``."""
        serial = self.find(key_type, description)
        if serial is None:
            raise KeyNotFoundError(f"{key_type} key {description!r} not found")
        if serial in self._revoked:
            raise KeyRevokedError(f"{key_type} key {description!r} was revoked")
        return serial

    def get(self, serial: int) -> Key:
        """The key object of ``serial``."""
        if serial in self._revoked:
            t, d = self._revoked[serial]
            raise KeyRevokedError(f"{t} key {d!r} was revoked")
        try:
            return self._keys[serial]
        except KeyError:
            raise KeyNotFoundError(f"no key with serial {serial}") from None

    def __iter__(self) -> Iterator[Key]:
        return iter(list(self._keys.values()))

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, ident: tuple[str, str]) -> bool:
        return self.find(*ident) is not None

    def list_keys(self) -> list[KeyInfo]:
        """Every key, in the order added, described without its bytes."""
        out = []
        for serial in sorted(set(self._keys) | set(self._revoked)):
            if serial in self._revoked:
                t, d = self._revoked[serial]
                out.append(KeyInfo(serial, t, d, 0, revoked=True))
                continue
            i = self._keys[serial].info()
            out.append(KeyInfo(serial, i["type"], i["description"], i["length"],
                               i.get("format"), i.get("master"), i.get("sealed", False)))
        return out

    def dependents(self, serial: int) -> list[str]:
        """Descriptions of the ``encrypted`` keys whose master is ``serial`` (a user key)."""
        key = self.get(serial)
        if key.type != "user":
            return []
        desc = "user:" + key.description
        return [k.description for k in self._keys.values()
                if isinstance(k, EncryptedKey) and k.master_desc == desc]

    # --- reading and using --------------------------------------------------------------------

    def master_key(self, master_desc: str) -> SecretBytes:
        """The master of an ``encrypted`` key: ``user:NAME`` here, else in the fallback."""
        kind, _, name = master_desc.partition(":")
        if kind == "trusted":
            raise refuse_trusted(name)
        if kind != "user" or not name:
            raise KeyFormatError(f"master key {master_desc!r} must be 'user:NAME'")
        serial = self.find("user", name)
        if serial is not None:
            key = self.get(serial)
            assert isinstance(key, UserKey)
            return key.material()
        if self.fallback is not None:
            return self.fallback.material("user", name)
        raise KeyNotFoundError(f"master key {master_desc} not found")

    def _open(self, serial: int) -> Key:
        """The key, with a sealed encrypted key verified and kept open from now on."""
        key = self.get(serial)
        if isinstance(key, EncryptedKey) and key.sealed:
            opened = key.unseal(self.master_key)
            self._keys[serial] = opened
            return opened
        return key

    def read(self, serial: int) -> bytes:
        """``KEYCTL_READ``: a ``user`` payload or an ``encrypted`` key's blob text.

        ``logon`` keys raise :class:`~dmkit.keys.errors.KeyAccessError`.
        """
        key = self.get(serial)
        if isinstance(key, EncryptedKey):
            return self._open(serial).read(self.master_key)  # type: ignore[union-attr]
        assert isinstance(key, UserKey)
        return key.read()

    def blob(self, serial: int) -> Blob:
        """The blob of an ``encrypted`` key, wrapped by its current master."""
        key = self._open(serial)
        if not isinstance(key, EncryptedKey):
            raise KeyFormatError(f"{key.type} key {key.description!r} is not an encrypted key")
        return key.blob(self.master_key)

    def material(self, key_type: str, description: str) -> SecretBytes:
        """The bytes a target uses: payload of ``user``/``logon``, data of ``encrypted``.

        Keys not here are asked of the fallback source.  The caller owns (and wipes)
        the returned copy.
        """
        if key_type == "trusted":
            raise refuse_trusted(description)
        serial = self.find(key_type, description)
        if serial is None:
            if self.fallback is not None:
                return self.fallback.material(key_type, description)
            raise KeyNotFoundError(f"{key_type} key {description!r} not found")
        key = self._open(serial)
        return key.material()  # type: ignore[attr-defined]

    # --- changing --------------------------------------------------------------------------------

    def update(self, serial: int, payload: bytes | str) -> None:
        """``KEYCTL_UPDATE``: a new payload (``user``/``logon``) or ``update user:NEW``."""
        key = self.get(serial)
        if isinstance(key, EncryptedKey):
            text = payload if isinstance(payload, str) else bytes(payload).decode()
            new: Key = key.update(text, self.master_key)
        elif isinstance(key, LogonKey):
            new = LogonKey(key.description, _payload_bytes(payload))
        else:
            new = UserKey(key.description, _payload_bytes(payload))
        key.wipe()
        self._keys[serial] = new
        log.debug("updated %s key %r (serial %d)", key.type, key.description, serial)

    def revoke(self, serial: int) -> None:
        """``KEYCTL_REVOKE``: the key is wiped; any later use says it was revoked."""
        key = self.get(serial)
        key.wipe()
        del self._keys[serial]
        self._revoked[serial] = (key.type, key.description)
        log.debug("revoked %s key %r (serial %d)", key.type, key.description, serial)

    def unlink(self, serial: int) -> None:
        """``KEYCTL_UNLINK``: the key leaves the keyring and is wiped."""
        if serial in self._revoked:
            del self._revoked[serial]
            return
        key = self._keys.pop(serial, None)
        if key is None:
            raise KeyNotFoundError(f"no key with serial {serial}")
        key.wipe()
        log.debug("unlinked %s key %r (serial %d)", key.type, key.description, serial)

    def wipe(self) -> None:
        """Wipe and drop every key."""
        for key in self._keys.values():
            key.wipe()
        self._keys.clear()
        self._revoked.clear()

    def __enter__(self) -> Keyring:
        return self

    def __exit__(self, *exc) -> None:
        self.wipe()


def _payload_bytes(payload: bytes | bytearray | memoryview | SecretBytes | str
                   ) -> bytes | SecretBytes:
    if isinstance(payload, str):
        raise KeyFormatError("a user or logon key's payload is bytes, not text")
    if isinstance(payload, SecretBytes):
        return payload
    return bytes(payload)
