#!/bin/sh
# Builds the Debian 12 test VM image: debootstrap with systemd, the cloud
# kernel, cloud-init (NoCloud), the QEMU guest agent, Docker with compose, git
# and subversion, on a bootable MBR disk (FAT + syslinux boot partition, ext4
# root labelled metrom-root), as qcow2. Nothing is mounted: the root
# filesystem is made with `mkfs.ext4 -d`.
#
#   build-debian.sh OUT.qcow2
set -eu
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/images/lib.sh
. "$here/lib.sh"

out=${1:?usage: build-debian.sh OUT.qcow2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/root"

# The host's own Debian mirror (air-gapped sites point apt at theirs).
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
[ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null)
[ -n "$mirror" ] || die "no Debian mirror configured on this host"

packages=systemd-sysv,udev,dbus,linux-image-cloud-amd64,initramfs-tools,cloud-init,cloud-guest-utils,\
qemu-guest-agent,docker.io,docker-compose,git,subversion,openssh-server,sudo,ifupdown,isc-dhcp-client,\
iproute2,ca-certificates,curl,netbase,e2fsprogs,procps,less,python3-cffi-backend,apparmor

say "debian image: debootstrap bookworm from $mirror (several minutes)"
debootstrap --variant=minbase --include="$packages" bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }

say "debian image: configuring"
echo metrom-base >"$root/etc/hostname"
cat >"$root/etc/fstab" <<'EOF'
LABEL=metrom-root / ext4 defaults,errors=remount-ro 0 1
EOF
cat >"$root/etc/network/interfaces" <<'EOF'
auto lo
iface lo inet loopback
source /etc/network/interfaces.d/*
EOF
mkdir -p "$root/etc/cloud/cloud.cfg.d"
cat >"$root/etc/cloud/cloud.cfg.d/90-metrom.cfg" <<'EOF'
# Metrom test image: the NoCloud seed only; never look for a metadata server.
datasource_list: [NoCloud, None]
locale: C.UTF-8
EOF
# Boot fast: no waiting for networks that are not there.
chroot "$root" systemctl mask systemd-networkd-wait-online.service >/dev/null 2>&1 || true
chroot "$root" systemctl enable qemu-guest-agent docker ssh >/dev/null 2>&1 || true
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"* "$root/usr/share/doc" "$root/usr/share/man"
: >"$root/etc/machine-id"

kernel=$(find "$root/boot" -name 'vmlinuz-*' | head -n 1)
initrd=$(find "$root/boot" -name 'initrd.img-*' | head -n 1)
if [ ! -f "$kernel" ] || [ ! -f "$initrd" ]; then
    die "kernel or initrd missing in the root"
fi

say "debian image: making the filesystems"
used_mib=$(du -sm "$root" | cut -f1)
root_mib=$(( used_mib + used_mib / 3 + 512 ))
truncate -s "${root_mib}M" "$work/root.ext4"
mkfs.ext4 -q -L metrom-root -d "$root" "$work/root.ext4"
make_boot_fat "$work/boot.fat" 96 "$kernel" "$initrd" "root=LABEL=metrom-root ro console=ttyS0 net.ifnames=0"
assemble_disk "$work/disk.raw" "$work/boot.fat" "$work/root.ext4"
mkdir -p "$(dirname "$out")"
qemu-img convert -c -f raw -O qcow2 "$work/disk.raw" "$out.tmp"
mv "$out.tmp" "$out"
say "debian image: $out ($(du -h "$out" | cut -f1), root ${root_mib} MiB)"
