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
