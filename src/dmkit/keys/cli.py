"""``dmkit keyring``: the keyring commands, in the manner of keyctl(1).

Keys live in a store file (``--keyring FILE``, default ``$DMKIT_KEYRING`` or
``~/.config/dmkit/keyring.json``) or, with ``--kernel``, in the kernel's session keyring.
Masters of ``encrypted`` keys are found as the kernel finds them: a ``user`` key of that
name in the store, else in the kernel keyring when this process can use it.

No command prints key material: ``pipe`` prints an ``encrypted`` key's blob (wrapped), and
writes a ``user`` payload only to a file given with ``--output`` (mode 0600); ``logon``
keys are never read back.  Errors are :class:`~dmkit.errors.DmkitError` with one-line
messages; the dmkit frontend prints ``dmkit: <message>`` (so does :func:`main` here).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from typing import Iterator

import click

from ..errors import DmkitError
from .encrypted import FORMATS, Blob
from .errors import KeyAccessError, KeyExistsError, KeyFormatError, KeyNotFoundError, KeyStoreError
from .kernel import KernelKeyring, kernel_keyring_status
from .keyring import KeyInfo, Keyring
from .store import KeyStore, atomic_write
from .types import KEY_TYPES, USER_MAX_PAYLOAD, EncryptedKey, LogonKey, UserKey

__all__ = ["keyring", "main"]

log = logging.getLogger("dmkit.keys")


class _Context:
    def __init__(self, store_path: str | None, kernel: bool, kernel_keyring: str):
        if kernel and store_path is not None:
            raise click.UsageError("--keyring and --kernel are exclusive")
        self.kernel = kernel
        self.kernel_keyring = kernel_keyring
        self.store = None if kernel else KeyStore(store_path)

    def kernel_ring(self) -> KernelKeyring:
        ok, why = kernel_keyring_status()
        if not ok:
            raise KeyStoreError(f"kernel keyring: {why}")
        return KernelKeyring(self.kernel_keyring)

    def fallback(self) -> KernelKeyring | None:
        """The kernel keyring as a source of master keys, when it can be used."""
        if not kernel_keyring_status()[0]:
            return None
        return KernelKeyring(self.kernel_keyring)

    @contextlib.contextmanager
    def ring(self, *, write: bool) -> Iterator[Keyring]:
        assert self.store is not None
        with self.store.transaction(fallback=self.fallback(), write=write) as ring:
            yield ring


def _read_secret_file(path: str, what: str) -> bytearray:
    """The bytes of a key file (``-`` is stdin), in a buffer the caller wipes."""
    buf = bytearray()
    try:
        if path == "-":
            stream = sys.stdin.buffer
            while chunk := stream.read(65536):
                buf += chunk
                if len(buf) > USER_MAX_PAYLOAD:
                    break
        else:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                while chunk := os.read(fd, 65536):
                    buf += chunk
                    if len(buf) > USER_MAX_PAYLOAD:
                        break
            finally:
                os.close(fd)
    except OSError as e:
        raise KeyStoreError(f"{what} {path}: cannot read: {e.strerror}", errno=e.errno) from None
    return buf


def _read_blob_file(path: str) -> Blob:
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="ascii") as f:
                text = f.read()
    except UnicodeDecodeError:
        raise KeyFormatError(f"blob file {path}: not a keyctl pipe blob (not ASCII text)") \
            from None
    except OSError as e:
        raise KeyStoreError(f"blob file {path}: cannot read: {e.strerror}", errno=e.errno) \
            from None
    text = text.rstrip("\n")
    if not text:
        raise KeyFormatError(f"blob file {path}: empty")
    return Blob.from_text(text)


def _pick(infos: list[KeyInfo], name: str, key_type: str | None, where: str) -> KeyInfo:
    found = [i for i in infos if i.description == name and key_type in (None, i.type)]
    if not found:
        kind = f"{key_type} key" if key_type else "key"
        raise KeyNotFoundError(f"{kind} {name!r} not found in {where}")
    if len(found) > 1:
        types = " and ".join(sorted(i.type for i in found))
        raise KeyExistsError(f"{name!r} is a {types} key in {where}; say which with --type")
    return found[0]


def _kernel_pick(kr: KernelKeyring, name: str, key_type: str | None) -> KeyInfo:
    types = (key_type,) if key_type else KEY_TYPES
    infos = []
    for t in types:
        serial = kr.find(t, name)
        if serial is not None:
            infos.append(KeyInfo(serial, t, name, None))
    return _pick(infos, name, key_type, "the kernel keyring")


def _write_output(path: str, data: bytes) -> None:
    try:
        atomic_write(os.path.abspath(path), data)
    except OSError as e:
        raise KeyStoreError(f"output {path}: cannot write: {e.strerror}", errno=e.errno) from None


type_option = click.option("--type", "key_type", type=click.Choice(KEY_TYPES), default=None,
                           help="The key's type, when the name alone is ambiguous.")


@click.group("keyring")
@click.option("--keyring", "store_path", metavar="FILE", default=None,
              help="The store file [default: $DMKIT_KEYRING or ~/.config/dmkit/keyring.json].")
@click.option("--kernel", is_flag=True, help="Use the kernel keyring instead of a store file.")
@click.option("--kernel-keyring", default="@s", show_default=True, metavar="KEYRING",
              help="With --kernel: the keyring to add to and look in (@s, @u, @p or a serial).")
@click.pass_context
def keyring(ctx: click.Context, store_path: str | None, kernel: bool, kernel_keyring: str):
    """Keys for dm-crypt and dm-integrity: user, logon and encrypted keys, as keyctl(1)."""
    ctx.obj = _Context(store_path, kernel, kernel_keyring)


@keyring.command("add")
@click.argument("key_type", metavar="TYPE", type=click.Choice(["user", "logon"]))
@click.argument("name")
@click.option("--key-file", required=True, metavar="FILE", help="The payload ('-': stdin).")
@click.pass_obj
def add_cmd(c: _Context, key_type: str, name: str, key_file: str):
    """Add a user key (or, with --kernel, a logon key) from a file."""
    if key_type == "logon" and not c.kernel:
        raise KeyAccessError(f"logon key {name!r}: logon keys never leave the keyring, so a "
                             f"store file cannot hold them; use --kernel")
    buf = _read_secret_file(key_file, "key file")
    try:
        if c.kernel:
            kr = c.kernel_ring()
            if kr.find(key_type, name) is not None:
                raise KeyExistsError(f"{key_type} key {name!r} already exists in the kernel "
                                     f"keyring; unlink it first")
            (LogonKey if key_type == "logon" else UserKey)(name, buf)  # the same rules first
            serial = kr.add(key_type, name, bytes(buf))
        else:
            with c.ring(write=True) as ring:
                if ring.find(key_type, name) is not None:
                    raise KeyExistsError(f"{key_type} key {name!r} already exists in "
                                         f"{c.store.path}; unlink it first")
                serial = ring.add(key_type, name, bytes(buf))
    finally:
        buf[:] = bytes(len(buf))
    log.info("added %s key %r", key_type, name)
    click.echo(serial)


@keyring.command("new-encrypted")
@click.argument("name")
@click.option("--master", required=True, metavar="user:NAME", help="The master key.")
@click.option("--length", required=True, type=int, help="Key length in bytes (20..4096).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="default",
              show_default=True, help="ecryptfs needs 64 bytes, enc32 32 bytes.")
@click.pass_obj
def new_encrypted_cmd(c: _Context, name: str, master: str, length: int, fmt: str):
    """Make a random encrypted key wrapped by a user master key."""
    if c.kernel:
        kr = c.kernel_ring()
        if kr.find("encrypted", name) is not None:
            raise KeyExistsError(f"encrypted key {name!r} already exists in the kernel keyring")
        key = EncryptedKey.new(name, master, length, format=fmt)
        try:
            blob = key.blob(kr.master_key)
        finally:
            key.wipe()
        serial = kr.add("encrypted", name, blob.load_payload())
    else:
        with c.ring(write=True) as ring:
            serial = ring.new_encrypted(name, master, length, format=fmt)
            ring.blob(serial)  # the master must be there, or nothing is stored
    log.info("made encrypted key %r (%s, %d bytes, master %s)", name, fmt, length, master)
    click.echo(serial)


@keyring.command("load")
@click.argument("name")
@click.option("--blob-file", required=True, metavar="FILE", help="keyctl pipe output ('-': stdin).")
@click.pass_obj
def load_cmd(c: _Context, name: str, blob_file: str):
    """Load an encrypted key from its blob (verified with its master key)."""
    blob = _read_blob_file(blob_file)
    if c.kernel:
        kr = c.kernel_ring()
        EncryptedKey.from_blob(name, blob, kr.master_key).wipe()  # say what is wrong, if so
        serial = kr.add("encrypted", name, blob.load_payload())
    else:
        with c.ring(write=True) as ring:
            serial = ring.load_encrypted(name, blob)
    log.info("loaded encrypted key %r (master %s)", name, blob.master_desc)
    click.echo(serial)


@keyring.command("update")
@click.argument("name")
@click.option("--master", required=True, metavar="user:NAME", help="The new master key.")
@click.pass_obj
def update_cmd(c: _Context, name: str, master: str):
    """Wrap an encrypted key with another master key (same key, same IV)."""
    payload = f"update {master}"
    if c.kernel:
        kr = c.kernel_ring()
        serial = _kernel_pick(kr, name, "encrypted").serial
        kr.master_key(master).wipe()  # the kernel would only notice at the next read
        kr.update(serial, payload)
    else:
        with c.ring(write=True) as ring:
            serial = ring.search("encrypted", name)
            ring.update(serial, payload)
            ring.blob(serial)  # the new master must be there, or nothing is stored
    log.info("encrypted key %r now wrapped by %s", name, master)


@keyring.command("pipe")
@click.argument("name")
@type_option
@click.option("--output", "-o", metavar="FILE", default=None,
              help="Write to FILE (mode 0600) instead of stdout; needed for a user key.")
@click.pass_obj
def pipe_cmd(c: _Context, name: str, key_type: str | None, output: str | None):
    """Print an encrypted key's blob exactly as keyctl pipe does; never a logon key."""
    if c.kernel:
        kr = c.kernel_ring()
        info = _kernel_pick(kr, name, key_type)
        if info.type == "logon":
            raise KeyAccessError(f"logon key {name!r} cannot be read back: logon keys are "
                                 f"only for targets")
        if info.type == "user" and output is None:
            raise KeyAccessError(f"user key {name!r}: refusing to print key material; "
                                 f"use --output FILE")
        data = kr.read(info.serial)
    else:
        with c.ring(write=False) as ring:
            info = _pick(ring.list_keys(), name, key_type, c.store.path)
            if info.type == "user" and output is None:
                raise KeyAccessError(f"user key {name!r}: refusing to print key material; "
                                     f"use --output FILE")
            data = ring.read(info.serial)  # logon: KeyAccessError
    if output is not None:
        _write_output(output, data)
    else:
        click.echo(data.decode("ascii"), nl=False)


@keyring.command("push")
@click.argument("name")
@type_option
@click.pass_obj
def push_cmd(c: _Context, name: str, key_type: str | None):
    """Copy a key of the store into the kernel keyring (encrypted keys as their blob)."""
    if c.kernel:
        raise click.UsageError("push copies from a store file to the kernel; drop --kernel")
    kr = c.kernel_ring()
    with c.ring(write=False) as ring:
        info = _pick(ring.list_keys(), name, key_type, c.store.path)
        if info.type == "encrypted":
            payload = ring.blob(info.serial).load_payload().encode()
        else:
            payload = ring.read(info.serial)
        serial = kr.add(info.type, name, payload)
    click.echo(serial)


@keyring.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
@click.pass_obj
def list_cmd(c: _Context, as_json: bool):
    """List the keys: serial, type, description, length, format, master."""
    if c.kernel:
        infos = c.kernel_ring().list_keys()
    else:
        with c.ring(write=False) as ring:
            infos = ring.list_keys()
    if as_json:
        click.echo(json.dumps([i.as_dict() for i in infos]))
        return
    for i in infos:
        extra = []
        if i.length is not None:
            extra.append(f"{i.length} bytes")
        if i.format:
            extra.append(i.format)
        if i.master:
            extra.append(f"master {i.master}")
        if i.sealed:
            extra.append("sealed")
        click.echo(f"{i.serial:>10} {i.type:<9} {i.description}"
                   + (f"  ({', '.join(extra)})" if extra else ""))


@keyring.command("unlink")
@click.argument("name")
@type_option
@click.option("--force", is_flag=True,
              help="Unlink a master key even though stored encrypted keys need it.")
@click.pass_obj
def unlink_cmd(c: _Context, name: str, key_type: str | None, force: bool):
    """Remove a key."""
    if c.kernel:
        kr = c.kernel_ring()
        kr.unlink(_kernel_pick(kr, name, key_type).serial)
    else:
        with c.ring(write=True) as ring:
            info = _pick(ring.list_keys(), name, key_type, c.store.path)
            users = ring.dependents(info.serial) if not info.revoked else []
            if users and not force:
                raise KeyExistsError(
                    f"user key {name!r} is the master of encrypted key(s) "
                    f"{', '.join(repr(u) for u in users)}; they could never be opened again "
                    f"(unlink them first, or use --force)")
            ring.unlink(info.serial)
    log.info("unlinked key %r", name)


def main(argv: list[str] | None = None) -> int:
    """Run the group on its own, with the dmkit frontend's error convention."""
    try:
        keyring.main(args=argv, prog_name="dmkit keyring", standalone_mode=False)
    except DmkitError as e:
        click.echo(f"dmkit: {e}", err=True)
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("dmkit: aborted", err=True)
        return 1
    except click.ClickException as e:
        e.show()
        return e.exit_code
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
