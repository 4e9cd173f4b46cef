"""crypt: transparent encryption of a range of a device (dm-crypt).

Kernel doc: Documentation/admin-guide/device-mapper/dm-crypt.rst; behaviour, validation,
status and messages follow drivers/md/dm-crypt.c (target version 1.24.0).

Each ``sector_size`` unit is encrypted on its own.  Its IV comes from the 512-byte sector
``cc = target sector + iv_offset`` (``cc >> log2(sector_size/512)`` with
``iv_large_sectors``); with several keys the unit uses key ``cc & (keycount - 1)``.  With
``integrity:<n>:aead`` every unit is sealed with the AAD ``le64(target sector) || IV`` and
its tag (then its IV, for the ``random`` IV mode) travels in the integrity metadata of the
bios sent to the device below, ``<n>`` bytes per unit, which the device must store
(dm-integrity without an internal hash: profile ``DM-DIF-EXT-TAG``).
"""

from __future__ import annotations

import logging
import threading
from typing import Sequence

from ...block import SECTOR_SHIFT, Bio, QueueLimits
from ...block.bio import OP_DISCARD, OP_FLUSH, OP_READ, OP_WRITE, OP_WRITE_ZEROES
from ...crypto._key import wipe_bytearray
from ...crypto.fastxts import fast_xts
from ...crypto.ivmodes import IV_MODES
from ...dm.args import ArgReader, FeatureSet, parse_uint
from ...dm.table import join_args
from ...dm.target import Target
from ...errors import BlockIOError, InvalidBioError, NotSupportedError, TableError
from .keytext import KeyText, key_size_of, parse_key_text
from .spec import iv_size_of, parse_cipher_spec

__all__ = ["CryptTarget", "INTEGRITY_PROFILE_NAME"]

log = logging.getLogger("dmkit.crypt")

#: the profile dm-integrity registers when the layer above supplies the tags
INTEGRITY_PROFILE_NAME = "DM-DIF-EXT-TAG"
MAX_TAG_SIZE = 480
_FLAGS = ("allow_discards", "same_cpu_crypt", "submit_from_crypt_cpus", "no_read_workqueue",
          "no_write_workqueue")


class CryptTarget(Target):
    """crypt <cipher> <key> <iv_offset> <device path> <offset> [<#opt_params> <opt_params>]

    ``key`` is hex, ``-`` for no key, or ``:<key_size>:<logon|user|encrypted>:<description>``
    (resolved through ``resolver.keyring``).  Optional parameters: ``allow_discards``,
    ``same_cpu_crypt``, ``submit_from_crypt_cpus``, ``no_read_workqueue``,
    ``no_write_workqueue`` (accepted and printed back; dmkit has no workqueues),
    ``integrity:<bytes>:<aead|none>``, ``sector_size:<bytes>``, ``iv_large_sectors``.
    """

    name = "crypt"
    version = (1, 24, 0)
    num_flush_bios = 1

    def __init__(self, resolver, start_sector: int, nr_sectors: int, args: Sequence[str],
                 *, read_only: bool = False):
        super().__init__(resolver, start_sector, nr_sectors, args, read_only=read_only)
        r = ArgReader(self.name, args)
        if len(args) < 5:
            raise r.error("Not enough arguments: expected <cipher> <key> <iv_offset> "
                          "<device path> <offset> [<#opt_params> <opt_params>]")
        self.flags: set[str] = set()
        self.on_disk_tag_size = 0
        self.cipher_auth: str | None = None
        self.sector_size = 512
        self.iv_large_sectors = False
        self.rng = None  # injectable source of random IVs: rng(nbytes) -> bytes
        self._suspended = False
        self._key_valid = False
        self._ciphers: list = []
        self._ivgen = None
        #: the numpy-free path (dmkit.crypto.fastxts) when the cipher allows it, else None
        self._fast = None
        self._key = bytearray()
        self._key_reference: str | None = None
        self._tls = threading.local()

        key_size = key_size_of(args[1])
        r.pos = 5
        self._parse_features(r.group("optional parameters"), nr_sectors)
        r.done()
        self.aead = self.cipher_auth is not None and self.cipher_auth.lower() == "aead"
        self.spec = parse_cipher_spec(args[0], aead=self.aead)
        self._setup_iv(self.spec)
        if key_size == 0 and args[1] != "-":
            raise r.error("Error decoding and setting key: an empty key is written '-'")
        self.key_size = key_size
        self._set_key(args[1])
        try:
            self.iv_offset = parse_uint(args[2], "iv_offset sector", prefix="crypt: ")
            if self.iv_offset & (self._step - 1):
                raise r.error(f"Invalid iv_offset sector {self.iv_offset}: not a multiple of "
                              f"sector_size ({self._step} sectors)")
            self.dev_spec = args[3]
            self.dev = self.get_device(self.dev_spec)
            self.offset = parse_uint(args[4], "device sector", prefix="crypt: ")
            self.check_within(self.dev, self.offset, nr_sectors, "device")
            if self.aead or self.integrity_iv_size or self.on_disk_tag_size:
                self._integrity_ctr()
        except BaseException:
            self.close()
            raise

    # -- construction ----------------------------------------------------------------------
    def _parse_features(self, g: ArgReader, nr_sectors: int) -> None:
        if len(g.args) > 8:
            raise g.error(f"Invalid number of feature args {len(g.args)}: at most 8")
        fs = FeatureSet(g)
        while g.remaining:
            word = g.shift("optional parameter")
            low = word.lower()
            if low in _FLAGS:
                fs.add(low)
                self.flags.add(low)
            elif low == "iv_large_sectors":
                fs.add(low)
                self.iv_large_sectors = True
            elif low.startswith("integrity:"):
                fs.add("integrity")
                parts = word.split(":")
                if len(parts) != 3 or not parts[1].isdigit() or not parts[1].isascii():
                    raise g.error(f"Invalid integrity arguments {word!r}: expected "
                                  "integrity:<bytes>:<aead|none>")
                val = int(parts[1])
                if not 0 < val <= MAX_TAG_SIZE:
                    raise g.error(f"Invalid integrity arguments {word!r}: tag bytes must be in "
                                  f"1..{MAX_TAG_SIZE}")
                if parts[2].lower() not in ("aead", "none"):
                    raise g.error(f"Unknown integrity profile {parts[2]!r} in {word!r} "
                                  "(aead or none)")
                self.on_disk_tag_size = val
                self.cipher_auth = parts[2]
            elif low.startswith("sector_size:"):
                fs.add("sector_size")
                size = parse_uint(word[len("sector_size:"):], "feature value for sector_size",
                                  512, 4096, prefix="crypt: ")
                if size & (size - 1):
                    raise g.error(f"Invalid feature value for sector_size {size}: not a power "
                                  "of two in 512..4096")
                if nr_sectors & ((size >> SECTOR_SHIFT) - 1):
                    raise g.error(f"Device size is not multiple of sector_size feature: target "
                                  f"length {nr_sectors} sectors, sector_size {size}")
                self.sector_size = size
            else:
                raise g.error(f"Invalid feature arguments: unknown optional parameter {word!r}")
        self._step = self.sector_size >> SECTOR_SHIFT
        self._shift = self._step.bit_length() - 1

    def _setup_iv(self, spec) -> None:
        iv_size, self._block_size = iv_size_of(spec, self.aead)
        ivmode = spec.ivmode
        if iv_size:
            iv_size = max(iv_size, 8)
        elif ivmode:
            log.warning("crypt: %s: the cipher does not use IVs; IV mode %s ignored",
                        spec.text, ivmode)
            ivmode = None
        if ivmode is not None and ivmode not in IV_MODES:
            raise TableError(f"crypt: Invalid IV mode {ivmode!r} in {spec.text!r} "
                             f"({', '.join(IV_MODES)})")
        if ivmode == "eboiv" and self.aead:
            raise TableError("crypt: AEAD transforms not supported for EBOIV")
        if ivmode == "essiv" and self.aead:
            raise TableError("crypt: ESSIV with an AEAD cipher is not supported by dmkit")
        self.iv_size = iv_size
        self.ivmode = ivmode
        self.integrity_iv_size = iv_size if ivmode == "random" else 0
        self.integrity_tag_size = 0
        if self.aead:
            self.integrity_tag_size = self.on_disk_tag_size - self.integrity_iv_size
            if self.integrity_tag_size <= 0:
                raise TableError(f"crypt: Integrity AEAD auth tag size is not supported: "
                                 f"integrity:{self.on_disk_tag_size} leaves "
                                 f"{self.integrity_tag_size} bytes for the tag after the "
                                 f"{self.integrity_iv_size}-byte IV")
        elif self.on_disk_tag_size and not self.integrity_iv_size:
            raise TableError(f"crypt: integrity:{self.on_disk_tag_size}:{self.cipher_auth} "
                             "without aead stores only random IVs; the IV mode is "
                             f"{ivmode or 'none'} (use -random, or integrity:<n>:aead)")

    def _set_key(self, text: str) -> None:
        """Decode ``text``, build the cipher instances and IV generator (``crypt_set_key``)."""
        kt: KeyText = parse_key_text(text, self.resolver)
        try:
            if len(kt.key) != self.key_size:
                raise TableError(f"crypt: Error decoding and setting key: the key is "
                                 f"{len(kt.key)} bytes, the table says {self.key_size}")
            key = bytes(kt.key)
            fast = None
            if not self.on_disk_tag_size:
                fast = fast_xts(self.spec.cipher_api, self.spec.keycount, self.ivmode, key)
            if fast is not None:
                ciphers, ivgen = [fast], None
            else:
                from .general import make_ciphers

                ciphers, ivgen = make_ciphers(self, key)
        except BaseException:
            kt.wipe()
            raise
        self._drop_key()
        self._ciphers, self._ivgen, self._fast = ciphers, ivgen, fast
        self._key_reference = kt.reference
        if kt.reference is None:
            self._key = kt.key  # kept for the table status, as the kernel keeps cc->key
        else:
            kt.wipe()  # the kernel wipes its copy of a keyring key once it is set
            self._key = bytearray()
        self._key_valid = True

    def _drop_key(self) -> None:
        for c in self._ciphers:
            c.wipe()
        self._ciphers = []
        self._ivgen = self._fast = None
        wipe_bytearray(self._key)
        self._key_valid = False

    def _integrity_ctr(self) -> None:
        prof = self.dev.integrity
        where = f"crypt: device {self.dev.name}"
        if prof is None or prof.name.lower() != INTEGRITY_PROFILE_NAME.lower():
            have = "none" if prof is None else repr(prof.name)
            raise TableError(f"{where}: Integrity profile not supported: "
                             f"{INTEGRITY_PROFILE_NAME} needed, it has {have}")
        if prof.tag_size != self.on_disk_tag_size or prof.tuple_size != self.on_disk_tag_size:
            raise TableError(f"{where}: Integrity profile tag size mismatch: it stores "
                             f"{prof.tuple_size} bytes per block, the table says "
                             f"integrity:{self.on_disk_tag_size}")
        if prof.interval_bytes != self.sector_size:
            raise TableError(f"{where}: Integrity profile sector size mismatch: "
                             f"{prof.interval_bytes}-byte blocks, sector_size is "
                             f"{self.sector_size}")
        if self.integrity_tag_size + self.integrity_iv_size != prof.tag_size:
            raise TableError(f"{where}: Not enough space for integrity tag in the profile: "
                             f"tag {self.integrity_tag_size} + IV {self.integrity_iv_size} "
                             f"bytes != {prof.tag_size}")

    # -- the data path --------------------------------------------------------------------------
    def map(self, bio: Bio) -> None:
        op = bio.op
        if op is OP_FLUSH:
            self.dev.submit(bio)
            return
        if op is OP_DISCARD:
            if "allow_discards" not in self.flags:
                raise NotSupportedError("crypt: discard not allowed (table has no allow_discards)")
            self.dev.submit(Bio(op, self.offset + bio.sector, bio.nr_sectors, None, bio.flags))
            return
        if op is OP_WRITE_ZEROES:
            raise NotSupportedError("crypt: write-zeroes not supported (zeros are encrypted)")
        if self._suspended:
            raise BlockIOError(f"crypt: {self.dev.name}: I/O to a suspended target")
        if not self._key_valid:
            raise BlockIOError(f"crypt: {self.dev.name}: the key is not set")
        if (bio.sector | bio.nr_sectors) & (self._step - 1):
            raise InvalidBioError(f"crypt: request for sectors {bio.sector}+{bio.nr_sectors} is "
                                  f"not aligned to sector_size {self.sector_size}")
        if op is OP_READ:
            self._read(bio)
        else:
            self._write(bio)

    def _iv_first(self, sector: int) -> tuple[int, int]:
        """The IV sector of the first unit of a request at target ``sector``, and the step
        from one unit to the next."""
        cc = sector + self.iv_offset
        if self.iv_large_sectors:
            return cc >> self._shift, 1
        return cc, self._step

    def _scratch_bytes(self, nbytes: int) -> memoryview:
        """A per-thread reusable buffer of at least ``nbytes`` (the ciphertext of a write)."""
        buf = getattr(self._tls, "raw", None)
        if buf is None or len(buf) < nbytes:
            buf = self._tls.raw = bytearray(nbytes)
        return memoryview(buf)[:nbytes]

    def _read(self, bio: Bio) -> None:
        if self._fast is None:
            from .general import read

            read(self, bio)
            return
        # read the ciphertext into the caller's buffer and decrypt it in place
        try:
            self.dev.submit(Bio(OP_READ, self.offset + bio.sector, bio.nr_sectors, bio.data,
                                bio.flags))
            first, step = self._iv_first(bio.sector)
            self._fast.crypt(True, bio.data, bio.data, self.sector_size, first, step)
        except BaseException:
            bio.data[:] = bytes(len(bio.data))  # never ciphertext handed back as data
            raise

    def _write(self, bio: Bio) -> None:
        if self._fast is None:
            from .general import write

            write(self, bio)
            return
        ct = self._scratch_bytes(bio.nr_sectors << SECTOR_SHIFT)
        first, step = self._iv_first(bio.sector)
        self._fast.crypt(False, bio.data, ct, self.sector_size, first, step)
        self.dev.submit(Bio(OP_WRITE, self.offset + bio.sector, bio.nr_sectors, ct, bio.flags))

    @property
    def parallel_reads(self) -> bool:
        """Reads are safe on several threads: the C path keeps no shared state (its
        context and buffers are per call and per thread), if the device below allows it."""
        from ...block.parallel import parallel_reads_safe

        return self._fast is not None and not self._suspended and parallel_reads_safe(self.dev)

    # -- what the mapped device stacks ------------------------------------------------------------
    def limits(self) -> QueueLimits:
        base = super().limits()
        s = self.sector_size
        return QueueLimits(max(base.logical_block_size, s), max(base.physical_block_size, s),
                           io_min=max(base.io_min, s), io_opt=base.io_opt)

    @property
    def can_discard(self) -> bool:
        return "allow_discards" in self.flags and self.dev.can_discard

    # -- reporting ------------------------------------------------------------------------------------
    def status(self, kind: str) -> str:
        if kind != "table":
            return ""  # crypt_status prints nothing for STATUSTYPE_INFO
        if self.key_size == 0:
            key = "-"
        elif self._key_reference is not None:
            key = self._key_reference
        else:
            key = (self._key.hex() if self._key_valid and self._key
                   else "00" * self.key_size)
        words = [self.spec.text, key, str(self.iv_offset), self.dev_spec, str(self.offset)]
        feats = [f for f in _FLAGS if f in self.flags]
        if self.on_disk_tag_size:
            feats.append(f"integrity:{self.on_disk_tag_size}:{self.cipher_auth}")
        if self.sector_size != 512:
            feats.append(f"sector_size:{self.sector_size}")
        if self.iv_large_sectors:
            feats.append("iv_large_sectors")
        if feats:
            words += [str(len(feats)), *feats]
        return join_args(words)

    # -- suspend, resume and messages ---------------------------------------------------------------
    def postsuspend(self) -> None:
        """Suspend the target (``dmsetup suspend``): I/O is refused until :meth:`resume`."""
        self._suspended = True

    def preresume(self) -> None:
        if not self._key_valid:
            raise TableError("crypt: aborting resume - crypt key is not set")

    def resume(self) -> None:
        """Resume after :meth:`postsuspend`; refused while the key is wiped."""
        self.preresume()
        self._suspended = False

    suspend = postsuspend

    def message(self, argv: Sequence[str]) -> str:
        """``key set <key>`` and ``key wipe``, only while suspended (``crypt_message``)."""
        if len(argv) >= 2 and argv[0].lower() == "key":
            if not self._suspended:
                raise TableError("crypt: not suspended during key manipulation")
            if len(argv) == 3 and argv[1].lower() == "set":
                try:
                    size = key_size_of(argv[2])
                except TableError:
                    size = -1
                if size != self.key_size:
                    raise TableError(f"crypt: key set: the key size may not be changed "
                                     f"({self.key_size} bytes)")
                self._set_key(argv[2])
                return ""
            if len(argv) == 2 and argv[1].lower() == "wipe":
                self._drop_key()
                self._key_reference = None
                return ""
        words = " ".join(argv[:2]) + (" ..." if len(argv) > 2 else "")
        raise TableError(f"crypt: unrecognised message {words!r} (key set <key> | key wipe)")

    def close(self) -> None:
        self._drop_key()
        super().close()
