#!/bin/sh
# Builds the tiny test VM image: Debian's cloud kernel and a busybox
# initramfs running the real QEMU guest agent, on a bootable MBR disk (FAT +
# syslinux), as qcow2. It boots under TCG in a few seconds, takes its address
# by DHCP, reads the NoCloud seed (label cidata), writes Metrom's readiness
# marker and powers off on an ACPI power button press.
#
#   build-tiny.sh OUT.qcow2
set -eu
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/images/lib.sh
. "$here/lib.sh"

out=${1:?usage: build-tiny.sh OUT.qcow2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

say "tiny image: fetching the cloud kernel and qemu-guest-agent"
fetch_debs "$work/debs" linux-image-cloud-amd64 qemu-guest-agent
kdeb=$(ls "$work"/debs/linux-image-cloud-amd64_*.deb)
kpkg=$(dpkg-deb -f "$kdeb" Depends | sed -n 's/.*\(linux-image-[0-9][^ ,]*\).*/\1/p')
fetch_debs "$work/debs" "$kpkg"
mkdir -p "$work/k" "$work/ga"
dpkg-deb -x "$work"/debs/"$kpkg"_*.deb "$work/k"
dpkg-deb -x "$work"/debs/qemu-guest-agent_*.deb "$work/ga"
kver=$(ls "$work/k/lib/modules")
vmlinuz=$(ls "$work"/k/boot/vmlinuz-*)

say "tiny image: building the initramfs (kernel $kver)"
root="$work/initramfs"
mkdir -p "$root/bin" "$root/sbin" "$root/etc/acpi/PWRF" "$root/lib/modules" "$root/proc" "$root/sys" \
    "$root/dev" "$root/run" "$root/tmp" "$root/mnt/seed" "$root/var/lib/metrom" "$root/root"
cp /bin/busybox "$root/bin/busybox"
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk \
    failover net_failover virtio_net virtio_console isofs button evdev; do
    f=$(find "$work/k/lib/modules/$kver" -name "$m.ko" | head -n 1)
    [ -n "$f" ] || die "kernel module $m not found"
    cp "$f" "$root/lib/modules/"
done
cp "$work/ga/usr/sbin/qemu-ga" "$root/sbin/qemu-ga"
# The guest agent's shared libraries, from this (Debian 12) host.
ldd "$root/sbin/qemu-ga" | awk '/=> \//{print $3} /^\t\/lib/{print $1}' | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
mkdir -p "$root/lib64" "$root/usr/bin"
[ -e "$root/lib64/ld-linux-x86-64.so.2" ] || cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"

cat >"$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk \
    failover net_failover virtio_net virtio_console isofs button evdev; do
    insmod "/lib/modules/$m.ko" || echo "metrom tiny: insmod $m failed"
done
exec /bin/init
EOF
chmod 755 "$root/init"

cat >"$root/etc/inittab" <<'EOF'
::sysinit:/etc/rc
::respawn:/etc/qga
::respawn:/bin/acpid -f -c /etc/acpi -l /run/acpid.log
ttyS0::respawn:/bin/getty -n -l /bin/sh 115200 ttyS0
::shutdown:/bin/umount -a -r
EOF

cat >"$root/etc/rc" <<'EOF'
#!/bin/sh
echo "metrom tiny: booting"
ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
ip link set eth0 up
udhcpc -i eth0 -s /etc/udhcpc.sh -t 20 -T 1 -n -q -b
# NoCloud seed: the volume labelled cidata.
for dev in /dev/sr0 /dev/sr1 /dev/vdb /dev/vdc /dev/vdd; do
    [ -b "$dev" ] || continue
    if mount -t iso9660 -o ro "$dev" /mnt/seed 2>/dev/null; then
        if [ -f /mnt/seed/meta-data ]; then
            name=$(sed -n 's/^local-hostname: *//p' /mnt/seed/meta-data)
            [ -n "$name" ] && hostname "$name"
            break
        fi
        umount /mnt/seed
    fi
done
mkdir -p /var/lib/metrom
echo "{\"image\":\"tiny\",\"booted\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\"}" >/var/lib/metrom/ready
echo "metrom tiny: ready"
EOF
chmod 755 "$root/etc/rc"

cat >"$root/etc/qga" <<'EOF'
#!/bin/sh
# Find the virtio port libvirt names org.qemu.guest_agent.0.
for p in /sys/class/virtio-ports/*; do
    if [ "$(cat "$p/name" 2>/dev/null)" = org.qemu.guest_agent.0 ]; then
        exec /sbin/qemu-ga -m virtio-serial -p "/dev/$(basename "$p")" -t /run -f /run/qga.pid
    fi
done
sleep 1
EOF
chmod 755 "$root/etc/qga"

cat >"$root/etc/udhcpc.sh" <<'EOF'
#!/bin/sh
case "$1" in
    bound|renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        for r in $router; do ip route add default via "$r" dev "$interface"; break; done
        ;;
esac
EOF
chmod 755 "$root/etc/udhcpc.sh"

printf '#!/bin/sh\n/bin/poweroff\n' >"$root/etc/acpi/PWRF/00000080"
chmod 755 "$root/etc/acpi/PWRF/00000080"
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"

(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd"

say "tiny image: assembling the disk"
make_boot_fat "$work/boot.fat" 48 "$vmlinuz" "$work/initrd" "console=ttyS0"
assemble_disk "$work/disk.raw" "$work/boot.fat"
mkdir -p "$(dirname "$out")"
qemu-img convert -f raw -O qcow2 "$work/disk.raw" "$out.tmp"
mv "$out.tmp" "$out"
say "tiny image: $out ($(du -h "$out" | cut -f1))"
