"""A bridge to the Linux kernel keyring: ``add_key``, ``request_key`` and ``keyctl`` via ctypes.

Kernel: Documentation/security/keys/core.rst (the system calls and their errors),
include/uapi/linux/keyctl.h (command numbers, special keyring ids); keyctl(1) and
keyctl(2) name the same operations.  No libkeyutils is needed: the system calls are made
through libc's ``syscall(2)`` with the architecture's numbers.

The kernel does the work it alone can do (it keeps ``logon`` payloads and the decrypted
data of ``encrypted`` keys to itself); dmkit reads what userspace may read: ``user``
payloads and ``encrypted`` blobs, and unwraps a blob itself with a ``user`` master key
read from the kernel when a target needs the key (:meth:`KernelKeyring.material`).
"""

from __future__ import annotations

import ctypes
import errno as _errno
import logging
import os
import platform
from dataclasses import dataclass

from . import encrypted as enc
from .encrypted import Blob
from .errors import (KernelKeyringError, KeyAccessError, KeyFormatError, KeyNotFoundError,
                     KeyNotSupportedError, KeyRevokedError)
from .keyring import KeyInfo
from .secret import SecretBytes
from .types import refuse_trusted

__all__ = [
    "KEY_SPEC_THREAD_KEYRING",
    "KEY_SPEC_PROCESS_KEYRING",
    "KEY_SPEC_SESSION_KEYRING",
    "KEY_SPEC_USER_KEYRING",
    "KEY_SPEC_USER_SESSION_KEYRING",
    "KernelKeyDescription",
    "KernelKeyring",
    "kernel_keyring_status",
    "parse_keyring_spec",
]

log = logging.getLogger("dmkit.keys")

# include/uapi/linux/keyctl.h
KEY_SPEC_THREAD_KEYRING = -1
KEY_SPEC_PROCESS_KEYRING = -2
KEY_SPEC_SESSION_KEYRING = -3
KEY_SPEC_USER_KEYRING = -4
KEY_SPEC_USER_SESSION_KEYRING = -5

KEYCTL_GET_KEYRING_ID = 0
KEYCTL_JOIN_SESSION_KEYRING = 1
KEYCTL_UPDATE = 2
KEYCTL_REVOKE = 3
KEYCTL_DESCRIBE = 6
KEYCTL_CLEAR = 7
KEYCTL_LINK = 8
KEYCTL_UNLINK = 9
KEYCTL_SEARCH = 10
KEYCTL_READ = 11

_SPECS = {"@t": KEY_SPEC_THREAD_KEYRING, "@p": KEY_SPEC_PROCESS_KEYRING,
          "@s": KEY_SPEC_SESSION_KEYRING, "@u": KEY_SPEC_USER_KEYRING,
          "@us": KEY_SPEC_USER_SESSION_KEYRING}

# (add_key, request_key, keyctl) per architecture (arch/*/entry/syscalls, asm-generic)
_SYSCALLS = {
    "x86_64": (248, 249, 250),
    "i386": (286, 287, 288), "i486": (286, 287, 288), "i586": (286, 287, 288),
    "i686": (286, 287, 288),
    "aarch64": (217, 218, 219), "arm64": (217, 218, 219), "riscv64": (217, 218, 219),
    "loongarch64": (217, 218, 219),
    "armv7l": (309, 310, 311), "armv6l": (309, 310, 311),
}


def parse_keyring_spec(text: str) -> int:
    """``@s``, ``@u``, ``@p``, ``@t``, ``@us`` or a serial number, as keyctl(1) takes them."""
    if text in _SPECS:
        return _SPECS[text]
    try:
        return int(text, 0)
    except ValueError:
        raise KeyFormatError(f"kernel keyring {text!r}: not @s, @u, @p, @t, @us or a serial") \
            from None


@dataclass(frozen=True)
class KernelKeyDescription:
    """``KEYCTL_DESCRIBE``: ``type;uid;gid;perm;description``."""

    type: str
    uid: int
    gid: int
    perm: int
    description: str


class _Syscalls:
    def __init__(self) -> None:
        machine = platform.machine()
        nrs = _SYSCALLS.get(machine)
        if nrs is None:
            raise KernelKeyringError(f"kernel keyring: system call numbers for {machine} are "
                                     f"not known to dmkit", errno=_errno.ENOSYS)
        self.nr_add_key, self.nr_request_key, self.nr_keyctl = nrs
        libc = ctypes.CDLL(None, use_errno=True)
        self._syscall = libc.syscall
        self._syscall.restype = ctypes.c_long

    def call(self, nr: int, *args) -> int:
        conv = []
        for a in args:
            if a is None or isinstance(a, (bytes, ctypes.Array)):
                conv.append(a)
            else:
                conv.append(ctypes.c_long(a))  # varargs: pass full-width integers
        ctypes.set_errno(0)
        ret = self._syscall(ctypes.c_long(nr), *conv)
        if ret == -1:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        return ret


_sys: _Syscalls | None = None


def _syscalls() -> _Syscalls:
    global _sys
    if _sys is None:
        _sys = _Syscalls()
    return _sys


def _c(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def kernel_keyring_status() -> tuple[bool, str]:
    """Whether this process can use the kernel keyring, and if not, why (one line)."""
    try:
        sc = _syscalls()
        sc.call(sc.nr_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0)
    except KernelKeyringError as e:
        return False, str(e)
    except OSError as e:
        if e.errno == _errno.ENOSYS:
            return False, "the kernel has no keyring (built without CONFIG_KEYS)"
        if e.errno in (_errno.EPERM, _errno.EACCES):
            return False, (f"keyctl system calls are blocked here ({os.strerror(e.errno)}; "
                           f"a seccomp filter, as container runtimes install by default)")
        if e.errno != _errno.ENOKEY:  # ENOKEY: no session keyring yet, which is fine
            return False, f"keyctl failed: {os.strerror(e.errno)}"
    return True, "kernel keyring available"


class KernelKeyring:
    """The kernel keyring seen from this process; adds go to ``keyring`` (default ``@s``).

    Errors carry the kernel's errno; ``ENOKEY`` becomes
    :class:`~dmkit.keys.errors.KeyNotFoundError`, ``EKEYREVOKED``
    :class:`~dmkit.keys.errors.KeyRevokedError`, a read the type forbids
    :class:`~dmkit.keys.errors.KeyAccessError`.
    """

    def __init__(self, keyring: int | str = KEY_SPEC_SESSION_KEYRING):
        self.keyring = parse_keyring_spec(keyring) if isinstance(keyring, str) else keyring
        self._sc = _syscalls()

    def __repr__(self) -> str:
        return f"KernelKeyring({self.keyring})"

    def _fail(self, e: OSError, what: str) -> Exception:
        n = e.errno or _errno.EIO
        msg = f"kernel keyring: {what}: {os.strerror(n)}"
        if n == _errno.ENOKEY:
            return KeyNotFoundError(f"kernel keyring: {what}: not found", errno=n)
        if n == _errno.EKEYREVOKED:
            return KeyRevokedError(msg, errno=n)
        if n == _errno.ENOSYS:
            return KernelKeyringError(f"kernel keyring: {what}: the kernel has no keyring "
                                      f"(CONFIG_KEYS)", errno=n)
        return KernelKeyringError(msg, errno=n)

    def _keyctl(self, what: str, cmd: int, *args) -> int:
        try:
            return self._sc.call(self._sc.nr_keyctl, cmd, *args)
        except OSError as e:
            raise self._fail(e, what) from None

    # --- the system calls ---------------------------------------------------------------------

    def add(self, key_type: str, description: str, payload: bytes | str,
            keyring: int | None = None) -> int:
        """``add_key``: a new key, or an update of the key of that type and description."""
        if key_type == "trusted":
            raise refuse_trusted(description)
        data = _c(payload) if isinstance(payload, str) else bytes(payload)
        dest = self.keyring if keyring is None else keyring
        what = f"add {key_type} key {description!r}"
        try:
            serial = self._sc.call(self._sc.nr_add_key, _c(key_type), _c(description),
                                   data or None, len(data), dest)
        except OSError as e:
            if e.errno == _errno.ENODEV:
                raise KeyNotSupportedError(f"kernel keyring: {what}: this kernel has no "
                                           f"{key_type!r} key type", errno=e.errno) from None
            if e.errno == _errno.EINVAL and key_type == "encrypted":
                raise KeyFormatError(
                    f"kernel keyring: {what}: refused by the kernel (bad HMAC, wrong master "
                    f"key, or a payload it does not accept; dmesg says which)") from None
            raise self._fail(e, what) from None
        log.debug("kernel: added %s key %r (serial %d)", key_type, description, serial)
        return serial

    def request(self, key_type: str, description: str) -> int:
        """``request_key`` without a callout: the search the kernel itself makes for a
        master key (thread, process, then session keyring, and keyrings linked there)."""
        try:
            return self._sc.call(self._sc.nr_request_key, _c(key_type), _c(description),
                                 None, 0)
        except OSError as e:
            raise self._fail(e, f"{key_type} key {description!r}") from None

    def search(self, key_type: str, description: str, keyring: int | None = None) -> int:
        """``KEYCTL_SEARCH`` in ``keyring`` (default: this bridge's) and keyrings it links."""
        ring = self.keyring if keyring is None else keyring
        return self._keyctl(f"{key_type} key {description!r}", KEYCTL_SEARCH, ring,
                            _c(key_type), _c(description), 0)

    def find(self, key_type: str, description: str, keyring: int | None = None) -> int | None:
        try:
            return self.search(key_type, description, keyring)
        except KeyNotFoundError:
            return None

    def read(self, serial: int) -> bytes:
        """``KEYCTL_READ``: a user payload, an encrypted key's blob, a keyring's serials."""
        what = f"read key {serial}"
        size = 0
        while True:
            buf = ctypes.create_string_buffer(max(size, 1))
            try:
                n = self._keyctl(what, KEYCTL_READ, serial, buf if size else None, size)
                if n <= size:
                    return buf.raw[:n]
                size = n
            except KernelKeyringError as e:
                if e.errno == _errno.EOPNOTSUPP:
                    raise KeyAccessError(f"kernel keyring: key {serial} cannot be read "
                                         f"(its type keeps the payload in the kernel)",
                                         errno=e.errno) from None
                raise
            finally:
                ctypes.memset(buf, 0, len(buf))

    def update(self, serial: int, payload: bytes | str) -> None:
        """``KEYCTL_UPDATE``."""
        data = _c(payload) if isinstance(payload, str) else bytes(payload)
        self._keyctl(f"update key {serial}", KEYCTL_UPDATE, serial, data or None, len(data))

    def revoke(self, serial: int) -> None:
        self._keyctl(f"revoke key {serial}", KEYCTL_REVOKE, serial)

    def unlink(self, serial: int, keyring: int | None = None) -> None:
        """``KEYCTL_UNLINK`` from ``keyring`` (default: this bridge's)."""
        ring = self.keyring if keyring is None else keyring
        self._keyctl(f"unlink key {serial}", KEYCTL_UNLINK, serial, ring)

    def link(self, serial: int, keyring: int) -> None:
        self._keyctl(f"link key {serial}", KEYCTL_LINK, serial, keyring)

    def clear(self, keyring: int) -> None:
        self._keyctl(f"clear keyring {keyring}", KEYCTL_CLEAR, keyring)

    def keyring_id(self, spec: int | str, create: bool = False) -> int:
        """``KEYCTL_GET_KEYRING_ID``: the serial behind ``@s`` and the like."""
        ring = parse_keyring_spec(spec) if isinstance(spec, str) else spec
        return self._keyctl(f"keyring {spec}", KEYCTL_GET_KEYRING_ID, ring, int(create))

    def join_session(self, name: str | None = None) -> int:
        """``KEYCTL_JOIN_SESSION_KEYRING``: a new anonymous (or named) session keyring."""
        return self._keyctl("join session keyring", KEYCTL_JOIN_SESSION_KEYRING,
                            None if name is None else _c(name))

    def describe(self, serial: int) -> KernelKeyDescription:
        buf = ctypes.create_string_buffer(4200)
        n = self._keyctl(f"describe key {serial}", KEYCTL_DESCRIBE, serial, buf, len(buf))
        text = buf.raw[: max(n - 1, 0)].decode("utf-8", "surrogateescape")
        t, uid, gid, perm, desc = text.split(";", 4)
        return KernelKeyDescription(t, int(uid), int(gid), int(perm, 16), desc)

    def keyring_ids(self, keyring: int | None = None) -> list[int]:
        """The serials linked in ``keyring`` (default: this bridge's)."""
        ring = self.keyring if keyring is None else keyring
        raw = self.read(ring)
        return list(memoryview(raw).cast("i")) if raw else []

    # --- dmkit's view ----------------------------------------------------------------------------

    def list_keys(self, keyring: int | None = None) -> list[KeyInfo]:
        """The keys linked in ``keyring``, described (never read)."""
        out = []
        for serial in self.keyring_ids(keyring):
            try:
                d = self.describe(serial)
            except (KernelKeyringError, KeyNotFoundError, KeyRevokedError):
                continue  # gone, or not ours to view
            out.append(KeyInfo(serial, d.type, d.description, None))
        return out

    def master_key(self, master_desc: str) -> SecretBytes:
        """The ``user`` master key the kernel would use for an ``encrypted`` key."""
        kind, _, name = master_desc.partition(":")
        if kind == "trusted":
            raise refuse_trusted(name)
        if kind != "user" or not name:
            raise KeyFormatError(f"master key {master_desc!r} must be 'user:NAME'")
        return self.material("user", name)

    def material(self, key_type: str, description: str) -> SecretBytes:
        """Key bytes for a target, from the kernel keyring.

        ``user``: the payload.  ``encrypted``: the blob the kernel gives, unwrapped here
        with the ``user`` master key read from the kernel.  ``logon`` payloads never leave
        the kernel: :class:`~dmkit.keys.errors.KeyAccessError`.
        """
        if key_type == "trusted":
            raise refuse_trusted(description)
        if key_type not in ("user", "logon", "encrypted"):
            raise KeyFormatError(f"key type {key_type!r} is not supported")
        serial = self.request(key_type, description)
        if key_type == "logon":
            raise KeyAccessError(f"kernel keyring: logon key {description!r} cannot be read "
                                 f"from userspace; only the kernel's own targets can use it")
        raw = self.read(serial)
        if key_type == "user":
            try:
                return SecretBytes(raw)
            finally:
                del raw
        blob = Blob.from_text(raw.decode("ascii"))
        master = self.master_key(blob.master_desc)
        try:
            return enc.unwrap(blob, master, what=f"encrypted key {description!r}")
        finally:
            master.wipe()
