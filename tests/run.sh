#!/bin/sh
# The README's test command: installs and starts what the suite needs, builds
# the workspace once, and runs every test.
set -eu
cd "$(dirname "$0")/.."
./tests/setup.sh
cargo build --workspace --bins --tests --locked
cargo nextest run --workspace --locked --profile ci "$@"
