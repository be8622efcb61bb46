#!/bin/sh
# Installs and starts everything the Metrom test suite needs on a Debian 12
# machine, then builds the cached test images. Idempotent: a second run only
# checks. Run as root.
#
#   setup.sh            everything
#   setup.sh --base     packages and daemons only (installer/prepare-host.sh
#                       plus the suite's tools)
#   setup.sh --images   the test images, registry and boxes (needs --base first);
#                       tests/run.sh runs this while cargo builds
#
#   METROM_TEST_CACHE   where test images are cached (default /var/cache/metrom-tests)
set -eu

CACHE=${METROM_TEST_CACHE:-/var/cache/metrom-tests}
LOGDIR=${METROM_TEST_LOGS:-/var/log/metrom-tests}
here=$(cd "$(dirname "$0")" && pwd)

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

phase=${1:-all}
case $phase in
    all | --base | --images) ;;
    *) die "usage: setup.sh [--base | --images]" ;;
esac

[ "$(id -u)" -eq 0 ] || die "run as root: the suite drives libvirt, QEMU and Docker"
mkdir -p "$CACHE" "$LOGDIR"

# --- packages and daemons ----------------------------------------------------
# What Metrom itself needs comes from installer/prepare-host.sh; these are the
# suite's own tools (image builders, the registry, the installer's checks).
TEST_PACKAGES="docker-registry docker-compose debootstrap cpio busybox-static shellcheck \
syslinux syslinux-common mtools dosfstools fdisk iproute2 git python3-pip python3-venv"
if [ "$phase" != --images ]; then
    # shellcheck disable=SC2086
    METROM_LOGS=$LOGDIR "$here/../installer/prepare-host.sh" $TEST_PACKAGES
fi
[ "$phase" != --base ] || exit 0

# --- test images (cached outside the clone) ---------------------------------
images_version=2
if [ ! -f "$CACHE/tiny.qcow2" ] || [ "$(cat "$CACHE/tiny.version" 2>/dev/null)" != "$images_version" ]; then
    "$here/images/build-tiny.sh" "$CACHE/tiny.qcow2"
    echo "$images_version" >"$CACHE/tiny.version"
fi
if [ ! -f "$CACHE/debian-12.qcow2" ] || [ "$(cat "$CACHE/debian-12.version" 2>/dev/null)" != "$images_version" ]; then
    "$here/images/build-debian.sh" "$CACHE/debian-12.qcow2"
    echo "$images_version" >"$CACHE/debian-12.version"
fi

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
curl -fsS -o /dev/null --retry 60 --retry-connrefused --retry-delay 1 --max-time 90 "http://$REGISTRY/v2/" \
    || die "docker-registry did not come up (log $LOGDIR/registry.log)"

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

# --- the installer's test boxes -------------------------------------------------
# metrom-test/installer-root:1, a fresh Debian 12 box: debootstrap minbase with
# curl, ca-certificates, sudo and libvirt0 (images/build-installer-root.sh),
# cached as a tar outside the clone and imported into dockerd.
# metrom-test/installer-kvm-root:1, the same box with the installer's kvm
# packages for Debian (installer/install.sh, apt:kvm) installed by apt-get in a
# container from it, exported to the cache: the kvm install then runs without
# a mirror. The installer's e2e test runs `curl … | sudo sh` in containers
# made from them.
# Bumped when build-installer-root.sh or the kvm package list change.
INSTALLER_REV=1
KVM_PACKAGES="qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients dnsmasq-base iptables genisoimage"
import_box() { # import_box NAME : $CACHE/NAME.tar as metrom-test/NAME:1, unless there
    _image=metrom-test/$1:1
    _rev=$(docker image inspect -f '{{index .Config.Labels "io.metrom.test-image"}}' "$_image" 2>/dev/null || true)
    if [ "$_rev" != "$1-$INSTALLER_REV" ]; then
        say "importing $_image from $CACHE/$1.tar"
        docker image rm -f "$_image" >/dev/null 2>&1 || true
        docker import -c 'CMD ["sleep", "infinity"]' -c "LABEL io.metrom.test-image=$1-$INSTALLER_REV" \
            "$CACHE/$1.tar" "$_image" >/dev/null
    fi
}
if [ ! -f "$CACHE/installer-root.tar" ] || [ "$(cat "$CACHE/installer-root.version" 2>/dev/null)" != "$INSTALLER_REV" ]; then
    "$here/images/build-installer-root.sh" "$CACHE/installer-root.tar"
    echo "$INSTALLER_REV" >"$CACHE/installer-root.version"
fi
import_box installer-root
if [ ! -f "$CACHE/installer-kvm-root.tar" ] || [ "$(cat "$CACHE/installer-kvm-root.version" 2>/dev/null)" != "$INSTALLER_REV" ]; then
    say "installer kvm box: apt-get install $KVM_PACKAGES (log $LOGDIR/installer-kvm-root.log)"
    builder=metrom-setup-kvm-root
    docker rm -f "$builder" >/dev/null 2>&1 || true
    docker run --name "$builder" metrom-test/installer-root:1 sh -c \
        "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $KVM_PACKAGES \
         && apt-get clean && rm -rf /var/lib/apt/lists/*" >"$LOGDIR/installer-kvm-root.log" 2>&1 \
        || { docker rm -f "$builder" >/dev/null 2>&1; tail -n 20 "$LOGDIR/installer-kvm-root.log" >&2; die "installing the kvm packages failed"; }
    docker export "$builder" >"$CACHE/installer-kvm-root.tar.tmp"
    docker rm "$builder" >/dev/null
    mv "$CACHE/installer-kvm-root.tar.tmp" "$CACHE/installer-kvm-root.tar"
    echo "$INSTALLER_REV" >"$CACHE/installer-kvm-root.version"
fi
import_box installer-kvm-root
say "installer test boxes: metrom-test/installer-root:1, metrom-test/installer-kvm-root:1"

# --- EC2-compatible server (moto) --------------------------------------------
# moto_server in its own venv; the cloud tests start it themselves on a free
# 127.0.0.1 port (tests/src/ec2.rs looks here first, then $METROM_MOTO_SERVER,
# then PATH). python3-venv comes with the --base packages.
MOTO_VENV=/opt/metrom-tests/moto
if ! "$MOTO_VENV/bin/python" -c 'import moto.server, flask' >/dev/null 2>&1 || [ ! -x "$MOTO_VENV/bin/moto_server" ]; then
    say "installing moto[server] into $MOTO_VENV"
    mkdir -p "$(dirname "$MOTO_VENV")"
    /usr/bin/python3 -m venv "$MOTO_VENV"
    "$MOTO_VENV/bin/pip" install -q --disable-pip-version-check 'moto[server]'
fi
say "moto: $("$MOTO_VENV/bin/python" -c 'import moto; print(moto.__version__)') at $MOTO_VENV/bin/moto_server"
say "test images ready (cache $CACHE)"
