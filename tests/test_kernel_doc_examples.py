"""Table examples from the kernel's device-mapper docs (linear.rst, zero.rst) load unchanged.

Device names in the docs (``$1``, ``/dev/sdb``) are replaced by image paths; everything
else is the docs' text or what their scripts compute.
"""

from dmkit.dm import MappedDevice
from tests.conftest import pattern


def test_linear_identity_mapping(make_image):
    # echo "0 `blockdev --getsz $1` linear $1 0" | dmsetup create identity
    img = make_image(2048, content=pattern(0, 2048))
    with MappedDevice.from_table(f"0 2048 linear {img} 0", name="identity") as dev:
        assert dev.read(0, 2048) == pattern(0, 2048)


def test_linear_join_two_devices(make_image):
    # echo "0 $size1 linear $1 0\n$size1 $size2 linear $2 0" | dmsetup create joined
    a = make_image(100, content=pattern(0, 100))
    b = make_image(60, content=pattern(100, 60))
    size1, size2 = 100, 60
    with MappedDevice.from_table(f"0 {size1} linear {a} 0\n{size1} {size2} linear {b} 0",
                                 name="joined") as dev:
        assert dev.nr_sectors == 160
        assert dev.read(0, 160) == pattern(0, 160)


def test_linear_reverse_extents(make_image):
    # The perl script in linear.rst: split a device into 4M chunks, join them in reverse.
    extent_size = 4 * 1024 * 2
    dev_size = 5 * extent_size + 100
    img = make_image(dev_size, content=pattern(0, dev_size))
    extents = dev_size // extent_size - (1 if dev_size % extent_size else 0)
    table, count = "", 0
    while extents > 0:
        this_start = count * extent_size
        extents -= 1
        count += 1
        this_offset = extents * extent_size
        table += f"{this_start} {extent_size} linear {img} {this_offset}\n"
    with MappedDevice.from_table(table, name="reverse") as dev:
        assert dev.nr_sectors == count * extent_size
        for i in range(count):
            src = count - 1 - i
            first = dev.read(i * extent_size, 8)
            assert first == pattern(src * extent_size, 8)


def test_zero_sparse_device():
    # zero.rst: echo "0 $TEN_TERABYTES zero" | dmsetup create zero1 (any size)
    ten_tb = 10 * 2**40 // 512
    with MappedDevice.from_table(f"0 {ten_tb} zero", name="zero1") as dev:
        assert dev.nr_sectors == ten_tb
        assert dev.read(ten_tb - 8, 8) == bytes(4096)
        dev.write(12345, b"x" * 512)
        assert dev.read(12345, 1) == bytes(512)
