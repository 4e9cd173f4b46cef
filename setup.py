"""Build of the optional C accelerators; everything else is in pyproject.toml.

Both are optional: if one cannot be compiled (no compiler, no Python headers, or for
``_xtsevp`` no libcrypto headers: Debian's libssl-dev), dmkit installs anyway and uses the
pyca/cryptography + numpy path, which gives the same bytes (slower).

- ``dmkit.crypto._xtsfix``: the XTS tweak-mask pass (no dependencies);
- ``dmkit.crypto._xtsevp``: XTS-AES over many data units with libcrypto, GIL released.
"""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("dmkit.crypto._xtsfix", ["src/dmkit/crypto/_xtsfix.c"], optional=True,
              extra_compile_args=["-O3"]),
    Extension("dmkit.crypto._xtsevp", ["src/dmkit/crypto/_xtsevp.c"], optional=True,
              libraries=["crypto"], extra_compile_args=["-O2"]),
])
