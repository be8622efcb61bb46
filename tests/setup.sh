#!/bin/sh
# Installs and starts everything the Metrom test suite needs on a Debian 12
# machine, then builds the cached test images. Idempotent: a second run only
# checks. Run as root.
#
#   METROM_TEST_CACHE   where test images are cached (default /var/cache/metrom-tests)
set -eu

CACHE=${METROM_TEST_CACHE:-/var/cache/metrom-tests}
LOGDIR=${METROM_TEST_LOGS:-/var/log/metrom-tests}

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root: the suite drives libvirt, QEMU and Docker"
mkdir -p "$CACHE" "$LOGDIR"

# --- packages --------------------------------------------------------------
PACKAGES="libvirt-daemon-system qemu-system-x86 qemu-utils libvirt-dev pkg-config dnsmasq-base docker.io \
docker-registry docker-compose debootstrap cpio busybox-static genisoimage shellcheck \
syslinux syslinux-common mtools dosfstools fdisk iproute2 git curl python3-pip ca-certificates"
missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    say "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing
fi

# --- daemons ---------------------------------------------------------------
wait_for() { # wait_for <what> <tries> <command...>
    what=$1; tries=$2; shift 2
    i=0
    until "$@" >/dev/null 2>&1; do
        i=$((i + 1))
        [ "$i" -lt "$tries" ] || die "$what did not come up"
        sleep 0.5
    done
}

# Without udev nobody applies Debian's rule for /dev/kvm (group kvm, 0660);
# libvirt then re-probes QEMU on every domain start (a minute each).
if [ -e /dev/kvm ]; then chgrp kvm /dev/kvm && chmod 0660 /dev/kvm; fi

pgrep -x virtlogd >/dev/null || { say "starting virtlogd"; virtlogd -d; }
pgrep -x libvirtd >/dev/null || { say "starting libvirtd"; libvirtd -d; }
wait_for libvirtd 60 virsh -c qemu:///system version

if ! docker info >/dev/null 2>&1; then
    say "starting dockerd (log $LOGDIR/dockerd.log)"
    nohup dockerd >"$LOGDIR/dockerd.log" 2>&1 &
fi
wait_for dockerd 120 docker info

# --- test images (cached outside the clone) ---------------------------------
here=$(cd "$(dirname "$0")" && pwd)
images_version=2
if [ ! -f "$CACHE/tiny.qcow2" ] || [ "$(cat "$CACHE/tiny.version" 2>/dev/null)" != "$images_version" ]; then
    "$here/images/build-tiny.sh" "$CACHE/tiny.qcow2"
    echo "$images_version" >"$CACHE/tiny.version"
fi
if [ ! -f "$CACHE/debian-12.qcow2" ] || [ "$(cat "$CACHE/debian-12.version" 2>/dev/null)" != "$images_version" ]; then
    "$here/images/build-debian.sh" "$CACHE/debian-12.qcow2"
    echo "$images_version" >"$CACHE/debian-12.version"
fi

say "ready: libvirt $(virsh -c qemu:///system version --daemon 2>/dev/null | sed -n 's/.*daemon: libvirt //p'), $(docker version --format 'Docker {{.Server.Version}}')"
