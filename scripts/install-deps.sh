#!/bin/sh
# Install the Debian packages dmkit's set-up and tests need, only when something is missing.
#
#   scripts/install-deps.sh venv   python3 with a working venv module (python3-venv), and
#                                  gcc and libssl-dev for the optional C accelerators
#   scripts/install-deps.sh test   the tools interop tests run: cryptsetup, integritysetup,
#                                  qemu-img, nbdinfo, nbdkit, fusermount3, keyctl, zstd
#
# Checks with `command -v` (or an import) first and calls apt only when something is
# missing, and only as root.  When apt is not possible or fails, it prints a warning and
# exits 0: interop tests that need a missing tool skip and say so.
set -u

mode=${1:-test}
missing_pkgs=""
missing_cmds=""

need_cmd() {  # need_cmd COMMAND PACKAGE
    if ! command -v "$1" >/dev/null 2>&1; then
        missing_cmds="$missing_cmds $1"
        case " $missing_pkgs " in *" $2 "*) ;; *) missing_pkgs="$missing_pkgs $2" ;; esac
    fi
}

case "$mode" in
    venv)
        if ! command -v python3 >/dev/null 2>&1; then
            missing_cmds="python3"
            missing_pkgs="python3 python3-venv"
        elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
            missing_cmds="python3 -m venv"
            missing_pkgs="python3-venv"
        fi
        # the optional C accelerators (setup.py): a compiler and libcrypto's headers
        need_cmd gcc gcc
        if [ ! -e /usr/include/openssl/evp.h ]; then
            missing_cmds="$missing_cmds openssl/evp.h"
            missing_pkgs="$missing_pkgs libssl-dev"
        fi
        ;;
    test)
        need_cmd cryptsetup cryptsetup-bin
        need_cmd integritysetup cryptsetup-bin
        need_cmd qemu-img qemu-utils
        need_cmd nbdinfo libnbd-bin
        need_cmd nbdkit nbdkit
        need_cmd fusermount3 fuse3
        need_cmd keyctl keyutils
        need_cmd zstd zstd
        ;;
    *)
        echo "usage: $0 venv|test" >&2
        exit 2
        ;;
esac

[ -z "$missing_pkgs" ] && exit 0

echo "install-deps: missing:$missing_cmds (Debian packages:$missing_pkgs)"
if [ "$(id -u)" != 0 ]; then
    echo "install-deps: WARNING: not root, not installing; run as root:" >&2
    echo "install-deps:   apt-get install -y --no-install-recommends$missing_pkgs" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: WARNING: no apt-get on this machine; install$missing_pkgs by hand" >&2
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086  # the package list is meant to split
if apt-get update -q && apt-get install -y -q --no-install-recommends $missing_pkgs; then
    echo "install-deps: installed$missing_pkgs"
else
    echo "install-deps: WARNING: apt-get failed; continuing without$missing_pkgs" >&2
    echo "install-deps: (tests that need them skip and say why)" >&2
fi
exit 0
