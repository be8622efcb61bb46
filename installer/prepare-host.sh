#!/bin/sh
# Makes this Debian/Ubuntu machine ready to build Metrom and run it
# all-in-one: installs what the agent's runtimes need (libvirt, QEMU, Docker)
# and what the build needs, starts libvirtd and dockerd, and waits until they
# answer. Idempotent: a second run only checks. Run as root.
#
#   prepare-host.sh [EXTRA_PACKAGE]...    (tests/setup.sh adds the suite's tools)
#
#   METROM_LOGS   daemon logs when there is no systemd (default /var/log/metrom)
set -eu

LOGDIR=${METROM_LOGS:-/var/log/metrom}

say() { printf '[prepare-host] %s\n' "$*"; }
die() { printf '[prepare-host] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root: it installs packages and starts libvirtd and dockerd"
command -v apt-get >/dev/null 2>&1 \
    || die "this script prepares Debian/Ubuntu machines (apt-get); elsewhere install libvirt, QEMU, genisoimage, Docker, pkg-config and the libvirt headers by hand"
mkdir -p "$LOGDIR"

# --- packages --------------------------------------------------------------
# Runtimes: kvm (libvirt + QEMU, NAT network via dnsmasq, cloud-init seeds via
# genisoimage) and docker. Build: the virt crate links libvirt (pkg-config).
PACKAGES="libvirt-daemon-system qemu-system-x86 qemu-utils dnsmasq-base genisoimage iptables docker.io \
libvirt-dev pkg-config gcc libc6-dev curl ca-certificates $*"
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
        [ "$i" -lt "$tries" ] || die "$what did not come up (logs: $LOGDIR, journalctl)"
        sleep 0.5
    done
}

# Without udev nobody applies Debian's rule for /dev/kvm (group kvm, 0660);
# libvirt then re-probes QEMU on every domain start (a minute each).
if [ -e /dev/kvm ]; then chgrp kvm /dev/kvm && chmod 0660 /dev/kvm; fi

if [ -d /run/systemd/system ]; then
    virsh -c qemu:///system version >/dev/null 2>&1 || { say "starting libvirtd"; systemctl start libvirtd; }
    docker info >/dev/null 2>&1 || { say "starting docker"; systemctl start docker; }
else
    pgrep -x virtlogd >/dev/null || { say "starting virtlogd"; virtlogd -d; }
    pgrep -x libvirtd >/dev/null || { say "starting libvirtd"; libvirtd -d; }
    if ! docker info >/dev/null 2>&1 && ! pgrep -x dockerd >/dev/null; then
        say "starting dockerd (log $LOGDIR/dockerd.log)"
        nohup dockerd >"$LOGDIR/dockerd.log" 2>&1 &
    fi
fi
wait_for libvirtd 60 virsh -c qemu:///system version
wait_for dockerd 120 docker info

say "ready: libvirt $(virsh -c qemu:///system version --daemon 2>/dev/null | sed -n 's/^Running against daemon: //p'), $(docker version --format 'Docker {{.Server.Version}}')"
