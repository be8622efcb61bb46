#!/bin/sh
# Runs Metrom all-in-one on this machine from the source tree: prepares the
# machine (installer/prepare-host.sh: libvirt, QEMU, Docker, build packages),
# builds the release binaries, and starts a controller (embedded store) and a
# local agent joined to it with `metrom up`. Run as root on Debian/Ubuntu with
# Rust installed. Arguments go to `metrom up` (see `metrom up --help`).
#
# Afterwards: target/release/metrom host list, … ; target/release/metrom down.
set -eu
cd "$(dirname "$0")/.."

command -v cargo >/dev/null 2>&1 || {
    printf '[up] error: cargo is not on PATH: install Rust (https://rustup.rs, or your offline toolchain)\n' >&2
    exit 1
}
./installer/prepare-host.sh
printf '[up] building the release binaries (the first build takes several minutes)\n'
cargo build --release --locked -p metrom-controller -p metrom-agent --bins
exec ./target/release/metrom up "$@"
