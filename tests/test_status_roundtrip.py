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
    # the first load formats the zeroed image; the printed table has the kernel's
    # effective values (journal_sectors, buffer_sectors, watermark) and reloads the same
    "integrity": [
        (2048, "{img} 0 - J 1 internal_hash:crc32c"),
        (2048, "{img} 0 4 D 2 internal_hash:crc32c fix_padding"),
        (1024, "{img} 8 32 B 5 internal_hash:sha256 sectors_per_bit:8 "
               "bitmap_flush_interval:500 allow_discards block_size:1024"),
        (4096, "{img} 0 8 J 5 meta_device:{img2} block_size:4096 journal_watermark:30 "
               "commit_time:100 buffer_sectors:0"),
        (1024, "{img} 0 - J 4 internal_hash:hmac(sha256):"
               "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f fix_hmac "
               "zero_on_error legacy_recalculate"),
        (1024, "{img} 0 4 R 2 internal_hash:crc32c interleave_sectors:1000"),
        (2048, "{img} 0 - D 3 internal_hash:xxhash64 recalculate journal_sectors:0"),
        (1024, "{img} 0 - J 3 internal_hash:crc32c journal_mac:hmac(sha256):0011 fix_hmac"),
    ],
    "crypt": [
        (4096, "aes-xts-plain64 " + "0123456789abcdef" * 8 + " 0 {img} 0"),
        (2048, "aes-cbc-essiv:sha256 " + "ab" * 32 + " 7 {img} 2048 2 allow_discards "
               "same_cpu_crypt"),
        (1024, "capi:xts(aes)-plain64 " + "cd" * 32 + " 8 {img} 8 3 sector_size:4096 "
               "iv_large_sectors no_read_workqueue"),
        (64, "aes:2-cbc-plain64be " + "ef" * 64 + " 0 {img2} 0"),
        (64, "cipher_null-ecb - 0 {img} 0 1 submit_from_crypt_cpus"),
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


def test_registry_names_match_classes():
    for name in TARGETS:
        assert TARGETS[name].name == name
