"""Named mapped devices without a kernel: the state directory and its resolver.

``dmsetup create NAME`` asks the kernel to keep a device.  dmkit has no kernel and no
daemon, so ``dmkit open`` keeps the *table* instead: it builds the device once to check it,
then records the canonical table in the state directory, one JSON file per name.  Every
later command that names the device (``status``, ``table show``, a table that stacks on
``/dev/mapper/NAME``) builds it again from that record.  Consequences, stated plainly:
``status`` counters start from zero in each command, and nothing stops a program from
writing to an image behind an "open" device.

The state directory is ``$DMKIT_STATE_DIR``, else ``$XDG_RUNTIME_DIR/dmkit``, else
``~/.local/state/dmkit``.  It is created with mode 0700 and records with 0600, because
later targets' tables (dm-crypt's) carry keys.
"""

from __future__ import annotations

import errno
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..block import BlockDevice
from ..dm import DeviceResolver, MappedDevice
from ..dm.resolver import MAPPER_PREFIX
from ..errors import DeviceError, FormatError

__all__ = ["Record", "StateStore", "StateResolver", "valid_name", "default_state_dir"]

_DEVNUM = re.compile(r"\d+:\d+")  # major:minor, which the base resolver looks up
_NAME_RE = re.compile(r"[A-Za-z0-9_+@:][A-Za-z0-9_.+@:-]{0,126}")


def valid_name(name: str) -> bool:
    """A device name: 1..127 characters, no ``/``, not starting with ``.`` or ``-``."""
    return _NAME_RE.fullmatch(name) is not None


def default_state_dir() -> Path:
    env = os.environ.get("DMKIT_STATE_DIR")
    if env:
        return Path(env)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "dmkit"
    return Path.home() / ".local" / "state" / "dmkit"


@dataclass(frozen=True)
class Record:
    """One open device: its canonical table and what is needed to build it again."""

    name: str
    table: str
    read_only: bool
    #: relative paths in the table are relative to this directory (the cwd of ``open``)
    cwd: str
    nr_sectors: int
    #: opened names the table refers to directly (the devices it holds, as in sysfs holders)
    uses: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> str:
        d = asdict(self)
        d["uses"] = list(self.uses)
        return json.dumps(d, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> "Record":
        try:
            d = json.loads(text)
            rec = cls(name=str(d["name"]), table=str(d["table"]), read_only=bool(d["read_only"]),
                      cwd=str(d["cwd"]), nr_sectors=int(d["nr_sectors"]),
                      uses=tuple(str(u) for u in d.get("uses", ())))
        except (ValueError, KeyError, TypeError) as e:
            raise FormatError(f"{where}: invalid state record: {e}") from None
        return rec


class StateStore:
    """The records of open devices, one ``NAME.json`` file each."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else default_state_dir()

    def _file(self, name: str) -> Path:
        return self.path / f"{name}.json"

    def names(self) -> list[str]:
        try:
            entries = os.listdir(self.path)
        except FileNotFoundError:
            return []
        return sorted(e[:-5] for e in entries if e.endswith(".json") and valid_name(e[:-5]))

    def exists(self, name: str) -> bool:
        return valid_name(name) and self._file(name).is_file()

    def get(self, name: str) -> Record:
        if not valid_name(name):
            raise DeviceError(f"{name}: invalid device name", errno=errno.EINVAL)
        path = self._file(name)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise DeviceError(f"{name}: no such mapped device (state directory {self.path})",
                              errno=errno.ENXIO) from None
        rec = Record.from_json(text, str(path))
        if rec.name != name:
            raise FormatError(f"{path}: record is for {rec.name!r}, not {name!r}")
        return rec

    def records(self) -> list[Record]:
        return [self.get(n) for n in self.names()]

    def add(self, rec: Record) -> None:
        """Record ``rec``; fails if the name is taken (atomically: link, not rename)."""
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        final = self._file(rec.name)
        tmp = self.path / f".{rec.name}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(rec.to_json())
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, final)
            except FileExistsError:
                raise DeviceError(f"{rec.name}: a mapped device of that name is open",
                                  errno=errno.EEXIST) from None
        finally:
            tmp.unlink(missing_ok=True)

    def remove(self, name: str) -> None:
        self._file(name).unlink()


class StateResolver(DeviceResolver):
    """A DeviceResolver that also knows the open names of a StateStore.

    A table line naming ``/dev/mapper/NAME`` or ``NAME`` of an open device gets that device,
    built (recursively) from its record the first time it is asked for; a name met again
    while it is being built is a cycle and is rejected.  With ``read_only`` every device is
    built read-only (``table check``, ``export``, ``status``).  Relative paths in a recorded
    table resolve against the directory it was opened from.
    """

    def __init__(self, store: StateStore, *, read_only: bool = False):
        super().__init__()
        self.store = store
        self.read_only = read_only
        #: opened names that the outermost table used directly
        self.used_names: list[str] = []
        self._building: list[str] = []
        self._built: list[MappedDevice] = []
        self._base_dir: str | None = None

    def get(self, spec: str, *, read_only: bool = False) -> BlockDevice:
        name = spec[len(MAPPER_PREFIX):] if spec.startswith(MAPPER_PREFIX) else spec
        if name in self._building:
            chain = " -> ".join(self._building[self._building.index(name):] + [name])
            raise DeviceError(f"{name}: tables refer to each other in a cycle ({chain})",
                              errno=errno.ELOOP)
        if name not in self.mapped and self.store.exists(name):
            self._build(name)
        if name in self.mapped:
            if not self._building and name not in self.used_names:
                self.used_names.append(name)
        elif (self._base_dir is not None and not os.path.isabs(spec)
              and not _DEVNUM.fullmatch(spec)):
            spec = os.path.join(self._base_dir, spec)
        return super().get(spec, read_only=read_only or self.read_only)

    def open_named(self, name: str) -> MappedDevice:
        """The open device ``name``, built from its record (closed with the resolver)."""
        if name not in self.mapped:
            self._build(name)
        dev = self.mapped[name]
        assert isinstance(dev, MappedDevice)
        return dev

    def _build(self, name: str) -> None:
        rec = self.store.get(name)
        saved = self._base_dir
        self._building.append(name)
        self._base_dir = rec.cwd
        try:
            dev = MappedDevice.from_table(rec.table, name=name, resolver=self,
                                          read_only=self.read_only or rec.read_only,
                                          source=f"{MAPPER_PREFIX}{name}")
        finally:
            self._building.pop()
            self._base_dir = saved
        self._built.append(dev)
        self.register(name, dev)

    def close(self) -> None:
        # Upper devices were built after the devices they stack on: close them first.
        try:
            while self._built:
                dev = self._built.pop()
                self.unregister(dev.name)
                dev.close()
        finally:
            super().close()
