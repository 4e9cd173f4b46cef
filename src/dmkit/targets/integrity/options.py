"""The integrity target's table line: parsing and printing, as ``dm_integrity_ctr`` and
``dm_integrity_status`` (STATUSTYPE_TABLE) do it.

Kernel: ``Documentation/admin-guide/device-mapper/dm-integrity.rst`` and
``drivers/md/dm-integrity.c`` (Linux 6.1, target v1.10.0)::

    integrity <dev> <reserved_sectors> <tag_size|-> <J|B|D|R> <#opt_params> [params]

Parsing is stricter than the kernel's in one way only: an option given twice is refused
by name (the kernel keeps the last one).  Values are checked in the kernel's ranges.

dmkit's own extensions, documented in ``docs/targets/integrity.md``:

- a key may be ``:<size>:<type>:<description>`` (a keyring reference) instead of hex,
  e.g. ``internal_hash:hmac(sha256)::32:logon:vol1``;
- ``zero_on_error``: a block that fails verification reads as zeros instead of failing
  the request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from ...dm.args import ArgReader, FeatureSet, parse_uint
from ...dm.table import join_args

__all__ = ["AlgSpec", "IntegrityOptions", "parse_args", "MODES", "MAX_OPT_PARAMS"]

U32_MAX = 0xFFFF_FFFF
U64_MAX = (1 << 64) - 1
#: ``{0, 18, "Invalid number of feature args"}``, plus dmkit's zero_on_error
MAX_OPT_PARAMS = 19
MODES = ("J", "B", "D", "R")
DEFAULT_JOURNAL_WATERMARK = 50
DEFAULT_SYNC_MSEC = 10000
DEFAULT_BITMAP_FLUSH_MSEC = 10000

_NUMERIC = {
    # name: (lo, hi)
    "journal_sectors": (0, U32_MAX),
    "interleave_sectors": (0, U32_MAX),
    "buffer_sectors": (0, U32_MAX),
    "journal_watermark": (0, 100),
    "commit_time": (0, U32_MAX),
    "block_size": (512, 4096),
    "sectors_per_bit": (0, U64_MAX),
    "bitmap_flush_interval": (0, U32_MAX),
}
_ALGS = ("internal_hash", "journal_crypt", "journal_mac")
_FLAGS = ("recalculate", "reset_recalculate", "allow_discards", "fix_padding", "fix_hmac",
          "legacy_recalculate", "zero_on_error")


@dataclass(frozen=True)
class AlgSpec:
    """``internal_hash:alg[:key]`` and its kind: the algorithm name as written and the key
    text as written (hex, or a ``:size:type:description`` reference), for printing back."""

    alg: str
    key_text: str | None = None

    @property
    def key_is_reference(self) -> bool:
        return self.key_text is not None and self.key_text.startswith(":")

    def hex_key(self) -> bytes | None:
        """The key bytes of a hex key (None without a key or for a reference)."""
        if self.key_text is None or self.key_is_reference:
            return None
        return bytes.fromhex(self.key_text)

    def __str__(self) -> str:
        return self.alg if self.key_text is None else f"{self.alg}:{self.key_text}"


@dataclass
class IntegrityOptions:
    """Everything a table line says.  ``None`` means "not given" where the kernel's
    default depends on the device (journal_sectors, sectors_per_bit)."""

    dev: str
    start: int
    tag_size: int | None          # None for "-"
    mode: str
    journal_sectors: int | None = None
    interleave_sectors: int = 32768
    buffer_sectors: int = 128
    journal_watermark: int = DEFAULT_JOURNAL_WATERMARK
    commit_time: int = DEFAULT_SYNC_MSEC
    meta_device: str | None = None
    block_size: int = 512
    sectors_per_bit: int | None = None
    bitmap_flush_interval: int = DEFAULT_BITMAP_FLUSH_MSEC
    internal_hash: AlgSpec | None = None
    journal_crypt: AlgSpec | None = None
    journal_mac: AlgSpec | None = None
    recalculate: bool = False
    reset_recalculate: bool = False
    allow_discards: bool = False
    fix_padding: bool = False
    fix_hmac: bool = False
    legacy_recalculate: bool = False
    zero_on_error: bool = False
    given: frozenset[str] = field(default=frozenset())

    @property
    def sectors_per_block(self) -> int:
        return self.block_size >> 9


def _parse_alg(r: ArgReader, name: str, value: str) -> AlgSpec:
    alg, sep, key = value.partition(":")
    if not alg:
        raise r.error(f"invalid {name} argument {name}:{value!r}: no algorithm")
    if not sep:
        return AlgSpec(alg)
    if key.startswith(":"):
        return AlgSpec(alg, key)            # a keyring reference, resolved by the target
    if not key or len(key) % 2:
        raise r.error(f"invalid {name} argument: the key must be an even number of hex "
                      f"digits or a :<size>:<type>:<description> reference")
    try:
        bytes.fromhex(key)
    except ValueError:
        raise r.error(f"invalid {name} argument: the key is not hex") from None
    return AlgSpec(alg, key)


def parse_args(args: Sequence[str], target: str = "integrity") -> IntegrityOptions:
    """Parse a table's arguments; a TableError names what is wrong."""
    r = ArgReader(target, args)
    if len(args) < 4:
        raise r.error(f"expected <dev> <reserved_sectors> <tag_size|-> <J|B|D|R> "
                      f"[<#opt_params> <params>...], got {len(args)} arguments")
    dev = r.shift("device")
    start = r.uint("reserved sectors (starting offset)")
    word = r.shift("tag size")
    tag_size = None if word == "-" else parse_uint(word, "tag size", 1, U32_MAX,
                                                   prefix=r.prefix)
    mode = r.shift("mode")
    if mode == "I":
        raise r.error("mode I (tags inline in the device's own integrity metadata) is not "
                      "supported: an image has no such metadata")
    if mode not in MODES:
        raise r.error(f"invalid mode {mode!r} (expecting J, B, D or R)")
    o = IntegrityOptions(dev=dev, start=start, tag_size=tag_size, mode=mode)
    g = r.group("optional parameters")
    if g.remaining > MAX_OPT_PARAMS:
        raise r.error(f"invalid number of optional parameters {g.remaining}: must be in "
                      f"0..{MAX_OPT_PARAMS}")
    seen = FeatureSet(g)
    while g.remaining:
        word = g.shift("optional parameter")
        name, sep, value = word.partition(":")
        if sep and name in _NUMERIC:
            seen.add(name)
            lo, hi = _NUMERIC[name]
            v = parse_uint(value, name, lo, hi, prefix=g.prefix)
            if name == "block_size" and v & (v - 1):
                raise g.error(f"invalid block_size {v}: must be 512, 1024, 2048 or 4096")
            if name == "journal_sectors" and v == 0:
                v = 1
            if name == "buffer_sectors" and v == 0:
                v = 1
            setattr(o, name, v)
        elif sep and name == "meta_device":
            seen.add(name)
            if not value:
                raise g.error("meta_device: needs a device")
            o.meta_device = value
        elif sep and name in _ALGS:
            seen.add(name)
            setattr(o, name, _parse_alg(g, name, value))
        elif not sep and word in _FLAGS:
            seen.add(word)
            setattr(o, word, True)
        else:
            known = ", ".join([*(f"{n}:N" for n in _NUMERIC), "meta_device:DEV",
                               *(f"{n}:ALG[:KEY]" for n in _ALGS), *_FLAGS])
            raise g.error(f"invalid optional parameter {word!r} (known: {known})")
    r.done()
    if o.reset_recalculate:
        o.recalculate = True
    o.given = frozenset(seen.seen)
    return o


def format_table(o: IntegrityOptions, *, tag_size: int, recalculating: bool,
                 journal_sectors: int, log2_interleave_sectors: int, log2_buffer_sectors: int,
                 journal_watermark: int, sectors_per_bit: int, fixed_padding: bool,
                 fixed_hmac: bool) -> str:
    """``dm_integrity_status(STATUSTYPE_TABLE)``: the kernel's order and format, values as
    in effect (the superblock's, the clamped buffer size), then dmkit's zero_on_error."""
    words = []
    if o.meta_device is not None:
        words.append(f"meta_device:{o.meta_device}")
    if o.block_size != 512:
        words.append(f"block_size:{o.block_size}")
    if recalculating:
        words.append("recalculate")
    if o.reset_recalculate:
        words.append("reset_recalculate")
    if o.allow_discards:
        words.append("allow_discards")
    words.append(f"journal_sectors:{journal_sectors}")
    words.append(f"interleave_sectors:{1 << log2_interleave_sectors}")
    words.append(f"buffer_sectors:{1 << log2_buffer_sectors}")
    if o.mode == "J":
        words.append(f"journal_watermark:{journal_watermark}")
        words.append(f"commit_time:{o.commit_time}")
    if o.mode == "B":
        words.append(f"sectors_per_bit:{sectors_per_bit}")
        words.append(f"bitmap_flush_interval:{o.bitmap_flush_interval}")
    if fixed_padding:
        words.append("fix_padding")
    if fixed_hmac:
        words.append("fix_hmac")
    if o.legacy_recalculate:
        words.append("legacy_recalculate")
    for name in _ALGS:
        spec = getattr(o, name)
        if spec is not None:
            words.append(f"{name}:{spec}")
    if o.zero_on_error:
        words.append("zero_on_error")
    return join_args([o.dev, str(o.start), str(tag_size), o.mode, str(len(words)), *words])
