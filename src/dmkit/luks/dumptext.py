"""``cryptsetup luksDump`` text and ``--dump-json-metadata`` output.

The text reproduces cryptsetup 2.6's ``LUKS2_hdr_dump`` (``lib/luks2/luks2_json_metadata.c``,
key slot and digest handlers) and ``_luks_dump`` (``lib/setup.c``) for LUKS1, byte for
byte, tabs and trailing spaces included.  Nothing secret is in a dump: salts and digests
are public, the volume key never appears.
"""

from __future__ import annotations

from .layout import LUKS_NUMKEYS
from ._json import dumps_pretty
from .luks1 import Luks1Volume
from .luks2 import Luks2Header
from .metadata import LUKS2_DIGEST_MAX, LUKS2_KEYSLOTS_MAX, LUKS2_SEGMENT_MAX, \
    LUKS2_TOKENS_MAX, b64decode

__all__ = ["dump_luks2", "dump_luks2_json", "dump_luks1", "dump", "dump_volume_key",
           "luks1_json"]


def _hexlines(raw: bytes, line_sep: str) -> str:
    """``hexprint_base64``: 16 bytes a line, each byte followed by a space."""
    out = []
    for i, b in enumerate(raw):
        if i and i % 16 == 0:
            out.append("\n\t" + line_sep)
        out.append(f"{b:02x} ")
    return "".join(out) + "\n"


def _b64hex(text: str, line_sep: str = "            ") -> str:
    try:
        raw = b64decode(text, lambda what: ValueError(what))
    except ValueError:
        return ""
    return _hexlines(raw, line_sep)


def dump_luks2(header: Luks2Header) -> str:
    """The text of ``cryptsetup luksDump`` for a LUKS2 header."""
    md = header.metadata
    doc = md.to_dict()
    o = []
    w = o.append
    w("LUKS header information\n")
    w("Version:       \t2\n")
    w(f"Epoch:         \t{header.seqid}\n")
    w(f"Metadata area: \t{md.config.metadata_size} [bytes]\n")
    w(f"Keyslots area: \t{md.config.keyslots_size} [bytes]\n")
    w(f"UUID:          \t{header.uuid or '(no UUID)'}\n")
    w(f"Label:         \t{header.label or '(no label)'}\n")
    w(f"Subsystem:     \t{header.subsystem or '(no subsystem)'}\n")
    flags, reqs = md.config.flags, md.config.requirements
    w("Flags:       \t" + "".join(f"{f} " for f in flags))
    w(("" if flags else "(no flags)") + "\n" + ("" if reqs else "\n"))
    if reqs:
        w("Requirements:\t" + "".join(f"{r} " for r in reqs) + "\n\n")

    w("Data segments:\n")
    for i in range(LUKS2_SEGMENT_MAX):
        raw = doc["segments"].get(str(i))
        if raw is None:
            continue
        w(f"  {i}: {raw['type']}\n")
        w(f"\toffset: {int(raw['offset'])} [bytes]\n")
        if raw["size"] == "dynamic":
            w("\tlength: (whole device)\n")
        else:
            w(f"\tlength: {int(raw['size'])} [bytes]\n")
        if "encryption" in raw:
            w(f"\tcipher: {raw['encryption']}\n")
        if "sector_size" in raw:
            w(f"\tsector: {raw['sector_size']} [bytes]\n")
        if isinstance(raw.get("integrity"), dict) and "type" in raw["integrity"]:
            w(f"\tintegrity: {raw['integrity']['type']}\n")
        if raw.get("flags"):
            w("\tflags : " + ", ".join(raw["flags"]) + "\n")
        w("\n")

    w("Keyslots:\n")
    seg_digest = md.digest_of_segment(md.default_segment.id)
    for j in range(LUKS2_KEYSLOTS_MAX):
        ks = md.keyslots.get(j)
        if ks is None:
            continue
        bound = seg_digest is not None and j in seg_digest.keyslots
        w(f"  {j}: {ks.type}{'' if bound else ' (unbound)'}\n")
        w(f"\tKey:        {ks.key_size * 8} bits\n")
        w(f"\tPriority:   {ks.priority_name}\n")
        if ks.type == "luks2":
            w(f"\tCipher:     {ks.area_encryption}\n")
            w(f"\tCipher key: {ks.area_key_size * 8} bits\n")
            w(f"\tPBKDF:      {ks.kdf.type}\n")
            if ks.kdf.type == "pbkdf2":
                w(f"\tHash:       {ks.kdf.hash}\n")
                w(f"\tIterations: {ks.kdf.iterations}\n")
            else:
                w(f"\tTime cost:  {ks.kdf.time}\n")
                w(f"\tMemory:     {ks.kdf.memory}\n")
                w(f"\tThreads:    {ks.kdf.cpus}\n")
            w("\tSalt:       " + _hexlines(ks.kdf.salt, "            "))
            w(f"\tAF stripes: {ks.af_stripes}\n")
            w(f"\tAF hash:    {ks.af_hash}\n")
            w(f"\tArea offset:{ks.area_offset} [bytes]\n")
            w(f"\tArea length:{ks.area_size} [bytes]\n")
        for key, d in doc["digests"].items():
            if str(j) in d["keyslots"]:
                w(f"\tDigest ID:  {key}\n")

    w("Tokens:\n")
    for j in range(LUKS2_TOKENS_MAX):
        t = md.tokens.get(j)
        if t is None:
            continue
        w(f"  {j}: {t.type}\n")
        if t.type == "luks2-keyring":
            w(f"\tKey description: {t.key_description}\n")
        for k in t.keyslots:
            w(f"\tKeyslot:    {k}\n")

    w("Digests:\n")
    for i in range(LUKS2_DIGEST_MAX):
        raw = doc["digests"].get(str(i))
        if raw is None:
            continue
        w(f"  {i}: {raw['type']}\n")
        if raw["type"] == "pbkdf2":
            w(f"\tHash:       {raw['hash']}\n")
            w(f"\tIterations: {raw['iterations']}\n")
            w("\tSalt:       " + _b64hex(raw["salt"]))
            w("\tDigest:     " + _b64hex(raw["digest"]))
    return "".join(o)


def dump_luks2_json(header: Luks2Header) -> str:
    """``luksDump --dump-json-metadata``: json-c's pretty print, no trailing newline."""
    return dumps_pretty(header.metadata.to_dict())


def _hex(raw: bytes) -> str:
    return "".join(f"{b:02x} " for b in raw)


def dump_luks1(volume: Luks1Volume, device_name: str) -> str:
    """The text of ``cryptsetup luksDump`` for a LUKS1 header on ``device_name``."""
    h = volume.header
    o = [f"LUKS header information for {device_name}\n\n",
         f"Version:       \t{h.version}\n",
         f"Cipher name:   \t{h.cipherName}\n",
         f"Cipher mode:   \t{h.cipherMode}\n",
         f"Hash spec:     \t{h.hashSpec}\n",
         f"Payload offset:\t{h.payloadOffset}\n",
         f"MK bits:       \t{h.keyBytes * 8}\n",
         f"MK digest:     \t{_hex(h.mkDigest)}\n",
         f"MK salt:       \t{_hex(h.mkDigestSalt[:16])}\n",
         f"               \t{_hex(h.mkDigestSalt[16:])}\n",
         f"MK iterations: \t{h.mkDigestIterations}\n",
         f"UUID:          \t{h.uuid}\n\n"]
    for i in range(LUKS_NUMKEYS):
        kb = h.keyblock[i]
        if not kb.enabled:
            o.append(f"Key Slot {i}: DISABLED\n")
            continue
        o += [f"Key Slot {i}: ENABLED\n",
              f"\tIterations:         \t{kb.passwordIterations}\n",
              f"\tSalt:               \t{_hex(kb.passwordSalt[:16])}\n",
              f"\t                      \t{_hex(kb.passwordSalt[16:])}\n",
              f"\tKey material offset:\t{kb.keyMaterialOffset}\n",
              f"\tAF stripes:            \t{kb.stripes}\n"]
    return "".join(o)


def dump(volume, device_name: str | None = None) -> str:
    """``luksDump`` text for a :class:`Luks1Volume` or :class:`Luks2Volume`."""
    if volume.version == 1:
        return dump_luks1(volume, device_name or volume.device.name)
    return dump_luks2(volume.header)


def dump_volume_key(opened, device_name: str, *, key_file: str | None = None) -> str:
    """``cryptsetup luksDump --dump-volume-key`` (``luksDump_with_volume_key``): the header
    summary and the volume key in hex, or, with ``key_file``, where the key was stored.
    The text holds the key: print it only when the user asked for it."""
    seg = opened.segment
    name, _, mode = seg.cipher.partition("-")
    key = opened.volume_key
    lines = [f"LUKS header information for {device_name}",
             f"Cipher name:   \t{name}",
             f"Cipher mode:   \t{mode}",
             f"Payload offset:\t{seg.offset_sectors}",
             f"UUID:          \t{opened.uuid}",
             f"MK bits:       \t{len(key) * 8}"]
    if key_file is not None:
        lines.append(f"Key stored to file {key_file}.")
        return "\n".join(lines) + "\n"
    raw = key.reveal()
    rows = ["".join(f"{b:02x} " for b in raw[i:i + 16]) for i in range(0, len(raw), 16)]
    lines.append("MK dump:\t" + "\n\t\t".join(rows))
    return "\n".join(lines) + "\n"


def luks1_json(volume: Luks1Volume) -> dict:
    """A LUKS1 header as a JSON object (dmkit's own: LUKS1 has no JSON metadata).  Field
    names are ``struct luks_phdr``'s; salts and digests are hex."""
    h = volume.header
    return {
        "version": h.version, "uuid": h.uuid, "cipherName": h.cipherName,
        "cipherMode": h.cipherMode, "hashSpec": h.hashSpec, "payloadOffset": h.payloadOffset,
        "keyBytes": h.keyBytes, "mkDigest": h.mkDigest.hex(),
        "mkDigestSalt": h.mkDigestSalt.hex(), "mkDigestIterations": h.mkDigestIterations,
        "keyslots": {str(i): {"active": kb.enabled,
                              "passwordIterations": kb.passwordIterations,
                              "passwordSalt": kb.passwordSalt.hex(),
                              "keyMaterialOffset": kb.keyMaterialOffset,
                              "stripes": kb.stripes}
                     for i, kb in enumerate(h.keyblock)},
    }
