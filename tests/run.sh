#!/bin/sh
# The README's test command: installs and starts what the suite needs, builds
# the workspace once, and runs every test. The test images (cached outside the
# clone) are built while cargo builds; their log is $LOGDIR/images.log.
set -eu
cd "$(dirname "$0")/.."
LOGDIR=${METROM_TEST_LOGS:-/var/log/metrom-tests}
./tests/setup.sh --base
mkdir -p "$LOGDIR"
printf '[run] building the test images in the background (log %s/images.log)\n' "$LOGDIR"
./tests/setup.sh --images >"$LOGDIR/images.log" 2>&1 &
images=$!
if ! cargo build --workspace --bins --tests --locked; then
    wait "$images" || true
    exit 1
fi
if ! wait "$images"; then
    tail -n 40 "$LOGDIR/images.log" >&2
    printf '[run] error: building the test images failed (log %s/images.log)\n' "$LOGDIR" >&2
    exit 1
fi
cat "$LOGDIR/images.log"
cargo nextest run --workspace --locked --profile ci "$@"
