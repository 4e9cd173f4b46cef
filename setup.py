"""Build of the optional C accelerator; everything else is in pyproject.toml.

``dmkit.crypto._xtsfix`` is optional: if it cannot be compiled, dmkit installs anyway and
uses the numpy path, which gives the same bytes (slower).
"""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("dmkit.crypto._xtsfix", ["src/dmkit/crypto/_xtsfix.c"], optional=True,
              extra_compile_args=["-O3"]),
])
