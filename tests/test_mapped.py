"""The dm core's bio splitting, checked against a simple model with hypothesis."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmkit.block import (Bio, BioFlags, BioIntegrityPayload, BioOp, CryptoCapabilities,
                         IntegrityProfile, MemoryDevice, QueueLimits)
from dmkit.dm import DeviceResolver, MappedDevice, Target
from dmkit.errors import BlockIOError, InvalidBioError, ReadOnlyError, TableError

NR_DEVS = 3
DEV_SECTORS = 256


@st.composite
def tables(draw):
    """A table of linear and zero segments over NR_DEVS memory devices."""
    segs = []
    for _ in range(draw(st.integers(1, 8))):
        length = draw(st.integers(1, 40))
        if draw(st.booleans()):
            dev = draw(st.integers(0, NR_DEVS - 1))
            offset = draw(st.integers(0, DEV_SECTORS - length))
            segs.append(("linear", length, dev, offset))
        else:
            segs.append(("zero", length, None, None))
    return segs


def build(segs, devs):
    resolver = DeviceResolver({f"m{i}": d for i, d in enumerate(devs)})
    lines, start = [], 0
    for kind, length, dev, offset in segs:
        args = f" m{dev} {offset}" if kind == "linear" else ""
        lines.append(f"{start} {length} {kind}{args}")
        start += length
    return MappedDevice.from_table("\n".join(lines) + "\n", resolver=resolver)


def model_locate(segs, sector):
    """(kind, dev, dev_sector) for one mapped sector — the model, one sector at a time."""
    start = 0
    for kind, length, dev, offset in segs:
        if sector < start + length:
            return kind, dev, None if dev is None else offset + sector - start
        start += length
    raise AssertionError("beyond the table")


def fill(seed, nr_sectors):
    return bytes((seed + i * 7) % 251 for i in range(nr_sectors * 512))


@settings(max_examples=150, deadline=None)
@given(segs=tables(), data=st.data())
def test_random_requests_match_model(segs, data):
    devs = [MemoryDevice(DEV_SECTORS, name=f"m{i}") for i in range(NR_DEVS)]
    model = [bytearray(DEV_SECTORS * 512) for _ in range(NR_DEVS)]
    md = build(segs, devs)
    total = md.nr_sectors
    assert total == sum(s[1] for s in segs)
    for _ in range(data.draw(st.integers(1, 12))):
        sector = data.draw(st.integers(0, total - 1))
        nr = data.draw(st.integers(1, total - sector))
        op = data.draw(st.sampled_from(["read", "write", "write_zeroes", "discard"]))
        if op == "write":
            payload = fill(data.draw(st.integers(0, 250)), nr)
            md.write(sector, payload)
            for i in range(nr):
                kind, dev, ds = model_locate(segs, sector + i)
                if kind == "linear":
                    model[dev][ds * 512:(ds + 1) * 512] = payload[i * 512:(i + 1) * 512]
        elif op in ("write_zeroes", "discard"):
            getattr(md, op)(sector, nr)
            for i in range(nr):
                kind, dev, ds = model_locate(segs, sector + i)
                if kind == "linear":
                    model[dev][ds * 512:(ds + 1) * 512] = bytes(512)
        else:
            got = md.read(sector, nr)
            want = bytearray()
            for i in range(nr):
                kind, dev, ds = model_locate(segs, sector + i)
                want += bytes(512) if kind == "zero" else model[dev][ds * 512:(ds + 1) * 512]
            assert got == want
    for d, m in zip(devs, model):
        assert d.buf == m
    md.close()


class Recorder(Target):
    """A test target that records what it is sent."""

    name = "recorder"
    num_flush_bios = 2

    def __init__(self, resolver, start, length, args, *, read_only=False):
        super().__init__(resolver, start, length, args, read_only=read_only)
        self.seen = []

    def map(self, bio):
        self.seen.append((bio.op, bio.sector, bio.nr_sectors, bio.flags))
        self.flush_nrs = getattr(self, "flush_nrs", []) + [bio.target_bio_nr]

    def status(self, kind):
        return ""


def recorder_device(lengths):
    resolver = DeviceResolver()
    targets, start = [], 0
    for n in lengths:
        targets.append(Recorder(resolver, start, n, []))
        start += n
    return MappedDevice("rec", targets)


def test_split_hands_relative_sectors_and_shares_buffers():
    md = recorder_device([10, 5, 20])
    md.submit(Bio.write(8, bytes(20 * 512), BioFlags.FUA))
    assert [t.seen for t in md.targets] == [
        [(BioOp.WRITE, 8, 2, BioFlags.FUA)],
        [(BioOp.WRITE, 0, 5, BioFlags.FUA)],
        [(BioOp.WRITE, 0, 13, BioFlags.FUA)],
    ]


def test_flush_reaches_every_target_num_flush_bios_times():
    md = recorder_device([10, 5])
    md.flush()
    assert [len(t.seen) for t in md.targets] == [2, 2]
    assert all(op is BioOp.FLUSH and n == 0 for t in md.targets for op, _, n, _ in t.seen)
    assert [t.flush_nrs for t in md.targets] == [[0, 1], [0, 1]]


def test_preflush_write_becomes_flush_then_plain_write():
    md = recorder_device([10, 5])
    md.submit(Bio.write(12, bytes(512), BioFlags.PREFLUSH | BioFlags.FUA))
    assert md.targets[0].seen == [(BioOp.FLUSH, 0, 0, BioFlags.PREFLUSH)] * 2
    assert md.targets[1].seen[:2] == [(BioOp.FLUSH, 0, 0, BioFlags.PREFLUSH)] * 2
    assert md.targets[1].seen[2] == (BioOp.WRITE, 2, 1, BioFlags.FUA)


def test_read_fills_parent_buffer_across_targets():
    a = MemoryDevice(initial=b"A" * 1024)
    b = MemoryDevice(initial=b"B" * 1024)
    md = MappedDevice.from_table("0 2 linear a 0\n2 1 zero\n3 2 linear b 0\n",
                                 resolver=DeviceResolver({"a": a, "b": b}))
    assert bytes(md.read(1, 4)) == b"A" * 512 + bytes(512) + b"B" * 1024


def test_request_validation_names_device_and_sector():
    md = MappedDevice.from_table("0 8 zero\n", name="vol")
    with pytest.raises(InvalidBioError, match=r"vol: request for sectors 6\+4 is outside"):
        md.read(6, 4)
    with pytest.raises(InvalidBioError):
        md.submit(Bio(BioOp.READ, 0, 2, memoryview(bytearray(512))))
    ro = MappedDevice.from_table("0 8 zero\n", name="ro", read_only=True)
    with pytest.raises(ReadOnlyError, match="ro: device is read-only"):
        ro.write(0, bytes(512))


def test_error_target_fails_after_earlier_pieces():
    a = MemoryDevice(8)
    md = MappedDevice.from_table("0 4 linear a 0\n4 4 error\n",
                                 resolver=DeviceResolver({"a": a}))
    with pytest.raises(BlockIOError, match="error: write at sector 4"):
        md.write(2, b"x" * 2048)


def test_limits_and_alignment_stacking():
    big = MemoryDevice(64, limits=QueueLimits(logical_block_size=4096))
    small = MemoryDevice(64)
    r = DeviceResolver({"big": big, "small": small})
    md = MappedDevice.from_table("0 16 linear big 0\n16 8 linear small 0\n", resolver=r)
    assert md.logical_block_size == 4096
    with pytest.raises(TableError, match="not aligned to the 4096-byte logical block size"):
        MappedDevice.from_table("0 12 linear big 0\n", resolver=r)
    with pytest.raises(InvalidBioError, match="not aligned"):
        md.read(1, 8)


def test_integrity_profile_passes_through_linear_only_when_uniform():
    prof = IntegrityProfile("DM-DIF-EXT-TAG", 8, 8, 512)
    a = MemoryDevice(64, integrity=prof)
    b = MemoryDevice(64, integrity=prof)
    c = MemoryDevice(64)
    r = DeviceResolver({"a": a, "b": b, "c": c})
    md = MappedDevice.from_table("0 8 linear a 0\n8 8 linear b 8\n", resolver=r)
    assert md.integrity == prof
    # metadata travels with the split pieces
    meta = bytearray(range(16 * 8))
    bio = Bio.write(4, bytes(8 * 512))
    bio.integrity = BioIntegrityPayload(memoryview(meta)[4 * 8:12 * 8], 8, 512)
    md.submit(bio)
    assert a.meta[4 * 8:8 * 8] == meta[4 * 8:8 * 8]
    assert b.meta[8 * 8:12 * 8] == meta[8 * 8:12 * 8]
    assert MappedDevice.from_table("0 8 linear a 0\n8 8 linear c 0\n", resolver=r).integrity is None
    assert MappedDevice.from_table("0 8 linear a 0\n8 8 zero\n", resolver=r).integrity is None


def test_crypto_capabilities_intersect_when_all_targets_pass_them():
    a = MemoryDevice(64)
    a.crypto = CryptoCapabilities({"AES-256-XTS": 0x1000 | 0x200, "ADIANTUM": 0x200})
    b = MemoryDevice(64)
    b.crypto = CryptoCapabilities({"AES-256-XTS": 0x1000}, max_dun_bytes=4)
    r = DeviceResolver({"a": a, "b": b})
    md = MappedDevice.from_table("0 8 linear a 0\n8 8 linear b 0\n", resolver=r)
    assert dict(md.crypto.modes) == {"AES-256-XTS": 0x1000}
    assert md.crypto.max_dun_bytes == 4
    assert MappedDevice.from_table("0 8 linear a 0\n8 8 zero\n", resolver=r).crypto is None


def test_message_goes_to_the_target_at_sector():
    md = MappedDevice.from_table("0 8 zero\n", name="z")
    with pytest.raises(TableError, match="zero: unrecognised message 'hello'"):
        md.message(0, ["hello"])
    with pytest.raises(TableError, match="outside"):
        md.message(8, ["hello"])


def test_unknown_target_and_constructor_errors_name_the_line(make_image):
    with pytest.raises(TableError, match=r"t:2: unknown target type 'nope'"):
        MappedDevice.from_table("0 8 zero\n8 8 nope\n", source="t")
    with pytest.raises(TableError, match=r"t:1: linear: cannot open device '/nonexistent'"):
        MappedDevice.from_table("0 8 linear /nonexistent 0\n", source="t")
    img = make_image(16)
    with pytest.raises(TableError, match=r"go past its end \(16 sectors\)"):
        MappedDevice.from_table(f"0 8 linear {img} 10\n", source="t")


@pytest.mark.parametrize("args,needle", [
    ("", "linear: missing device path"),
    ("{img}", "linear: missing device sector"),
    ("{img} x", "linear: invalid device sector 'x'"),
    ("{img} 0 extra", "linear: too many arguments: 'extra'"),
])
def test_linear_rejects_bad_arguments(make_image, args, needle):
    img = make_image(64)
    with pytest.raises(TableError) as ei:
        MappedDevice.from_table(f"0 8 linear {args.format(img=img)}\n")
    assert needle in str(ei.value)


@pytest.mark.parametrize("target", ["zero", "error"])
def test_argumentless_targets_reject_arguments(target):
    with pytest.raises(TableError, match=f"{target}: too many arguments: 'x'"):
        MappedDevice.from_table(f"0 8 {target} x\n")


def test_files_shared_by_segments_are_opened_once(make_image):
    img = make_image(64)
    r = DeviceResolver()
    md = MappedDevice.from_table(f"0 8 linear {img} 0\n8 8 linear {img} 32\n", resolver=r)
    assert md.targets[0].dev is md.targets[1].dev
    md.write(0, b"q" * 16 * 512)
    md.close()
    assert r._open == {}
    with open(img, "rb") as f:
        raw = f.read()
    assert raw[:4096] == b"q" * 4096 and raw[32 * 512:40 * 512] == b"q" * 4096


def test_major_minor_device_numbers(tmp_path):
    from dmkit.dm.resolver import _devnum_path
    from dmkit.errors import DeviceError
    import os
    found = None
    for name in sorted(os.listdir("/sys/dev/block")) if os.path.isdir("/sys/dev/block") else []:
        try:
            path = _devnum_path(name)
        except DeviceError:
            continue
        if os.path.exists(path):
            found = (name, path)
            break
    if found is not None:
        assert found[1].startswith("/dev/")
    with pytest.raises(DeviceError, match="no block device with that major:minor"):
        _devnum_path("4095:1048575")


def test_resolver_resolves_key_references_through_its_keyring():
    from dmkit.keys import Keyring, KeyNotFoundError
    ring = Keyring()
    ring.add("user", "vol", b"k" * 32)
    r = DeviceResolver(keyring=ring)
    assert r.resolve_key(":32:user:vol") == b"k" * 32
    with pytest.raises(Exception, match="the user key is 32 bytes, the reference says 64"):
        r.resolve_key(":64:user:vol")
    with pytest.raises(KeyNotFoundError):
        r.resolve_key(":32:user:other")
