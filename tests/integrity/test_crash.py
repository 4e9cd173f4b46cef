"""Crash consistency: a randomized write/flush workload runs once on recording devices;
then, for many crash points and three cache models (crashsim.py), the devices as a power
cut would leave them are loaded again.

- J mode: every block reads its old or a new content and never fails verification;
  the verified reader (replaying in memory) sees the same.
- D mode: some crash points leave blocks whose data and tag disagree (what the journal
  exists to prevent); mode R reads every block anyway, and zero_on_error returns zeros for
  exactly the blocks that fail.
- B mode: the dirty bitmap makes the load recalculate; afterwards every block verifies.

``DMKIT_CRASH_POINTS`` sets the number of crash points per layout and mode (each checked
under the three models); the default keeps the suite quick.
"""

import os
import random

import pytest
from crashsim import KINDS, Recorder, VersionHistory, crash_images
from target_util import FakeClock, mapped, memdisk, salt_rng

from dmkit.block import MemoryDevice
from dmkit.block.bio import REQ_FUA
from dmkit.dm import DeviceResolver, MappedDevice
from dmkit.errors import IntegrityError
from dmkit.targets.integrity import IntegrityReader
from dmkit.targets.integrity.jcrypt import JournalCipher
from dmkit.targets.integrity.target import IntegrityTarget

N_POINTS = int(os.environ.get("DMKIT_CRASH_POINTS", "60"))
KEY = "c3" * 32
JKEY = "5a" * 16 + "a5" * 16

CASES = {
    # name: (options, with a metadata device, block size, reader algorithm, key)
    # journals of several sections (5, 3 and 6), so that commits, write-home and the
    # sequence numbers wrap at different times
    "crc32c-512": ("internal_hash:crc32c journal_sectors:900 fix_padding "
                   "interleave_sectors:256", False, 512, "crc32c", None),
    "sha256-4k": ("internal_hash:sha256 block_size:4096 journal_sectors:800 fix_padding",
                  False, 4096, "sha256", None),
    "hmac-meta": (f"internal_hash:hmac(sha256):{KEY} fix_hmac meta_device:meta "
                  "journal_sectors:530", True, 512, "hmac(sha256)", bytes.fromhex(KEY)),
    # journal_crypt, each scheme: stream ciphers (XOR pad, encrypted commit ids) and block
    # ciphers (per-section IVs), with and without a journal MAC
    "ctr-crc32c": (f"internal_hash:crc32c journal_sectors:900 fix_padding interleave_sectors:256 "
                   f"journal_crypt:ctr(aes):{JKEY}", False, 512, "crc32c", None),
    "chacha-4k": (f"internal_hash:sha256 block_size:4096 journal_sectors:800 fix_padding "
                  f"journal_crypt:chacha20:{JKEY}", False, 4096, "sha256", None),
    "cbc-jmac-meta": (f"internal_hash:hmac(sha256):{KEY} fix_hmac meta_device:meta "
                      f"journal_sectors:530 journal_crypt:cbc(aes):{JKEY[:32]} "
                      f"journal_mac:hmac(sha256):{JKEY}", True, 512, "hmac(sha256)",
                      bytes.fromhex(KEY)),
    "xts-crc32c": (f"internal_hash:crc32c journal_sectors:900 fix_padding interleave_sectors:256 "
                   f"journal_crypt:xts(aes):{JKEY}{KEY}", False, 512, "crc32c", None),
}
J_CASES = sorted(CASES)


def reader_journal_options(opts: str) -> dict:
    """The reader's arguments for the journal_crypt / journal_mac words of a table."""
    out = {}
    for w in opts.split():
        name, _, value = w.partition(":")
        alg, _, key = value.rpartition(":")
        if name == "journal_crypt":
            out["journal_crypt"] = JournalCipher(alg, bytes.fromhex(key))
        elif name == "journal_mac":
            out["journal_mac"], out["journal_mac_key"] = alg, bytes.fromhex(key)
    return out


class Run:
    """One recorded workload."""

    def __init__(self, mode: str, case: str, seed: int, nops: int = 45,
                 after: "tuple[Run, object] | None" = None, background: bool = False):
        """``after``: (an earlier run, one of its crash images): start from that crash (the
        load replays it, and the replay itself is recorded) instead of a fresh device.
        ``background``: mode J writes the journal home in its writer thread (the recording
        devices log both threads' requests in the order they complete)."""
        opts, with_meta, bs, self.alg, self.key = CASES[case]
        self.journal_opts = reader_journal_options(opts)
        self.mode, self.bs, self.spb = mode, bs, bs // 512
        words = opts.split() + ["sectors_per_bit:32", "journal_watermark:60",
                                "commit_time:2000", "bitmap_flush_interval:1500"]
        self.args = f"disk 0 - {mode} {len(words)} {' '.join(words)}"
        if after is None:
            devs0 = {"disk": memdisk(2048)}
            if with_meta:
                devs0["meta"] = memdisk(1024)
            dev = mapped(devs0, self.args, clock=FakeClock())
            self.n = n = dev.nr_sectors
            dev.write(0, bytes(n * 512))
            dev.close()
            images = {k: bytes(v.buf) for k, v in devs0.items()}
            initial = bytes(n * 512)
        else:
            images = {k: bytes(v) for k, v in after[1].images.items()}
            self.n = n = after[0].n
            dev, _ = after[0].load(after[1])     # on copies: what the replay will give
            initial = bytes(dev.read(0, n))
            dev.close()
        self.rec = rec = Recorder()
        devs = {k: rec.device(k, v) for k, v in images.items()}
        clock = FakeClock()
        t = IntegrityTarget(DeviceResolver(devs), 0, n, self.args.split(), clock=clock,
                            rng=salt_rng(), background_writeback=background)
        dev = MappedDevice("crash", [t], resolver=t.resolver)
        self.nblocks = nb = n // self.spb
        self.hist = hist = VersionHistory(nb, bs, initial)
        rng = random.Random(seed)
        for op in range(nops):
            r = rng.random()
            if r < 0.15:
                dev.flush()
                hist.flushed(op, rec.position)
            elif r < 0.22:
                clock.advance(rng.uniform(0, 3))
                t.tick()
            else:
                b0 = rng.randrange(nb)
                cnt = min(rng.randint(1, 24), nb - b0)
                data = rng.randbytes(cnt * bs)
                fua = rng.random() < 0.1
                start = rec.position
                for k in range(cnt):
                    hist.write(op, start, b0 + k, data[k * bs:(k + 1) * bs])
                dev.write(b0 * self.spb, data, REQ_FUA if fua else 0)
                if fua:
                    hist.flushed(op, rec.position)
        self.home_writes = t.journal.home_writes if t.journal is not None else 0
        dev.close()
        hist.flushed(nops, rec.position)

    def points(self, count: int, seed: int = 1) -> list[int]:
        rng = random.Random(seed)
        last = self.rec.position
        pts = {0, last} | {rng.randrange(last + 1) for _ in range(count)}
        return sorted(pts)

    def load(self, crash, args=None):
        devs = {k: MemoryDevice(initial=v, name=k) for k, v in crash.images.items()}
        t = IntegrityTarget(DeviceResolver(devs), 0, self.n, (args or self.args).split())
        return MappedDevice("after", [t], resolver=t.resolver), devs

    def in_history(self, block: int, point: int, data: bytes, *, torn_ok: bool = False) -> bool:
        allowed = self.hist.allowed(block, point)
        if data in allowed:
            return True
        if not torn_ok:
            return False
        # a block of several sectors may be torn: each sector from some allowed version
        return all(any(data[s * 512:(s + 1) * 512] == a[s * 512:(s + 1) * 512] for a in allowed)
                   for s in range(self.spb))


def blocks(data: bytes, bs: int):
    return [data[k * bs:(k + 1) * bs] for k in range(len(data) // bs)]


@pytest.mark.parametrize("case,background",
                         [(c, False) for c in J_CASES]
                         + [(c, True) for c in ("crc32c-512", "sha256-4k", "hmac-meta",
                                                "cbc-jmac-meta", "xts-crc32c")])
def test_journal_mode_survives_every_crash(case, background):
    """``background``: with the writer thread, which writes the journal home beside the
    requests (its flushes and writes interleave with theirs in the log)."""
    run = Run("J", case, seed=11, background=background)
    if background:
        assert run.home_writes, "the workload should write the journal home"
    checked = 0
    for crash in crash_images(run.rec, run.points(N_POINTS), seed=5):
        if checked % 7 == 0:
            data_img = crash.images["disk"]
            meta_img = crash.images.get("meta")
            r = IntegrityReader(MemoryDevice(initial=data_img),
                                MemoryDevice(initial=meta_img) if meta_img else None,
                                internal_hash=run.alg, key=run.key, replay_journal=True,
                                **run.journal_opts)
            via_reader = r.read(0, run.n)
        else:
            via_reader = None
        dev, _ = run.load(crash)
        data = dev.read(0, run.n)        # one request: any bad block would fail it
        dev.close()
        for b, blk in enumerate(blocks(data, run.bs)):
            assert run.in_history(b, crash.point, blk), \
                f"{crash.kind} crash at {crash.point}: block {b} is neither old nor new"
        if via_reader is not None:
            assert via_reader == data
        checked += 1
    assert checked == len(run.points(N_POINTS)) * len(KINDS)


@pytest.mark.parametrize("case", ["crc32c-512", "ctr-crc32c", "xts-crc32c"])
def test_journal_mode_survives_a_crash_after_a_replay(case):
    """Crash, load (the replay continues the journal, as the kernel does, without clearing
    it), write more, crash again -- also during that replay: old sections left in the
    journal are replayed first and newer ones after, so every block is still old or new."""
    first = Run("J", case, seed=31, nops=40)
    crashes = [c for c in crash_images(first.rec, first.points(12, seed=3), kinds=("prefix",),
                                       seed=4)]
    # take crash images that leave committed blocks in the journal
    picked = []
    for crash in crashes:
        r = IntegrityReader(MemoryDevice(initial=crash.images["disk"]), internal_hash="crc32c",
                            replay_journal=True, **first.journal_opts)
        if r.replayed_sectors:
            picked.append(crash)
    assert picked, "some crash points should leave a journal to replay"
    for k, crash in enumerate(picked[:3]):
        run = Run("J", case, seed=40 + k, nops=40, after=(first, crash))
        for again in crash_images(run.rec, run.points(max(N_POINTS // 3, 10)), seed=k):
            dev, _ = run.load(again)
            data = dev.read(0, run.n)
            dev.close()
            for b, blk in enumerate(blocks(data, run.bs)):
                assert run.in_history(b, again.point, blk), \
                    f"second {again.kind} crash at {again.point}: block {b}"


def _blockwise(dev, nblocks, spb):
    out, bad = [], []
    for b in range(nblocks):
        try:
            out.append(bytes(dev.read(b * spb, spb)))
        except IntegrityError:
            out.append(None)
            bad.append(b)
    return out, bad


def test_direct_mode_shows_mismatches_and_salvage():
    run = Run("D", "crc32c-512", seed=3, nops=60)
    points = run.points(max(N_POINTS // 2, 20))
    crashes_with_mismatch = 0
    for crash in crash_images(run.rec, points, kinds=("reorder", "prefix"), seed=9):
        dev, devs = run.load(crash)
        got, bad = _blockwise(dev, run.nblocks, run.spb)
        dev.close()
        crashes_with_mismatch += bool(bad)
        for b, blk in enumerate(got):
            if blk is not None:        # a block that verifies is old or new: D writes whole
                assert run.in_history(b, crash.point, blk)
        if not bad:
            continue
        # mode R: no checks, every block comes back, each the data that was written
        r_args = run.args.replace(" D ", " R ")
        dev, _ = run.load(crash, r_args)
        for b, blk in enumerate(blocks(dev.read(0, run.n), run.bs)):
            assert run.in_history(b, crash.point, blk)
        dev.close()
        # zero_on_error: the request succeeds, exactly the bad blocks read as zeros
        words = run.args.split()
        words[4] = str(int(words[4]) + 1)
        z_args = " ".join(words + ["zero_on_error"])
        dev, _ = run.load(crash, z_args)
        data = dev.read(0, run.n)
        t = dev.targets[0]
        assert t.zeroed_blocks == len(bad) and t.number_of_mismatches == 1
        for b, blk in enumerate(blocks(data, run.bs)):
            assert (blk == bytes(run.bs)) if b in bad else (blk == got[b])
        assert t.status("info").endswith(f"zeroed_blocks:{len(bad)}")
        dev.close()
    assert crashes_with_mismatch, "direct mode should show mismatches after some crashes"


@pytest.mark.parametrize("case", ["crc32c-512", "sha256-4k"])
def test_bitmap_mode_recovers_by_recalculation(case):
    run = Run("B", case, seed=21)
    recalculated = 0
    for crash in crash_images(run.rec, run.points(N_POINTS), seed=2):
        dev, _ = run.load(crash)
        t = dev.targets[0]
        recalculated += t.status("info").split()[2] != "-"
        data = dev.read(0, run.n)        # never fails: dirty regions were recalculated
        dev.close()
        for b, blk in enumerate(blocks(data, run.bs)):
            assert run.in_history(b, crash.point, blk, torn_ok=run.spb > 1)
    assert recalculated, "some crash points should leave a dirty bitmap"
