"""Journal mode's writer thread (homewriter.py): when it runs, that reads and writes stay
right beside it, that close drains it, and that its I/O errors are never lost.  Its crash
ordering is checked by test_crash.py (``background`` cases)."""

import os
import random
import threading

import pytest
from target_util import mapped, memdisk

from dmkit.block import FileDevice, MemoryDevice
from dmkit.block.bio import REQ_FUA
from dmkit.dm import DeviceResolver
from dmkit.errors import BlockIOError
from dmkit.targets.integrity.target import IntegrityTarget

ARGS = "disk 0 - J 3 internal_hash:crc32c journal_sectors:900 block_size:4096"


class FailingDisk(MemoryDevice):
    """A RAM disk whose requests from the writer thread fail once armed."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.armed = False

    def _submit(self, bio):
        if self.armed and threading.current_thread() is not threading.main_thread():
            raise BlockIOError(f"{self.name}: {bio.op.name.lower()} at sector {bio.sector} "
                               "failed: Input/output error")
        super()._submit(bio)


def _pattern(seed: int, nbytes: int) -> bytes:
    return random.Random(seed).randbytes(nbytes)


def test_thread_runs_on_files_only(tmp_path):
    path = tmp_path / "disk.img"
    with open(path, "wb") as f:
        f.truncate(8 << 20)
    resolver = DeviceResolver()
    t = IntegrityTarget(resolver, 0, 8, [str(path)] + ARGS.split()[1:])
    assert isinstance(t.data_dev, FileDevice) and t._home_writer is not None
    t.close()
    resolver.close()
    dev = mapped({"disk": memdisk(16384)}, ARGS)
    assert dev.targets[0]._home_writer is None          # nothing to overlap in memory
    dev.close()
    d_args = ARGS.replace(" J ", " D ")
    dev = mapped({"disk": memdisk(16384)}, d_args, background_writeback=True)
    assert dev.targets[0]._home_writer is None          # journal mode only
    dev.close()


@pytest.mark.parametrize("file_backed", [False, True])
def test_reads_and_writes_beside_the_thread(tmp_path, file_backed):
    """Random writes, flushes and reads while the thread writes home: every read returns
    the newest data; after close (which drains the thread) a fresh load reads the same."""
    if file_backed:
        path = tmp_path / "disk.img"
        with open(path, "wb") as f:
            f.truncate(16384 * 512)
        devs = {"disk": FileDevice(path)}
    else:
        devs = {"disk": memdisk(16384)}
    dev = mapped(devs, ARGS, background_writeback=True)
    t = dev.targets[0]
    assert t._home_writer is not None
    n = dev.nr_sectors
    want = bytearray(n * 512)
    dev.write(0, bytes(want))
    rng = random.Random(7)
    for k in range(300):
        r = rng.random()
        s = rng.randrange(n // 8) * 8
        cnt = min(rng.randint(1, 64), (n - s) // 8) * 8
        if r < 0.6:
            data = _pattern(k, cnt * 512)
            dev.write(s, data, REQ_FUA if rng.random() < 0.05 else 0)
            want[s * 512:(s + cnt) * 512] = data
        elif r < 0.65:
            dev.flush()
        else:
            assert dev.read(s, cnt) == want[s * 512:(s + cnt) * 512], f"op {k}"
    assert t.journal.home_writes > 5
    assert dev.read(0, n) == want
    dev.close()
    assert t._home_writer is None
    dev = mapped(devs, ARGS)
    assert dev.read(0, n) == want
    dev.close()
    if file_backed:
        devs["disk"].close()


def test_an_error_in_the_thread_fails_later_requests():
    disk = FailingDisk(16384, name="disk")
    dev = mapped({"disk": disk}, ARGS, background_writeback=True)
    t = dev.targets[0]
    n = dev.nr_sectors
    dev.write(0, bytes(n * 512))
    disk.armed = True
    with pytest.raises(BlockIOError) as e:
        for k in range(200):
            dev.write((k * 64) % (n - 64), _pattern(k, 64 * 512))
    assert "journal write-home failed" in str(e.value) and "Input/output error" in str(e.value)
    assert e.value.errno == 5
    # the target is failed: every later request says so, reads and flushes included
    for op in (lambda: dev.read(0, 8), dev.flush, lambda: dev.write(0, bytes(4096))):
        with pytest.raises(BlockIOError, match="failed earlier"):
            op()
    dev.close()                     # already reported: close does not raise it again
    assert t._home_writer is None


def test_close_surfaces_an_error_nobody_took():
    """The thread fails while no request comes: close raises it (and stops the thread)."""
    disk = FailingDisk(16384, name="disk")
    dev = mapped({"disk": disk}, ARGS, background_writeback=True)
    t = dev.targets[0]
    n = dev.nr_sectors
    dev.write(0, bytes(n * 512))
    hw = t._home_writer
    # a write-home under way when the device starts failing
    disk.armed = True
    k = 0
    while not hw.busy:         # one block at a time: the first job starts, untaken
        dev.write((k * 8) % n, _pattern(k, 8 * 512))
        k += 1
    with pytest.raises(BlockIOError, match="journal write-home failed"):
        dev.close()
    assert t._home_writer is None


def test_flush_returns_with_the_journal_durable_while_the_thread_works():
    """A FLUSH does not wait for the thread; what it covers is in the durable journal."""
    disk = memdisk(16384)
    dev = mapped({"disk": disk}, ARGS, background_writeback=True)
    n = dev.nr_sectors
    dev.write(0, bytes(n * 512))
    data = _pattern(1, 256 * 512)
    dev.write(512, data)
    dev.flush()
    image = bytes(disk.buf)         # a power cut now, whatever the thread has done
    t = dev.targets[0]
    t._failed = RuntimeError("power cut")
    dev.close()
    after = mapped({"disk": MemoryDevice(initial=image, name="disk")}, ARGS)
    assert after.read(512, 256) == data
    after.close()


def test_an_unclosed_target_does_not_keep_the_interpreter(tmp_path):
    """The worker thread is the executor's: idle, it does not block interpreter exit."""
    import subprocess
    import sys
    path = tmp_path / "disk.img"
    with open(path, "wb") as f:
        f.truncate(8 << 20)
    code = ("from dmkit.dm import MappedDevice\n"
            f"d = MappedDevice.from_table('0 8192 integrity {path} 0 - J 2 "
            "internal_hash:crc32c block_size:4096\\n', name='x')\n"
            "for k in range(40): d.write((k * 256) % 8000, bytes(256 * 512))\n")
    r = subprocess.run([sys.executable, "-c", code], timeout=60, capture_output=True, check=False,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert r.returncode == 0, r.stderr.decode()


# -- the queue of write-homes (HomeWriter alone) ---------------------------------------------

def test_queued_jobs_run_in_order_and_are_taken_oldest_first():
    from dmkit.targets.integrity.homewriter import HomeWriter
    hw = HomeWriter("q", depth=3)
    gate = threading.Event()
    ran = []
    hw.start(lambda: (gate.wait(10), ran.append(1)), "plan1")
    hw.start(lambda: ran.append(2), "plan2")
    assert hw.busy and not hw.full and not hw.done
    hw.start(lambda: ran.append(3), "plan3")
    assert hw.full
    with pytest.raises(RuntimeError, match="already under way"):
        hw.start(lambda: None, "plan4")
    gate.set()
    assert [hw.take(), hw.take(), hw.take()] == ["plan1", "plan2", "plan3"]
    assert ran == [1, 2, 3] and not hw.busy
    assert hw.close() is None
    with pytest.raises(ValueError):
        HomeWriter("q", depth=0)


def test_a_failed_job_stops_the_jobs_queued_after_it():
    """Blocks queued after a failed write-home (whose flush may not have happened) must not
    go home: those jobs do not run, and taking them says so."""
    from dmkit.targets.integrity.homewriter import HomeWriter, SkippedJob
    hw = HomeWriter("q", depth=3)
    gate = threading.Event()
    ran = []

    def fail():
        gate.wait(10)
        raise BlockIOError("disk: flush failed: Input/output error")

    hw.start(fail, "plan1")
    hw.start(lambda: ran.append(2), "plan2")
    hw.start(lambda: ran.append(3), "plan3")
    gate.set()
    with pytest.raises(BlockIOError, match="flush failed"):
        hw.take()
    with pytest.raises(SkippedJob, match="an earlier one failed"):
        hw.take()
    assert hw.busy
    assert isinstance(hw.close(), SkippedJob) is False     # nothing real left untaken
    assert ran == []
    # close reports the first real failure nobody took, not the skipped jobs after it
    hw = HomeWriter("q", depth=2)
    gate.clear()
    hw.start(fail, "plan1")
    hw.start(lambda: ran.append(2), "plan2")
    gate.set()
    err = hw.close()
    assert isinstance(err, BlockIOError) and ran == []


class GatedFlushDisk(MemoryDevice):
    """A RAM disk whose flushes from the writer thread wait for ``gate``."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.gate = threading.Event()
        self.gate.set()

    def _submit(self, bio):
        if bio.op.name == "FLUSH" and threading.current_thread() is not threading.main_thread():
            assert self.gate.wait(30), "the test never opened the gate"
        super()._submit(bio)


def test_requests_queue_a_second_write_home_while_the_first_flushes():
    """While the thread is stuck in a flush, a second write-home is queued behind it and
    the requests go on into the free sections; once the flush returns, both run in order
    and everything reads back, before and after close."""
    disk = GatedFlushDisk(32768, name="disk")
    args = "disk 0 - J 3 internal_hash:crc32c journal_sectors:4000 block_size:4096"
    dev = mapped({"disk": disk}, args, background_writeback=True)
    t = dev.targets[0]
    hw, jw = t._home_writer, t.journal
    assert hw.depth == 2
    n = dev.nr_sectors
    want = bytearray(n * 512)
    dev.write(0, bytes(want))           # every tag valid
    dev.flush()
    disk.gate.clear()
    chunk = t.home_chunk_sections * jw.section_entries * 8        # sectors
    k = 0
    while not hw.full:
        assert k < 8 * jw.n_sections, "no second write-home was queued"
        data = _pattern(k, chunk * 512)
        s = (k * chunk) % (n - chunk)
        dev.write(s, data)
        want[s * 512:(s + chunk) * 512] = data
        k += 1
    assert len(jw.homing) >= 2
    assert dev.read(0, n) == want        # from the journal and home, beside the stuck thread
    disk.gate.set()
    for j in range(40):                  # more writes: the thread catches up
        data = _pattern(1000 + j, 64 * 512)
        s = (j * 448) % (n - 64)
        dev.write(s, data)
        want[s * 512:(s + 64) * 512] = data
    assert dev.read(0, n) == want
    dev.close()
    dev = mapped({"disk": disk}, args)
    assert dev.read(0, n) == want
    dev.close()


def test_a_queued_job_not_started_can_be_withdrawn():
    from dmkit.targets.integrity.homewriter import HomeWriter
    hw = HomeWriter("q", depth=2)
    gate, started = threading.Event(), threading.Event()
    ran = []
    hw.start(lambda: (started.set(), gate.wait(10), ran.append(1)), "plan1")
    assert started.wait(10)
    assert hw.withdraw_pending() is None            # the running job stays
    hw.start(lambda: ran.append(2), "plan2")
    assert hw.withdraw_pending() == "plan2" and not hw.full
    hw.start(lambda: ran.append(3), "plan3")
    gate.set()
    assert hw.take() == "plan1" and hw.take() == "plan3"
    assert ran == [1, 3]                            # the withdrawn job never ran
    assert hw.close() is None


def test_the_writer_thread_has_journal_and_home_writes_started_at_once(tmp_path):
    """With the writer thread, every journal section written without FUA and every block
    written home is handed to start_writeback right after it is written (so the flushes
    wait for less), within the journal area and the data area respectively."""
    path = tmp_path / "disk.img"
    with open(path, "wb") as f:
        f.truncate(16384 * 512)

    class Hinted(FileDevice):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.hints = []

        def start_writeback(self, sector, nr_sectors):
            self.hints.append((sector, nr_sectors, threading.current_thread().name))
            super().start_writeback(sector, nr_sectors)

    disk = Hinted(path, name="disk")
    dev = mapped({"disk": disk}, ARGS, background_writeback=True)
    t = dev.targets[0]
    geo, jw = t.geo, t.journal
    j0 = geo.journal_start_sector
    j1 = j0 + jw.n_sections * jw.section_bytes // 512
    n = dev.nr_sectors
    want = bytearray(n * 512)
    dev.write(0, bytes(want))
    for k in range(60):
        data = _pattern(k, 128 * 512)
        s = (k * 128) % (n - 128)
        dev.write(s, data)
        want[s * 512:(s + 128) * 512] = data
    dev.close()
    journal = [h for h in disk.hints if j0 <= h[0] < j1]
    home = [h for h in disk.hints if not j0 <= h[0] < j1]
    assert journal and all(s + c <= j1 for s, c, _ in journal)
    assert home and all("writer" in name for _, _, name in home)
    areas = [(e.data_sector, e.data_sector + e.nr_sectors) for e in geo.extents(0, n)]
    assert all(any(a <= s and s + c <= b for a, b in areas) for s, c, _ in home)
    disk.close()
    dev = mapped({"disk": FileDevice(path, name="disk")}, ARGS)
    assert dev.read(0, n) == want
    dev.close()
