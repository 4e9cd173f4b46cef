"""One generic test for every registered target: status("table") rebuilds an equal target."""

import pytest

from dmkit.dm import DeviceResolver, MappedDevice
from dmkit.targets import TARGETS

# target name -> list of (length, args template); "{img}" is an image of 4096 sectors,
# "{img2}" another one.  Every registered target must have examples here.
EXAMPLES: dict[str, list[tuple[int, str]]] = {
    "linear": [(100, "{img} 0"), (2048, "{img} 2048")],
    "zero": [(77, "")],
    "error": [(8, "")],
    "flakey": [
        (100, "{img} 0 5 5"),
        (100, "{img} 8 0 1 1 drop_writes"),
        (64, "{img} 0 3 7 2 error_writes error_reads"),
        (64, "{img} 0 1 1 5 corrupt_bio_byte 32 r 1 0"),
        (64, "{img} 0 1 1 8 ERROR_READS corrupt_bio_byte 224 W 0 32 random_read_corrupt 0"),
        (64, "{img} 0 1 1 4 random_write_corrupt 100000000 random_read_corrupt 5"),
        (64, "{img} 0 0 1 4 random_write_corrupt 100000000 random_read_corrupt 100000000"),
    ],
    "striped": [
        (256, "1 8 {img} 0"),
        (4096, "2 256 {img} 0 {img2} 2048"),
        (96, "3 4 {img} 0 {img2} 100 {img} 1000"),
    ],
}


def test_every_target_has_examples():
    assert set(EXAMPLES) == set(TARGETS), "add examples for new targets"


@pytest.mark.parametrize("name,length,template",
                         [(n, ln, t) for n, exs in EXAMPLES.items() for ln, t in exs])
def test_table_status_round_trips(make_image, name, length, template):
    img, img2 = make_image(4096), make_image(4096)
    line = f"0 {length} {name} {template.format(img=img, img2=img2)}".rstrip()
    resolver = DeviceResolver()
    dev = MappedDevice.from_table(line + "\n", resolver=resolver)
    try:
        printed = dev.table()
        rebuilt = MappedDevice.from_table(printed, resolver=resolver)
        try:
            assert rebuilt.table() == printed
            assert rebuilt.nr_sectors == dev.nr_sectors == length
            assert type(rebuilt.targets[0]) is type(dev.targets[0])
            assert rebuilt.status() == dev.status()
        finally:
            rebuilt.close()
    finally:
        dev.close()
        resolver.close()
