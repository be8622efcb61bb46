#!/bin/sh
# Builds the root filesystem of a fresh Debian 12 box for the installer's end
# to end test (tests/tests/e2e/installer.rs), as a tar archive: debootstrap
# minbase plus what `curl … | sudo sh` and the agent binary need to run — curl,
# ca-certificates, sudo, and libvirt0 (the agent links libvirt even on a Docker-only
# host). Nothing else: no systemd, no libvirtd, no Docker. The test runs the
# installer with --skip-packages (its container must not reach a mirror) and
# covers the package step with --dry-run. Nothing is mounted.
#
#   build-installer-root.sh OUT.tar
set -eu
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/images/lib.sh
. "$here/lib.sh"

out=${1:?usage: build-installer-root.sh OUT.tar}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/root"

# The host's own Debian mirror (air-gapped sites point apt at theirs).
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
[ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null)
[ -n "$mirror" ] || die "no Debian mirror configured on this host"

say "installer root: debootstrap bookworm minbase from $mirror (a few minutes)"
debootstrap --variant=minbase --include=curl,ca-certificates,sudo,libvirt0 bookworm "$root" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
echo fresh-box >"$root/etc/hostname"
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"* "$root/usr/share/doc" "$root/usr/share/man"
mkdir -p "$(dirname "$out")"
tar -C "$root" --numeric-owner -cf "$out.tmp" .
mv "$out.tmp" "$out"
say "installer root: $out ($(du -h "$out" | cut -f1))"
