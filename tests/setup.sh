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

say "ready: libvirt $(virsh -c qemu:///system version --daemon 2>/dev/null | sed -n 's/^Running against daemon: //p'), $(docker version --format 'Docker {{.Server.Version}}')"

# --- Docker test images and registry -----------------------------------------
# metrom-test/busybox:1: a busybox root (httpd, wget, sh, nc, …) imported into
# dockerd, and the same image in a docker-registry on 127.0.0.1:5000 (dockerd
# treats loopback registries as plain HTTP by default). Nothing is fetched from
# the internet: busybox comes from Debian's busybox-static.
TEST_IMAGE=metrom-test/busybox:1
REGISTRY=127.0.0.1:5000
# Bumped when the image's content changes; an image without it is rebuilt.
TEST_IMAGE_REV=2

have_rev=$(docker image inspect -f '{{index .Config.Labels "io.metrom.test-image"}}' "$TEST_IMAGE" 2>/dev/null || true)
if [ "$have_rev" != "$TEST_IMAGE_REV" ]; then
    say "building $TEST_IMAGE from busybox-static"
    root=$(mktemp -d)
    mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/www"
    cp /bin/busybox "$root/bin/busybox"
    for applet in $("$root/bin/busybox" --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
    done
    printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    tar -C "$root" -c . | docker import -c 'CMD ["sh"]' -c 'ENV PATH=/bin' \
        -c "LABEL io.metrom.test-image=$TEST_IMAGE_REV" - "$TEST_IMAGE" >/dev/null
    rm -rf "$root"
fi

REGDIR=$CACHE/registry
mkdir -p "$REGDIR/data"
if [ ! -f "$REGDIR/config.yml" ]; then
    cat >"$REGDIR/config.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $REGDIR/data
  delete:
    enabled: true
http:
  addr: $REGISTRY
YAML
fi
if ! curl -fsS "http://$REGISTRY/v2/" >/dev/null 2>&1; then
    say "starting docker-registry on $REGISTRY (log $LOGDIR/registry.log)"
    nohup docker-registry serve "$REGDIR/config.yml" >"$LOGDIR/registry.log" 2>&1 &
fi
wait_for docker-registry 60 curl -fsS "http://$REGISTRY/v2/"

local_id=$(docker image inspect -f '{{.Id}}' "$TEST_IMAGE")
pushed_id=$(cat "$REGDIR/pushed" 2>/dev/null || true)
if [ "$local_id" != "$pushed_id" ] || ! curl -fsS "http://$REGISTRY/v2/metrom-test/busybox/manifests/1" \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' >/dev/null 2>&1; then
    say "pushing $TEST_IMAGE to $REGISTRY"
    docker tag "$TEST_IMAGE" "$REGISTRY/$TEST_IMAGE"
    docker push -q "$REGISTRY/$TEST_IMAGE" >/dev/null
    docker rmi "$REGISTRY/$TEST_IMAGE" >/dev/null
    echo "$local_id" >"$REGDIR/pushed"
fi
say "test images: $TEST_IMAGE (local and in $REGISTRY)"

# --- EC2-compatible server (moto) --------------------------------------------
# moto_server in its own venv; the cloud tests start it themselves on a free
# 127.0.0.1 port (tests/src/ec2.rs looks here first, then $METROM_MOTO_SERVER,
# then PATH). Debian's python3 needs python3-venv for `python3 -m venv`.
MOTO_VENV=/opt/metrom-tests/moto
if ! dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q "install ok installed"; then
    say "installing: python3-venv"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends python3-venv
fi
if ! "$MOTO_VENV/bin/python" -c 'import moto.server, flask' >/dev/null 2>&1 || [ ! -x "$MOTO_VENV/bin/moto_server" ]; then
    say "installing moto[server] into $MOTO_VENV"
    mkdir -p "$(dirname "$MOTO_VENV")"
    /usr/bin/python3 -m venv "$MOTO_VENV"
    "$MOTO_VENV/bin/pip" install -q --disable-pip-version-check 'moto[server]'
fi
say "moto: $("$MOTO_VENV/bin/python" -c 'import moto; print(moto.__version__)') at $MOTO_VENV/bin/moto_server"
