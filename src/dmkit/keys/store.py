"""The keyring store: a file holding what may leave the kernel keyring, and nothing else.

That is ``user`` payloads (the user chose to store them) and ``encrypted`` keys as their
blobs, exactly as ``keyctl pipe`` prints them.  Never a ``logon`` payload, never the
decrypted data of an ``encrypted`` key.

File (UTF-8 JSON, one object)::

    {"magic": "dmkit-keyring", "version": 1,
     "keys": [{"type": "user", "description": "kmk", "payload": "<hex>"},
              {"type": "encrypted", "description": "dmkey", "blob": "default user:kmk 64 ..."}]}

Writes are atomic and durable: the new content goes to a temporary file in the same
directory (created ``0600`` with ``O_EXCL``), is ``fsync``\\ ed, renamed over the store and
the directory is ``fsync``\\ ed.  A crash at any point leaves either the old or the new store;
a temporary file a crash left behind is ignored on load and removed by the next write.
Read-modify-write cycles (:meth:`KeyStore.transaction`) hold an exclusive ``flock`` on a
lock file beside the store, so two dmkit processes never lose each other's changes.

A store readable or writable by group or others is refused: it holds keys.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import fcntl
import json
import logging
import os
import secrets
import stat
from typing import Iterator

from .encrypted import Blob
from .errors import KeyFormatError, KeyringError, KeyStoreError
from .keyring import KeySource, Keyring
from .types import EncryptedKey, LogonKey, UserKey

__all__ = ["STORE_MAGIC", "STORE_VERSION", "KeyStore", "default_store_path", "atomic_write"]

log = logging.getLogger("dmkit.keys")

STORE_MAGIC = "dmkit-keyring"
STORE_VERSION = 1
FILE_MODE = 0o600
DIR_MODE = 0o700
_TMP_INFIX = ".tmp-"


def default_store_path() -> str:
    """``$DMKIT_KEYRING``, else ``$XDG_CONFIG_HOME/dmkit/keyring.json`` (``~/.config``)."""
    env = os.environ.get("DMKIT_KEYRING")
    if env:
        return env
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "dmkit", "keyring.json")


def _tmp_prefix(path: str) -> str:
    d, name = os.path.split(path)
    return os.path.join(d, "." + name + _TMP_INFIX)


def atomic_write(path: str, data: bytes, *, mode: int = FILE_MODE) -> None:
    """Replace ``path`` with ``data``: temp file, write, fsync, rename, fsync directory.

    On failure the temporary file is removed and ``path`` is untouched.
    """
    tmp = _tmp_prefix(path) + secrets.token_hex(8)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have removed bits; never added any
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(os.path.dirname(path) or ".")


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:  # some filesystems cannot fsync a directory
        if e.errno not in (_errno.EINVAL, _errno.EBADF, _errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


class KeyStore:
    """One store file.  ``load`` and ``save`` a :class:`Keyring`, or run a transaction."""

    def __init__(self, path: str | os.PathLike[str] | None = None):
        self.path = os.fspath(path) if path is not None else default_store_path()

    def __repr__(self) -> str:
        return f"KeyStore({self.path!r})"

    # --- reading -----------------------------------------------------------------------------

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def load(self, *, fallback: KeySource | None = None, keyring: Keyring | None = None
             ) -> Keyring:
        """The keys of the store (an empty keyring if there is no file yet).

        Encrypted keys come in sealed: their blobs are checked for syntax now and verified
        with their master key when first used.
        """
        ring = keyring if keyring is not None else Keyring(fallback=fallback)
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return ring
        except OSError as e:
            raise KeyStoreError(f"keyring {self.path}: cannot open: {e.strerror}",
                                errno=e.errno) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise KeyStoreError(f"keyring {self.path}: not a regular file")
            if st.st_mode & 0o077:
                raise KeyStoreError(
                    f"keyring {self.path}: mode {stat.S_IMODE(st.st_mode):04o} lets others "
                    f"at the keys; run chmod 600 on it", errno=_errno.EACCES)
            with os.fdopen(fd, "rb", closefd=False) as f:
                raw = f.read()
        finally:
            os.close(fd)
        self._parse(raw, ring)
        return ring

    def _parse(self, raw: bytes, ring: Keyring) -> None:
        where = f"keyring {self.path}"
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise KeyStoreError(f"{where}: not a dmkit keyring (damaged or truncated: {e})",
                                errno=_errno.EINVAL) from None
        if not isinstance(doc, dict) or doc.get("magic") != STORE_MAGIC:
            raise KeyStoreError(f"{where}: not a dmkit keyring (bad magic)", errno=_errno.EINVAL)
        if doc.get("version") != STORE_VERSION:
            raise KeyStoreError(f"{where}: version {doc.get('version')!r} is not supported "
                                f"(this dmkit reads version {STORE_VERSION})",
                                errno=_errno.EINVAL)
        entries = doc.get("keys")
        if not isinstance(entries, list):
            raise KeyStoreError(f"{where}: 'keys' is not a list", errno=_errno.EINVAL)
        for i, e in enumerate(entries):
            try:
                if not isinstance(e, dict):
                    raise KeyFormatError("not an object")
                kind, desc = e.get("type"), e.get("description")
                if kind == "user":
                    payload = e.get("payload")
                    if not isinstance(payload, str):
                        raise KeyFormatError("payload is missing")
                    try:
                        data = bytes.fromhex(payload)
                    except ValueError:
                        raise KeyFormatError("payload is not hex") from None
                    ring.add_key(UserKey(desc, data))
                elif kind == "encrypted":
                    text = e.get("blob")
                    if not isinstance(text, str):
                        raise KeyFormatError("blob is missing")
                    ring.add_key(EncryptedKey.from_blob(desc, Blob.from_text(text)))
                else:
                    raise KeyFormatError(f"type {kind!r} cannot be stored")
            except KeyringError as err:
                raise KeyStoreError(f"{where}: key #{i}: {err}", errno=err.errno) from None

    # --- writing -------------------------------------------------------------------------------

    def serialize(self, ring: Keyring) -> bytes:
        """The file content for ``ring``; refuses anything that must not leave the keyring."""
        entries = []
        for key in ring:
            if isinstance(key, LogonKey):
                raise KeyStoreError(f"logon key {key.description!r} cannot be stored in a "
                                    f"file (logon keys never leave the keyring); use --kernel",
                                    errno=_errno.EPERM)
            if isinstance(key, UserKey):
                entries.append({"type": "user", "description": key.description,
                                "payload": key.read().hex()})
            elif isinstance(key, EncryptedKey):
                sealed = key.sealed_blob()
                # a sealed key is stored as it came: re-wrapping would need its master
                blob = sealed if sealed is not None else key.blob(ring.master_key)
                entries.append({"type": "encrypted", "description": key.description,
                                "blob": blob.to_text()})
            else:  # pragma: no cover - Keyring only holds the types above
                raise KeyStoreError(f"{key.type} key {key.description!r} cannot be stored")
        doc = {"magic": STORE_MAGIC, "version": STORE_VERSION, "keys": entries}
        return (json.dumps(doc, indent=1) + "\n").encode("utf-8")

    def save(self, ring: Keyring) -> None:
        """Write ``ring`` atomically (see the module doc); the old store stays on failure."""
        data = self.serialize(ring)
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, mode=DIR_MODE, exist_ok=True)
            atomic_write(self.path, data)
        except OSError as e:
            raise KeyStoreError(f"keyring {self.path}: cannot write: {e.strerror or e}",
                                errno=e.errno) from None
        log.debug("saved keyring %s (%d keys)", self.path, len(ring))

    def stale_temp_files(self) -> list[str]:
        """Temporary files an interrupted write left next to the store."""
        prefix = _tmp_prefix(self.path)
        d, p = os.path.split(prefix)
        try:
            names = os.listdir(d or ".")
        except FileNotFoundError:
            return []
        return [os.path.join(d, n) for n in names if n.startswith(p)]

    @contextlib.contextmanager
    def transaction(self, *, fallback: KeySource | None = None, write: bool = True
                    ) -> Iterator[Keyring]:
        """Lock, load, yield the keyring, save it if the block succeeds (and ``write``).

        The keyring's keys are wiped on exit either way.
        """
        directory = os.path.dirname(os.path.abspath(self.path))
        if write:
            try:
                os.makedirs(directory, mode=DIR_MODE, exist_ok=True)
            except OSError as e:
                raise KeyStoreError(f"keyring {self.path}: cannot create its directory: "
                                    f"{e.strerror}", errno=e.errno) from None
        # readers need no lock: the store only ever changes by an atomic rename
        with self._lock() if write else contextlib.nullcontext():
            ring = self.load(fallback=fallback)
            try:
                yield ring
                if write:
                    self.save(ring)
                    for tmp in self.stale_temp_files():  # left by a crash; we hold the lock
                        with contextlib.suppress(OSError):
                            os.unlink(tmp)
            finally:
                ring.wipe()

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        lock_path = self.path + ".lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        except OSError as e:
            raise KeyStoreError(f"keyring {self.path}: cannot lock: {e.strerror}",
                                errno=e.errno) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
