"""``journal_crypt``: how the kernel encrypts the journal on disk.

Upstream (``drivers/md/dm-integrity.c``, Linux 6.1): ``create_journal`` (the cipher, the
XOR pad and encrypted commit ids of a stream cipher, the per-section IVs of a block
cipher), ``xor_journal`` and ``crypt_journal`` (encrypting sections for
``write_journal``, decrypting the whole journal in ``replay_journal``).

The kernel keeps the journal in memory in plain text (``ic->journal``) and a second copy
for I/O (``ic->journal_io``): ``write_journal`` adds the section MACs to the plain
sections, encrypts them into the I/O copy and writes that; the replay reads the I/O copy
and decrypts all of it.  Section MACs are therefore MACs of plain text, and checked
after decryption.

Two schemes, chosen by the cipher's block size:

- a stream cipher (block size 1: ``ctr(aes)``, ``chacha20``) is run once over zeros as
  long as the journal's pages plus the four default commit ids, with a zero IV.  The
  journal is XORed with that pad, byte for byte at its position in the journal, and the
  commit ids the journal uses (also in memory) are the encrypted ones (made distinct as
  ``create_journal``'s ``retest_commit_id`` does);
- a block cipher (``cbc(aes)``, ``xts(aes)``) encrypts each section on its own, with an
  IV made by encrypting the section number (``le32``, zero-padded to the IV size) under a
  zero IV; the commit ids stay the defaults.
"""

from __future__ import annotations

import struct

import numpy as np

from ...block import SECTOR_SHIFT
from .layout import COMMIT_IDS, N_COMMIT_IDS

__all__ = ["JournalCipher", "JournalCrypt", "PAGE_SIZE"]

#: the kernel's journal lives in pages; the stream-cipher pad is per page
PAGE_SIZE = 4096
_LE64 = struct.Struct("<Q")


def _kernel_name(name: str) -> str:
    """cryptsetup's ``mode-cipher`` (``ctr-aes``) as the kernel's ``mode(cipher)``."""
    n = name.strip().lower()
    if "(" not in n and "-" in n:
        mode, _, cipher = n.partition("-")
        return f"{mode}({cipher})"
    return n


class JournalCipher:
    """One ``journal_crypt`` algorithm and key (kernel or cryptsetup spelling).

    Raises ValueError for a cipher the kernel's scheme is not implemented for here, or a
    key of the wrong size.
    """

    STREAM = ("ctr(aes)", "chacha20")
    BLOCK = ("cbc(aes)", "xts(aes)")

    def __init__(self, name: str, key: bytes):
        self.name = _kernel_name(name)
        if self.name not in self.STREAM + self.BLOCK:
            raise ValueError(f"journal encryption {name!r} is not supported (supported: "
                             f"{', '.join(self.STREAM + self.BLOCK)})")
        sizes = (64, 32) if self.name == "xts(aes)" else \
            (32,) if self.name == "chacha20" else (16, 24, 32)
        if key is None or len(key) not in sizes:
            n = 0 if key is None else len(key)
            raise ValueError(f"journal encryption {self.name}: key of {n} bytes, "
                             f"expected {'/'.join(map(str, sorted(sizes)))}")
        self._key = bytes(key)
        self.stream = self.name in self.STREAM
        try:
            self._cipher(bytes(16)).encryptor()
        except ValueError as e:     # e.g. an XTS key whose halves are equal
            raise ValueError(f"journal encryption {self.name}: {e}") from None

    def _cipher(self, iv: bytes):
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        if self.name == "chacha20":
            return Cipher(algorithms.ChaCha20(self._key, iv), mode=None)
        mode = {"ctr(aes)": modes.CTR, "cbc(aes)": modes.CBC, "xts(aes)": modes.XTS}[self.name]
        return Cipher(algorithms.AES(self._key), mode(iv))

    def pad_and_commit_ids(self, journal_pages: int) -> tuple[bytes, tuple[int, ...]]:
        """Stream ciphers: the XOR pad of the journal and the encrypted commit ids."""
        ids = b"".join(_LE64.pack(c) for c in COMMIT_IDS)
        enc = self._cipher(bytes(16)).encryptor()
        out = enc.update(bytes(journal_pages * PAGE_SIZE) + ids) + enc.finalize()
        pad = out[:journal_pages * PAGE_SIZE]
        commit = [_LE64.unpack_from(out, journal_pages * PAGE_SIZE + 8 * i)[0]
                  for i in range(N_COMMIT_IDS)]
        for i in range(N_COMMIT_IDS):  # create_journal's retest_commit_id
            while commit[i] in commit[:i]:
                commit[i] = (commit[i] + 1) & 0xFFFFFFFFFFFFFFFF
        return pad, tuple(commit)

    def section_iv(self, section: int) -> bytes:
        """Block ciphers: the IV of journal section ``section``."""
        data = struct.pack("<I", section) + bytes(12)
        enc = self._cipher(bytes(16)).encryptor()
        return (enc.update(data) + enc.finalize())[:16]

    def encrypt_section(self, plain, section: int, iv: bytes | None = None) -> bytes:
        enc = self._cipher(iv or self.section_iv(section)).encryptor()
        return enc.update(plain) + enc.finalize()

    def decrypt_section(self, data, section: int, iv: bytes | None = None) -> bytes:
        dec = self._cipher(iv or self.section_iv(section)).decryptor()
        return dec.update(data) + dec.finalize()

    def key_hex(self) -> str:
        """The key as a table line gives it (for building one; never print it)."""
        return self._key.hex()

    def bind(self, journal_geometry) -> "JournalCrypt":
        """This cipher for one journal (its pad or section IVs computed once)."""
        return JournalCrypt(self, journal_geometry)

    def __repr__(self) -> str:
        return f"JournalCipher({self.name!r})"


class JournalCrypt:
    """A :class:`JournalCipher` bound to one journal: what the kernel's ``create_journal``
    prepares (``journal_xor`` and the encrypted commit ids, or the per-section IVs), and
    the two directions of ``encrypt_journal``.  Buffers hold whole sections."""

    def __init__(self, cipher: JournalCipher, jg):
        self.cipher = cipher
        self.stream = cipher.stream
        self.section_bytes = jg.section_sectors << SECTOR_SHIFT
        self.n_sections = jg.journal_sections
        self.total_bytes = jg.total_sectors << SECTOR_SHIFT
        if self.stream:
            pages = -(-self.total_bytes // PAGE_SIZE)
            pad, ids = cipher.pad_and_commit_ids(pages)
            self._pad = np.frombuffer(pad, dtype=np.uint8)[:self.total_bytes]
            self.commit_ids = ids
        else:
            self._pad = None
            self.commit_ids = tuple(COMMIT_IDS)
            self._ivs: dict[int, bytes] = {}

    def _iv(self, section: int) -> bytes:
        iv = self._ivs.get(section)
        if iv is None:
            iv = self._ivs[section] = self.cipher.section_iv(section)
        return iv

    def encrypt(self, plain, first_section: int) -> bytes:
        """``plain``: whole consecutive sections from ``first_section`` (no wrap); their
        encryption, as ``write_journal`` puts them on disk."""
        mv = memoryview(plain).cast("B")
        n = len(mv) // self.section_bytes
        if n * self.section_bytes != len(mv) or first_section + n > self.n_sections:
            raise ValueError("journal encryption: not whole sections inside the journal")
        a = first_section * self.section_bytes
        if self.stream:
            return np.bitwise_xor(np.frombuffer(mv, dtype=np.uint8),
                                  self._pad[a:a + len(mv)]).tobytes()
        sb = self.section_bytes
        return b"".join(self.cipher.encrypt_section(mv[k * sb:(k + 1) * sb],
                                                    first_section + k,
                                                    self._iv(first_section + k))
                        for k in range(n))

    def decrypt_into(self, buf, first_section: int = 0) -> None:
        """Decrypt whole sections from ``first_section`` in place (the replay's
        ``encrypt_journal(ic, false, ...)``).  Commit ids keep the cipher's values."""
        mv = memoryview(buf).cast("B")
        n = len(mv) // self.section_bytes
        a = first_section * self.section_bytes
        arr = np.frombuffer(mv, dtype=np.uint8)
        if self.stream:
            np.bitwise_xor(arr[:n * self.section_bytes], self._pad[a:a + n * self.section_bytes],
                           out=arr[:n * self.section_bytes])
            return
        sb = self.section_bytes
        for k in range(n):
            mv[k * sb:(k + 1) * sb] = self.cipher.decrypt_section(
                mv[k * sb:(k + 1) * sb], first_section + k, self._iv(first_section + k))
