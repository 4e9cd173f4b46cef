# dmkit: set-up and everyday commands (see README.md).
#
#   make demo   create .venv, install dmkit, run a real device-mapper stack on demo images
#   make test   the same set-up, plus the Debian tools interop tests use (as root), then pytest
#   make bench  benchmarks, printed as JSON
#
# Works on a fresh Debian machine with only python3 and make: the venv target installs
# python3-venv through apt when running as root and venv creation would fail without it.

PYTHON   ?= python3
VENV     := .venv
VPY      := $(VENV)/bin/python
STAMP    := $(VENV)/.dmkit-installed
DEMO_DIR ?= demo-data

.PHONY: venv deps demo test bench clean distclean

venv: $(STAMP)

# Re-installs when pyproject.toml changes (new dependencies) or the optional C
# accelerators (setup.py, src/dmkit/crypto/_xts*.c, src/dmkit/luks/_afevp.c,
# src/dmkit/targets/integrity/_tagsevp.c) do.
$(STAMP): pyproject.toml setup.py src/dmkit/crypto/_xtsfix.c src/dmkit/crypto/_xtsevp.c \
		src/dmkit/luks/_afevp.c src/dmkit/targets/integrity/_tagsevp.c
	@scripts/install-deps.sh venv
	@if ! $(VPY) -m pip --version >/dev/null 2>&1; then \
		rm -rf $(VENV) && echo "$(PYTHON) -m venv $(VENV)" && $(PYTHON) -m venv $(VENV); \
	fi
	$(VPY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@

# Debian packages for the interop tests (cryptsetup, qemu-img, nbdinfo, ...).
deps:
	@scripts/install-deps.sh test

demo: venv
	$(VPY) -m dmkit.demo $(DEMO_DIR)

test: venv deps
	$(VPY) -m pytest -q

bench: venv
	$(VPY) -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	$(VPY) -m benchmarks

# Generated files; the venv stays (distclean removes it too).
clean:
	rm -rf $(DEMO_DIR) bench-data build dist .pytest_cache .hypothesis src/*.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
