# shellcheck shell=sh
# Shared helpers of the test image builders (sourced, POSIX sh).
# Images are built without mounting anything: a FAT boot partition made with
# mtools and syslinux, an optional ext4 root made with `mkfs.ext4 -d`, and an
# MBR, assembled into a raw disk and converted to qcow2. POSIX sh has no
# local variables: helpers use names starting with '_'.

say() { printf '[images] %s\n' "$*"; }
die() { printf '[images] error: %s\n' "$*" >&2; exit 1; }

# fetch_debs DIR PACKAGE... : download .debs from the configured mirror into DIR.
fetch_debs() {
    _dir=$1; shift
    mkdir -p "$_dir"
    (cd "$_dir" && apt-get download "$@" >/dev/null 2>&1) || die "apt-get download $* failed"
}

# make_boot_fat FILE SIZE_MIB KERNEL INITRD APPEND : a FAT filesystem image
# with syslinux, the kernel and the initrd, booting with APPEND.
make_boot_fat() {
    _fat=$1; _size_mib=$2; _kernel=$3; _initrd=$4; _append=$5
    rm -f "$_fat"
    mkfs.vfat -C "$_fat" $((_size_mib * 1024)) >/dev/null
    _cfg=$(mktemp)
    printf 'DEFAULT linux\nTIMEOUT 0\nPROMPT 0\nLABEL linux\n  KERNEL /vmlinuz\n  INITRD /initrd\n  APPEND %s\n' \
        "$_append" >"$_cfg"
    mcopy -i "$_fat" "$_kernel" ::/vmlinuz
    mcopy -i "$_fat" "$_initrd" ::/initrd
    mcopy -i "$_fat" "$_cfg" ::/syslinux.cfg
    rm -f "$_cfg"
    syslinux --install "$_fat"
}

# assemble_disk OUT.raw BOOT.fat [ROOT.ext4] : an MBR disk, partition 1 the
# bootable FAT, partition 2 the ext4 root if given.
assemble_disk() {
    _out=$1; _boot=$2; _root=${3:-}
    _boot_sectors=$(( $(stat -c %s "$_boot") / 512 ))
    _total=$(( 2048 + _boot_sectors ))
    _root_sectors=0
    if [ -n "$_root" ]; then
        _root_sectors=$(( $(stat -c %s "$_root") / 512 ))
        _total=$(( _total + _root_sectors ))
    fi
    rm -f "$_out"
    truncate -s $(( (_total + 2048) * 512 )) "$_out"
    if [ -n "$_root" ]; then
        printf 'label: dos\n2048,%s,c,*\n%s,%s,83\n' "$_boot_sectors" $((2048 + _boot_sectors)) "$_root_sectors" \
            | sfdisk -q "$_out"
    else
        printf 'label: dos\n2048,%s,c,*\n' "$_boot_sectors" | sfdisk -q "$_out"
    fi
    dd if=/usr/lib/syslinux/mbr/mbr.bin of="$_out" bs=440 count=1 conv=notrunc status=none
    dd if="$_boot" of="$_out" bs=512 seek=2048 conv=notrunc status=none
    if [ -n "$_root" ]; then
        dd if="$_root" of="$_out" bs=512 seek=$((2048 + _boot_sectors)) conv=notrunc status=none
    fi
}
