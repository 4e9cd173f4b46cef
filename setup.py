"""Build of the optional C accelerators; everything else is in pyproject.toml.

All are optional: if one cannot be compiled (no compiler, no Python headers, or for
``_xtsevp``, ``_afevp`` and ``_tagsevp`` no libcrypto headers: Debian's libssl-dev), dmkit installs
anyway and uses the pure Python path (pyca/cryptography + numpy, or hashlib), which gives
the same bytes (slower).

- ``dmkit.crypto._xtsfix``: the XTS tweak-mask pass (no dependencies);
- ``dmkit.crypto._xtsevp``: XTS-AES over many data units with libcrypto, GIL released;
- ``dmkit.luks._afevp``: the LUKS anti-forensic merge (and split) with libcrypto's
  digests, GIL released;
- ``dmkit.targets.integrity._tagsevp``: a request's per-block hash and hmac(hash) tags
  with libcrypto, GIL released; also read and hashed with the copy overlapped by a helper
  thread (pthreads).
"""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("dmkit.crypto._xtsfix", ["src/dmkit/crypto/_xtsfix.c"], optional=True,
              extra_compile_args=["-O3"]),
    Extension("dmkit.crypto._xtsevp", ["src/dmkit/crypto/_xtsevp.c"], optional=True,
              libraries=["crypto"], extra_compile_args=["-O2"]),
    Extension("dmkit.luks._afevp", ["src/dmkit/luks/_afevp.c"], optional=True,
              libraries=["crypto"], extra_compile_args=["-O2"]),
    Extension("dmkit.targets.integrity._tagsevp", ["src/dmkit/targets/integrity/_tagsevp.c"],
              optional=True, libraries=["crypto"], extra_compile_args=["-O2"]),
])
