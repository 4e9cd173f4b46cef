"""What opening a LUKS volume yields: the volume key and a description of its data.

:class:`DataSegment` says where the encrypted data is and how it is encrypted, in
cryptsetup's terms, and turns that into the device-mapper tables cryptsetup would load
(``crypt`` alone, or ``integrity`` below ``crypt`` for authenticated encryption), in the
text ``dmsetup table`` shows.  Tables follow cryptsetup's ``lib/libdevmapper.c``
(``cipher_dm2c``) and the kernel's status output order (``drivers/md/dm-crypt.c``,
``drivers/md/dm-integrity.c``).

The integrity line needs values stored in the dm-integrity superblock (provided data
sectors, journal size), which the data path reads: they are passed in as
:class:`IntegrityTableParams`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import FormatError, NotSupportedError
from ..keys import SecretBytes

__all__ = [
    "INTEGRITY_MODES",
    "integrity_spec",
    "integrity_key_bytes",
    "integrity_tag_bytes",
    "IntegrityTableParams",
    "DataSegment",
    "Unlocked",
]

#: ``--integrity`` names (cryptsetup ``crypt_parse_integrity_mode``) → (segment integrity
#: type stored in LUKS2, integrity key bytes appended to the volume key)
INTEGRITY_MODES = {
    "aead": ("aead", 0),
    "poly1305": ("poly1305", 0),
    "none": ("none", 0),
    "hmac-sha1": ("hmac(sha1)", 20),
    "hmac-sha256": ("hmac(sha256)", 32),
    "hmac-sha512": ("hmac(sha512)", 64),
    "cmac-aes": ("cmac(aes)", 16),
}
_KEY_BYTES = {stored: ks for stored, ks in INTEGRITY_MODES.values()}
_AUTH_TAG = {"none": 0, "aead": 16, "cmac(aes)": 16, "hmac(sha1)": 20, "hmac(sha256)": 32,
             "hmac(sha512)": 64, "poly1305": 16}


def integrity_spec(name: str) -> str:
    """The stored segment integrity type for a ``--integrity`` name (either spelling)."""
    if name in INTEGRITY_MODES:
        return INTEGRITY_MODES[name][0]
    if name in _KEY_BYTES:
        return name
    raise NotSupportedError(f"luks: integrity {name!r} is not supported "
                            f"(one of {', '.join(INTEGRITY_MODES)})")


def integrity_key_bytes(stored: str) -> int:
    """Bytes of the volume key that belong to the integrity MAC (``INTEGRITY_key_size``)."""
    if stored not in _KEY_BYTES:
        raise NotSupportedError(f"luks: integrity {stored!r} is not supported")
    return _KEY_BYTES[stored]


def integrity_tag_bytes(stored: str | None, cipher: str) -> int:
    """Per-sector metadata bytes: random IV + auth tag (``INTEGRITY_tag_size``)."""
    _, _, mode = cipher.partition("-")
    name = cipher.partition("-")[0]
    if mode == "xts-random" or mode == "ctr-random":
        iv = 16
    elif mode == "gcm-random":
        iv = 12
    elif mode == "ccm-random":
        iv = 8
    elif name == "aegis256" and mode == "random":
        iv = 32
    elif mode == "random":
        iv = 16
    else:
        iv = 0
    if stored is None or stored == "none":
        return iv
    if stored not in _AUTH_TAG:
        raise NotSupportedError(f"luks: integrity {stored!r} is not supported")
    if stored == "poly1305" and iv:
        iv = 12
    return iv + _AUTH_TAG[stored]


def _dm_cipher(cipher: str, integrity: str | None) -> str:
    """cryptsetup's ``cipher_dm2c``: the dm-crypt cipher for a LUKS cipher + integrity."""
    if integrity is None:
        return cipher
    name, sep, rest = cipher.partition("-")
    if not sep:
        raise FormatError(f"luks: cipher {cipher!r} has no mode")
    mode, sep, iv = rest.partition("-")
    capi = f"{mode}({name})" if sep else name
    if not sep:
        iv = mode
    if integrity == "none":
        return f"capi:{capi}-{iv}"
    if integrity == "aead" and mode == "ccm":
        return f"capi:rfc4309({capi})-{iv}"
    if integrity == "aead":
        return f"capi:{capi}-{iv}"
    if integrity == "poly1305":
        return f"capi:rfc7539({capi},poly1305)-{iv}"
    return f"capi:authenc({integrity},{capi})-{iv}"


@dataclass(frozen=True)
class IntegrityTableParams:
    """What the ``integrity`` line needs from the dm-integrity superblock at the data
    offset (read by the data path), and cryptsetup's activation defaults."""

    provided_data_sectors: int
    journal_sectors: int
    interleave_sectors: int = 32768
    buffer_sectors: int = 128
    journal_watermark: int = 50
    commit_time: int = 10000
    fix_padding: bool = True
    fix_hmac: bool = False
    mode: str = "J"


@dataclass(frozen=True)
class DataSegment:
    """The encrypted data of a LUKS volume.

    ``offset_sectors`` is where the data starts on the data device, ``size_sectors`` its
    length (None: to the end of the device), both in 512-byte sectors; ``iv_offset`` is
    dm-crypt's ``iv_offset``; ``integrity`` the stored LUKS2 integrity type
    (``hmac(sha256)``, ``aead``, ``poly1305``) or None.  ``flags`` are LUKS2's persistent
    activation flags (``allow-discards``...).
    """

    cipher: str
    key_bytes: int
    offset_sectors: int
    size_sectors: int | None = None
    iv_offset: int = 0
    sector_size: int = 512
    integrity: str | None = None
    flags: tuple[str, ...] = ()
    segment_id: int = 0
    digest_id: int = 0

    @property
    def dm_cipher(self) -> str:
        """The cipher as dm-crypt takes it (``capi:gcm(aes)-random`` with integrity)."""
        return _dm_cipher(self.cipher, self.integrity)

    @property
    def integrity_tag_bytes(self) -> int:
        """Per-sector metadata dm-integrity stores for dm-crypt (0 without integrity)."""
        return integrity_tag_bytes(self.integrity, self.cipher) if self.integrity else 0

    @property
    def integrity_key_bytes(self) -> int:
        return integrity_key_bytes(self.integrity) if self.integrity else 0

    def _size(self, device_sectors: int) -> int:
        if self.size_sectors is not None:
            if self.offset_sectors + self.size_sectors > device_sectors:
                raise FormatError(f"luks: data segment ends beyond the device "
                                  f"({device_sectors} sectors)")
            return self.size_sectors
        size = device_sectors - self.offset_sectors
        if size <= 0:
            raise FormatError("luks: the device has no room for data after the header")
        return size

    def crypt_table(self, key: str, device: str, device_sectors: int, *,
                    allow_discards: bool | None = None) -> str:
        """The ``crypt`` line for a volume without integrity.

        ``key`` is the hex volume key or a keyring reference (``:64:logon:desc``);
        ``device`` and ``device_sectors`` describe the data device.
        """
        if self.integrity:
            raise ValueError("this segment has integrity: use dm_tables()")
        size = self._size(device_sectors)
        if size % (self.sector_size // 512):
            raise FormatError(f"luks: data size {size} sectors is not a multiple of the "
                              f"{self.sector_size}-byte encryption sector")
        return (f"0 {size} crypt {self.dm_cipher} {key} {self.iv_offset} {device} "
                f"{self.offset_sectors}{self._crypt_opts(allow_discards)}")

    def _crypt_opts(self, allow_discards: bool | None) -> str:
        if allow_discards is None:
            allow_discards = "allow-discards" in self.flags
        opts = []
        if allow_discards:
            opts.append("allow_discards")
        for flag in ("same-cpu-crypt", "submit-from-crypt-cpus", "no-read-workqueue",
                     "no-write-workqueue"):
            if flag in self.flags:
                opts.append(flag.replace("-", "_"))
        if self.integrity:
            opts.append(f"integrity:{self.integrity_tag_bytes}:"
                        f"{'none' if self.integrity == 'none' else 'aead'}")
        if self.sector_size != 512:
            opts.append(f"sector_size:{self.sector_size}")
        return f" {len(opts)} {' '.join(opts)}" if opts else ""

    def integrity_table(self, device: str, params: IntegrityTableParams, *,
                        allow_discards: bool | None = None) -> str:
        """The ``integrity`` line (cryptsetup's ``<name>_dif`` device) below dm-crypt."""
        if not self.integrity:
            raise ValueError("this segment has no integrity")
        if allow_discards is None:
            allow_discards = "allow-discards" in self.flags
        opts = []
        if self.sector_size != 512:
            opts.append(f"block_size:{self.sector_size}")
        if allow_discards:
            opts.append("allow_discards")
        opts.append(f"journal_sectors:{params.journal_sectors}")
        opts.append(f"interleave_sectors:{params.interleave_sectors}")
        opts.append(f"buffer_sectors:{params.buffer_sectors}")
        if params.mode == "J":
            opts.append(f"journal_watermark:{params.journal_watermark}")
            opts.append(f"commit_time:{params.commit_time}")
        if params.fix_padding:
            opts.append("fix_padding")
        if params.fix_hmac:
            opts.append("fix_hmac")
        return (f"0 {params.provided_data_sectors} integrity {device} {self.offset_sectors} "
                f"{self.integrity_tag_bytes} {params.mode} {len(opts)} {' '.join(opts)}")

    def dm_tables(self, key: str, device: str, device_sectors: int, *,
                  integrity: IntegrityTableParams | None = None, dif_device: str | None = None,
                  allow_discards: bool | None = None) -> list[tuple[str, str]]:
        """The tables cryptsetup loads, in load order, as ``(suffix, table)`` pairs:
        ``[("_dif", integrity line), ("", crypt line)]`` with integrity, else
        ``[("", crypt line)]``.  With integrity, ``dif_device`` names the integrity
        device the crypt line sits on and ``integrity`` carries the superblock values.
        """
        if not self.integrity:
            return [("", self.crypt_table(key, device, device_sectors,
                                          allow_discards=allow_discards))]
        if integrity is None or dif_device is None:
            raise ValueError("a segment with integrity needs the dm-integrity superblock "
                             "values (integrity=) and the integrity device (dif_device=)")
        dif = self.integrity_table(device, integrity, allow_discards=allow_discards)
        crypt = (f"0 {integrity.provided_data_sectors} crypt {self.dm_cipher} {key} "
                 f"{self.iv_offset} {dif_device} 0{self._crypt_opts(allow_discards)}")
        return [("_dif", dif), ("", crypt)]


@dataclass(frozen=True, repr=False)
class Unlocked:
    """An opened LUKS volume: its volume key, the key slot that opened it, its data.

    The key is a :class:`~dmkit.keys.SecretBytes`: never shown; wipe it when done
    (``with`` does).
    """

    volume_key: SecretBytes
    keyslot: int | None
    segment: DataSegment
    uuid: str
    version: int
    #: the LUKS volume (:class:`~dmkit.luks.Luks2Volume` or ``Luks1Volume``)
    volume: object = field(default=None, compare=False)

    def __repr__(self) -> str:
        return (f"Unlocked(LUKS{self.version} {self.uuid}, keyslot={self.keyslot}, "
                f"{self.segment.cipher}, key {len(self.volume_key) * 8} bits)")

    def keyring_description(self) -> str:
        """The logon key description cryptsetup uses for this volume key (LUKS2)."""
        return f"cryptsetup:{self.uuid}-d{self.segment.digest_id}"

    def key_reference(self) -> str:
        """``:<bytes>:logon:<description>``: the crypt table key via the keyring."""
        return f":{len(self.volume_key)}:logon:{self.keyring_description()}"

    def dm_tables(self, device: str, device_sectors: int, *, key: str | None = None,
                  **kw) -> list[tuple[str, str]]:
        """:meth:`DataSegment.dm_tables` with this volume key.  Without ``key`` the
        tables embed the key in hex: they are then secret and must not be logged."""
        if key is None:
            key = self.volume_key.reveal().hex()
        return self.segment.dm_tables(key, device, device_sectors, **kw)

    def wipe(self) -> None:
        self.volume_key.wipe()

    def __enter__(self) -> Unlocked:
        return self

    def __exit__(self, *exc) -> None:
        self.wipe()
