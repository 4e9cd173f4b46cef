import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from integrity_vectors import ALGORITHM, ImageCache, key_of  # noqa: E402

from dmkit.block import FileDevice  # noqa: E402
from dmkit.targets.integrity import IntegrityReader  # noqa: E402


@pytest.fixture(scope="session")
def kernel_images(tmp_path_factory):
    return ImageCache(tmp_path_factory.mktemp("integrity-vectors"))


@pytest.fixture
def open_image(kernel_images):
    """open_image(name, paths=None, **reader_kw) -> IntegrityReader over the image
    (or over ``paths``, a role -> path mapping such as a tampered copy)."""
    opened = []

    def open_(name, paths=None, **kw):
        files = paths or kernel_images.files(name)
        ro = paths is None
        if "device" in files:
            data = FileDevice(files["device"], read_only=ro)
            meta = None
        else:
            data = FileDevice(files["data"], read_only=ro)
            meta = FileDevice(files["meta"], read_only=ro)
        opened.extend(d for d in (data, meta) if d is not None)
        kw.setdefault("internal_hash", ALGORITHM[name])
        kw.setdefault("key", key_of(name))
        return IntegrityReader(data, meta, **kw)

    yield open_
    for d in opened:
        d.close()
