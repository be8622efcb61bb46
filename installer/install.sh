#!/bin/sh
# Metrom host installer: turns this Linux box into a host of a Metrom
# controller. The operator's `metrom host join-command` prints the line to run:
#
#   curl -fsSL --pinnedpubkey 'sha256//…' -k https://CONTROLLER:7444/install.sh | sudo sh -s - --token mtj1…
#
# It checks the machine; installs KVM/libvirt (or Docker) from this box's own
# package mirrors; creates the libvirt network and storage pool the agent
# uses; downloads the agent binary from the controller (same pinned key) and
# verifies its SHA-256; joins; and starts the agent under systemd. Running it
# again changes nothing. It contacts no host but the controller and the
# configured package mirrors. `--help` lists the options; docs/installer.md
# explains every step.
#
# POSIX sh. Everything runs from main() at the end, so that commands reading
# standard input cannot eat the rest of a script piped into sh.
set -eu

# Filled in by the controller that serves this script (empty in the source
# tree: then pass --url, --pin and --controller).
METROM_URL=''
METROM_PIN=''
METROM_CONTROLLER=''

AGENT_BIN=/usr/local/bin/metrom-agent
DATA_DIR=/var/lib/metrom-agent
IDENTITY=$DATA_DIR/identity.toml
UNIT_NAME=metrom-agent
UNIT_FILE=/etc/systemd/system/metrom-agent.service
AGENT_LOG=/var/log/metrom-agent.log
START_CMD="nohup $AGENT_BIN run --data-dir $DATA_DIR >>$AGENT_LOG 2>&1 &"
# The agent's defaults (agent/src/config.rs): the same names, subnet and folder.
LIBVIRT_URI=qemu:///system
KVM_NETWORK=metrom
KVM_BRIDGE=metrom0
KVM_GATEWAY=192.168.213.1
KVM_PREFIX=24
KVM_DHCP_FIRST=192.168.213.10
KVM_DHCP_LAST=192.168.213.254
KVM_POOL=metrom
KVM_POOL_DIR=$DATA_DIR/pool
DOCKER_SOCKET=/var/run/docker.sock
# Free space needed on the filesystem of /var/lib, in GiB.
MIN_FREE_GIB_KVM=10
MIN_FREE_GIB_DOCKER=5

usage() {
    cat <<'EOF'
usage: install.sh --token mtj1… [options]
       (normally run as the line from `metrom host join-command`)

  --token TOKEN              the join token (or set METROM_JOIN_TOKEN)
  --runtime auto|kvm|docker  what to set up: kvm (KVM + libvirt), docker (Docker
                             Engine), or auto: kvm when the CPU and /dev/kvm allow
                             it, else docker [auto]
  --skip-packages            install no packages (they are preinstalled, or this
                             box cannot reach a package mirror)
  --dry-run                  print the plan (packages, files, commands) and change
                             nothing
  --name NAME                the host's name [this box's hostname]
  --force                    join again although this box already has an identity
                             (after `metrom host revoke`)
  --url https://HOST:PORT    the controller's HTTPS endpoint  [filled in when served]
  --pin sha256//…            that endpoint's key pin          [filled in when served]
  --controller HOST:PORT     the controller's QUIC address    [filled in when served]
  -h, --help                 this text
EOF
}

# --- output ------------------------------------------------------------------
step() { printf '\n==> %s\n' "$*"; }
ok() { printf '  ok      %s\n' "$*"; }
note() { printf '  note    %s\n' "$*"; }
did() { printf '  done    %s\n' "$*"; CHANGED=$((CHANGED + 1)); }
would() { printf '  would   %s\n' "$*"; PLANNED=$((PLANNED + 1)); }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# act WHAT COMMAND... : runs COMMAND (or, in a dry run, says it would).
act() {
    _what=$1
    shift
    if [ "$DRY_RUN" = 1 ]; then
        would "$_what: $*"
        return 0
    fi
    if ! "$@" </dev/null >"$TMP/act.log" 2>&1; then
        tail -n 20 "$TMP/act.log" | sed 's/^/    | /' >&2
        die "$_what failed ($*); the lines above say why"
    fi
    did "$_what"
}

# --- arguments -----------------------------------------------------------------
parse_args() {
    TOKEN=${METROM_JOIN_TOKEN:-}
    RUNTIME=auto
    SKIP_PACKAGES=0
    DRY_RUN=0
    HOST_NAME=
    FORCE=0
    URL=$METROM_URL
    PIN=$METROM_PIN
    CONTROLLER=$METROM_CONTROLLER
    while [ $# -gt 0 ]; do
        case $1 in
            --token | --runtime | --name | --url | --pin | --controller)
                [ $# -ge 2 ] || die "$1 needs a value (see --help)"
                set_opt "$1" "$2"
                shift 2
                ;;
            --token=* | --runtime=* | --name=* | --url=* | --pin=* | --controller=*)
                set_opt "${1%%=*}" "${1#*=}"
                shift
                ;;
            --skip-packages) SKIP_PACKAGES=1; shift ;;
            --dry-run) DRY_RUN=1; shift ;;
            --force) FORCE=1; shift ;;
            -h | --help) usage; exit 0 ;;
            *) die "unknown option '$1' (see --help)" ;;
        esac
    done
    case $RUNTIME in
        auto | kvm | docker) ;;
        *) die "--runtime must be auto, kvm or docker (not '$RUNTIME')" ;;
    esac
    URL=${URL%/}
}

set_opt() {
    case $1 in
        --token) TOKEN=$2 ;;
        --runtime) RUNTIME=$2 ;;
        --name) HOST_NAME=$2 ;;
        --url) URL=$2 ;;
        --pin) PIN=$2 ;;
        --controller) CONTROLLER=$2 ;;
    esac
}

# --- facts about this box ----------------------------------------------------------
os_field() { # os_field KEY : a field of /etc/os-release, unquoted
    [ -r /etc/os-release ] || return 0
    sed -n "s/^$1=//p" /etc/os-release | head -n 1 | tr -d '"'
}

have() { command -v "$1" >/dev/null 2>&1; }

cpu_virt_flags() { grep -qwE 'vmx|svm' /proc/cpuinfo 2>/dev/null; }

free_gib() { # free GiB on the filesystem of /var/lib
    df -Pk /var/lib 2>/dev/null | awk 'NR == 2 { print int($4 / 1048576) }'
}

sha256_of() { sha256sum "$1" | cut -d ' ' -f 1; }

agent_pids() { # pids of running agents (also of a replaced binary)
    for _p in /proc/[0-9]*; do
        case $(readlink "$_p/exe" 2>/dev/null || true) in
            "$AGENT_BIN" | "$AGENT_BIN (deleted)") printf '%s ' "${_p#/proc/}" ;;
        esac
    done
}

host_id() { sed -n 's/^principal = "host:\(.*\)"$/\1/p' "$IDENTITY" 2>/dev/null | head -n 1; }

docker_answers() {
    [ -S "$DOCKER_SOCKET" ] || return 1
    [ "$(curl -s --max-time 5 --unix-socket "$DOCKER_SOCKET" http://localhost/_ping 2>/dev/null)" = OK ]
}

libvirt_answers() { have virsh && virsh -c "$LIBVIRT_URI" version </dev/null >/dev/null 2>&1; }

libvirt_lib_present() {
    ldconfig -p 2>/dev/null | grep -q 'libvirt\.so\.0' \
        || ls /lib*/libvirt.so.0 /usr/lib*/libvirt.so.0 /usr/lib/*/libvirt.so.0 >/dev/null 2>&1
}

# fetch PATH OUT [CURL ARGS...] : asks the controller's HTTPS endpoint, with
# the pinned key, for PATH into OUT; sets HTTP_CODE. Stops on transport errors.
fetch() {
    _path=$1
    _out=$2
    shift 2
    _rc=0
    HTTP_CODE=$(curl -sS --noproxy '*' --pinnedpubkey "$PIN" -k --connect-timeout 10 --max-time 900 \
        -o "$_out" -w '%{http_code}' "$@" "$URL$_path" 2>"$TMP/curl.err") || _rc=$?
    [ "$_rc" -eq 0 ] && return 0
    _msg=$(head -n 1 "$TMP/curl.err")
    case $_rc in
        90) die "$URL is not the controller this line came from: its key does not match the pin $PIN; ask the operator for a fresh line (metrom host join-command)" ;;
        6) die "cannot resolve the controller's name in $URL ($_msg): fix DNS on this box, or have the operator set https_advertise to an address (controller.toml)" ;;
        7) die "cannot connect to the controller at $URL ($_msg): is it running, and is its TCP port open from this box?" ;;
        28) die "the controller at $URL did not answer in time ($_msg): check the network and firewalls between this box and it" ;;
        *) die "cannot talk to the controller at $URL (curl exit $_rc: $_msg)" ;;
    esac
}

body() { head -c 2000 "$1" | tr '\n' ' ' | sed 's/ *$//'; }

# --- preflight ------------------------------------------------------------------
preflight() {
    step "checking this box"
    if [ "$(id -u)" -ne 0 ]; then
        [ "$DRY_RUN" = 1 ] || die "run as root: pipe the script into 'sudo sh -s - …' (as the join line does)"
        note "not root: a dry run only (it changes nothing anyway)"
    else
        ok "running as root"
    fi
    [ "$(uname -s)" = Linux ] || die "this is $(uname -s), not Linux: Metrom hosts run Linux"
    ARCH=$(uname -m)
    case $ARCH in
        x86_64 | amd64) ARCH=x86_64 ;;
        aarch64 | arm64) ARCH=aarch64 ;;
        *) die "architecture $ARCH is not supported: Metrom hosts are x86_64 or aarch64" ;;
    esac
    ok "architecture $ARCH"
    for _c in curl sha256sum df awk sed grep cmp mktemp; do
        have "$_c" || die "the command '$_c' is missing: install it (coreutils, curl, diffutils) and run this again"
    done

    OS_ID=$(os_field ID)
    OS_LIKE=$(os_field ID_LIKE)
    OS_NAME=$(os_field PRETTY_NAME)
    OS_NAME=${OS_NAME:-unknown Linux}
    PM=
    case " $OS_ID $OS_LIKE " in
        *" debian "* | *" ubuntu "*) PM=apt ;;
        *" rhel "* | *" fedora "* | *" centos "*) PM=dnf ;;
    esac
    if [ "$SKIP_PACKAGES" = 1 ]; then
        ok "$OS_NAME (packages: skipped, --skip-packages)"
    elif [ -z "$PM" ]; then
        die "$OS_NAME is not supported: the installer installs packages on Debian/Ubuntu (apt) and RHEL-family (dnf) systems; preinstall the packages (docs/installer.md) and run this again with --skip-packages"
    elif [ "$PM" = apt ] && ! have apt-get; then
        die "$OS_NAME without apt-get: install apt, or preinstall the packages and use --skip-packages"
    elif [ "$PM" = dnf ] && ! have dnf; then
        die "$OS_NAME without dnf: install dnf, or preinstall the packages and use --skip-packages"
    else
        ok "$OS_NAME, packages with $PM from this box's configured mirrors"
    fi

    HAVE_SYSTEMD=0
    if [ -d /run/systemd/system ] && have systemctl; then
        HAVE_SYSTEMD=1
        ok "systemd: the agent will run as the service $UNIT_NAME"
    else
        note "no systemd on this box: you will be told how to start the agent"
    fi

    choose_runtime

    _free=$(free_gib)
    _need=$MIN_FREE_GIB_DOCKER
    [ "$RUNTIME" = kvm ] && _need=$MIN_FREE_GIB_KVM
    [ -n "$_free" ] || die "cannot tell the free space on /var/lib (df failed)"
    [ "$_free" -ge "$_need" ] \
        || die "only $_free GiB free on /var/lib: a $RUNTIME host needs at least $_need GiB there for images and environments; free some space or grow the disk"
    ok "$_free GiB free on /var/lib"

    if [ -z "$URL" ] || [ -z "$PIN" ] || [ -z "$CONTROLLER" ]; then
        die "no controller given: run the line from \`metrom host join-command\`, or pass --url, --pin and --controller"
    fi
    case $PIN in
        sha256//?*) ;;
        *) die "--pin must look like sha256//BASE64 (from metrom host join-command), not '$PIN'" ;;
    esac
    fetch "/agent/$ARCH/metrom-agent.sha256" "$TMP/agent.sha256"
    case $HTTP_CODE in
        200) ;;
        404) die "the controller has no agent for this box: $(body "$TMP/agent.sha256")" ;;
        *) die "the controller answered HTTP $HTTP_CODE for the agent's checksum: $(body "$TMP/agent.sha256")" ;;
    esac
    AGENT_SHA=$(cut -d ' ' -f 1 <"$TMP/agent.sha256" | head -n 1)
    printf '%s' "$AGENT_SHA" | grep -qE '^[0-9a-f]{64}$' \
        || die "the controller's checksum for the agent is not a SHA-256 ('$(body "$TMP/agent.sha256")'); tell its operator"
    ok "controller $URL answers and its key matches the pin"

    if [ -f "$IDENTITY" ] && [ "$FORCE" != 1 ]; then
        ok "already joined as host $(host_id) ($IDENTITY): the token is not needed"
    else
        [ -n "$TOKEN" ] || die "no join token: pass --token mtj1… (from metrom host join-command)"
        # In a file, not on curl's command line (other users can read that).
        printf '%s' "$TOKEN" >"$TMP/token.in"
        fetch /token/check "$TMP/token" --data-binary "@$TMP/token.in" -H 'Content-Type: text/plain'
        case $HTTP_CODE in
            200) ok "$(body "$TMP/token")" ;;
            *) die "the controller refuses this join token: $(body "$TMP/token")" ;;
        esac
    fi

    if [ "$SKIP_PACKAGES" = 1 ]; then
        check_preinstalled
    fi
}

# Sets RUNTIME to kvm or docker. /dev/kvm decides; the CPU flags explain.
choose_runtime() {
    _flags=no
    if [ "$ARCH" = aarch64 ] || cpu_virt_flags; then _flags=yes; fi
    case $RUNTIME in
        kvm)
            if [ ! -c /dev/kvm ]; then
                [ "$_flags" = yes ] \
                    || die "this CPU shows no virtualisation extensions (vmx/svm): enable VT-x/AMD-V in the firmware (or nested virtualisation for a VM), or use --runtime docker"
                die "/dev/kvm is missing although the CPU supports virtualisation: load the module (modprobe kvm_intel or kvm_amd), or use --runtime docker"
            fi
            ok "runtime kvm: /dev/kvm is present"
            ;;
        docker)
            ok "runtime docker"
            ;;
        auto)
            if [ -c /dev/kvm ]; then
                RUNTIME=kvm
                ok "runtime kvm (auto: /dev/kvm is present)"
            elif [ "$_flags" = yes ]; then
                RUNTIME=docker
                ok "runtime docker (auto: the CPU supports virtualisation but /dev/kvm is missing; load kvm_intel or kvm_amd and use --runtime kvm for VMs)"
            else
                RUNTIME=docker
                ok "runtime docker (auto: no /dev/kvm and no vmx/svm CPU flags)"
            fi
            ;;
    esac
    if [ "$RUNTIME" = kvm ] && [ "$_flags" = no ]; then
        note "the CPU flags show no vmx/svm (hidden by a hypervisor?), but /dev/kvm is there: using it"
    fi
}

# With --skip-packages, what must already be there.
check_preinstalled() {
    libvirt_lib_present \
        || die "libvirt.so.0 is missing and --skip-packages was given: the agent links libvirt even for Docker; install libvirt0 (Debian/Ubuntu) or libvirt-libs (RHEL), or drop --skip-packages"
    if [ "$RUNTIME" = kvm ]; then
        have virsh || die "virsh is missing and --skip-packages was given: install libvirt-daemon-system and libvirt-clients (or libvirt on RHEL), or drop --skip-packages"
        have genisoimage || die "genisoimage is missing and --skip-packages was given: install it (the agent makes cloud-init seeds with it), or drop --skip-packages"
    else
        docker_answers || have dockerd \
            || die "Docker Engine is not installed and --skip-packages was given: install docker.io (or docker-ce), or drop --skip-packages"
    fi
    ok "preinstalled: libvirt library$([ "$RUNTIME" = kvm ] && echo ', virsh, genisoimage' || echo ', Docker Engine')"
}

# --- the agent binary ---------------------------------------------------------------
fetch_agent() {
    step "agent binary"
    BIN_CHANGED=0
    if [ -x "$AGENT_BIN" ] && [ "$(sha256_of "$AGENT_BIN")" = "$AGENT_SHA" ]; then
        ok "$AGENT_BIN is the controller's (sha256 $AGENT_SHA)"
        return 0
    fi
    BIN_CHANGED=1
    if [ "$DRY_RUN" = 1 ]; then
        would "download $URL/agent/$ARCH/metrom-agent, check sha256 $AGENT_SHA, install it as $AGENT_BIN"
        return 0
    fi
    fetch "/agent/$ARCH/metrom-agent" "$TMP/metrom-agent"
    [ "$HTTP_CODE" = 200 ] || die "the controller answered HTTP $HTTP_CODE for the agent binary: $(body "$TMP/metrom-agent")"
    _got=$(sha256_of "$TMP/metrom-agent")
    [ "$_got" = "$AGENT_SHA" ] \
        || die "the agent binary from $URL does not match its published SHA-256 (expected $AGENT_SHA, got $_got): nothing was installed; tell the controller's operator (its copy may be damaged or tampered with)"
    chmod 0755 "$TMP/metrom-agent"
    ok "downloaded and verified (sha256 $_got)"
}

install_agent() {
    [ "$BIN_CHANGED" = 1 ] || return 0
    step "installing the agent"
    if [ "$DRY_RUN" = 1 ]; then
        would "install $AGENT_BIN (mode 0755)"
        return 0
    fi
    mkdir -p "$(dirname "$AGENT_BIN")"
    # A rename, so that a running agent keeps its old file until restarted.
    cp "$TMP/metrom-agent" "$AGENT_BIN.new"
    chmod 0755 "$AGENT_BIN.new"
    mv -f "$AGENT_BIN.new" "$AGENT_BIN"
    did "installed $AGENT_BIN"
    "$AGENT_BIN" --version </dev/null >"$TMP/version" 2>&1 \
        || die "$AGENT_BIN does not run on this box: $(body "$TMP/version")"
}

# --- packages -----------------------------------------------------------------
package_list() {
    case $PM:$RUNTIME in
        apt:kvm)
            if [ "$ARCH" = aarch64 ]; then _q="qemu-system-arm qemu-efi-aarch64"; else _q=qemu-system-x86; fi
            echo "$_q qemu-utils libvirt-daemon-system libvirt-clients dnsmasq-base iptables genisoimage libvirt0 curl ca-certificates"
            ;;
        apt:docker)
            echo "docker.io libvirt0 curl ca-certificates"
            ;;
        dnf:kvm)
            echo "qemu-kvm qemu-img libvirt-daemon-kvm libvirt-client genisoimage libvirt-libs curl ca-certificates"
            ;;
        dnf:docker)
            if [ "$OS_ID" = fedora ]; then _d=moby-engine; else _d=docker-ce; fi
            echo "$_d libvirt-libs curl ca-certificates"
            ;;
    esac
}

installed() { # installed PACKAGE
    case $PM in
        apt) dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed' ;;
        dnf) rpm -q --whatprovides "$1" >/dev/null 2>&1 ;;
    esac
}

packages() {
    step "packages"
    if [ "$SKIP_PACKAGES" = 1 ]; then
        ok "skipped (--skip-packages)"
        return 0
    fi
    _all=$(package_list)
    note "$RUNTIME host on $PM needs: $_all"
    _missing=
    for _p in $_all; do
        installed "$_p" || _missing="$_missing $_p"
    done
    _missing=${_missing# }
    if [ -z "$_missing" ]; then
        ok "all installed"
        return 0
    fi
    case $PM in
        apt)
            if [ "$DRY_RUN" = 1 ]; then
                would "install $_missing: apt-get update && apt-get install -y --no-install-recommends $_missing"
                return 0
            fi
            note "installing $_missing with apt-get (from this box's mirrors; a few minutes)"
            # shellcheck disable=SC2086 # a list of package names
            if ! { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
                DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $_missing; } \
                </dev/null >"$TMP/apt.log" 2>&1; then
                tail -n 15 "$TMP/apt.log" | sed 's/^/    | /' >&2
                die "apt-get could not install $_missing (above): check this box's package sources (/etc/apt/sources.list*), or preinstall them and use --skip-packages"
            fi
            ;;
        dnf)
            if [ "$DRY_RUN" = 1 ]; then
                would "install $_missing: dnf install -y $_missing"
                return 0
            fi
            note "installing $_missing with dnf (from this box's repositories; a few minutes)"
            # shellcheck disable=SC2086 # a list of package names
            if ! dnf install -y $_missing </dev/null >"$TMP/dnf.log" 2>&1; then
                tail -n 15 "$TMP/dnf.log" | sed 's/^/    | /' >&2
                die "dnf could not install $_missing (above): check this box's repositories (/etc/yum.repos.d; Docker needs a mirror of Docker CE), or preinstall them and use --skip-packages"
            fi
            ;;
    esac
    did "installed $_missing"
}

# --- the runtime ----------------------------------------------------------------
wait_until() { # wait_until SECONDS COMMAND... : polls once a second
    _n=$1
    shift
    while [ "$_n" -gt 0 ]; do
        "$@" && return 0
        _n=$((_n - 1))
        sleep 1
    done
    return 1
}

# ensure_service UNIT WHAT : enabled at boot and running (systemd only).
ensure_service() {
    if systemctl is-enabled --quiet "$1" 2>/dev/null && systemctl is-active --quiet "$1" 2>/dev/null; then
        ok "$2 enabled and running ($1)"
    else
        act "enable and start $2" systemctl enable --now "$1"
    fi
}

runtime_daemon() {
    step "runtime: $RUNTIME"
    if [ "$RUNTIME" = kvm ]; then
        kvm_device
        if [ "$HAVE_SYSTEMD" = 1 ]; then
            if [ "$PM" = dnf ] && systemctl cat virtqemud.socket >/dev/null 2>&1; then
                for _u in virtqemud.socket virtnetworkd.socket virtstoraged.socket; do
                    ensure_service "$_u" "libvirt ($_u)"
                done
            else
                ensure_service libvirtd libvirtd
            fi
            [ "$DRY_RUN" = 1 ] || wait_until 60 libvirt_answers \
                || die "libvirt does not answer at $LIBVIRT_URI a minute after starting: see journalctl -u libvirtd"
        elif libvirt_answers; then
            ok "libvirt answers at $LIBVIRT_URI"
        elif [ "$DRY_RUN" = 1 ]; then
            would "need libvirtd running (no systemd here: start it yourself: libvirtd -d)"
        else
            die "libvirtd is not running and this box has no systemd to start it: start it (virtlogd -d; libvirtd -d), then run this line again"
        fi
    else
        if [ "$HAVE_SYSTEMD" = 1 ]; then
            ensure_service docker "Docker Engine"
            [ "$DRY_RUN" = 1 ] || wait_until 60 docker_answers \
                || die "Docker Engine does not answer on $DOCKER_SOCKET a minute after starting: see journalctl -u docker"
        elif docker_answers; then
            ok "Docker Engine answers on $DOCKER_SOCKET"
        elif [ "$DRY_RUN" = 1 ]; then
            would "need Docker Engine running (no systemd here: start dockerd yourself)"
        else
            die "Docker Engine is not running and this box has no systemd to start it: start dockerd, then run this line again"
        fi
    fi
}

# Without udev nobody applies Debian's rule for /dev/kvm (group kvm, 0660);
# libvirt then re-probes QEMU for a minute on every VM start.
kvm_device() {
    [ -c /dev/kvm ] || return 0
    _now=$(stat -c '%G %a' /dev/kvm 2>/dev/null || true)
    if [ "$_now" = "kvm 660" ]; then
        ok "/dev/kvm: group kvm, mode 0660"
    elif [ -S /run/udev/control ]; then
        note "/dev/kvm is '$_now' (udev manages it; the qemu packages' rule sets group kvm, mode 0660)"
    else
        act "/dev/kvm: group kvm, mode 0660 (no udev here to do it)" sh -c 'chgrp kvm /dev/kvm && chmod 0660 /dev/kvm'
    fi
}

network_xml() {
    cat <<EOF
<network>
  <name>$KVM_NETWORK</name>
  <forward mode='nat'/>
  <bridge name='$KVM_BRIDGE' stp='on' delay='0'/>
  <ip address='$KVM_GATEWAY' prefix='$KVM_PREFIX'>
    <dhcp>
      <range start='$KVM_DHCP_FIRST' end='$KVM_DHCP_LAST'/>
    </dhcp>
  </ip>
</network>
EOF
}

pool_xml() {
    cat <<EOF
<pool type='dir'>
  <name>$KVM_POOL</name>
  <target>
    <path>$KVM_POOL_DIR</path>
  </target>
</pool>
EOF
}

virsh_q() { virsh -c "$LIBVIRT_URI" "$@" </dev/null 2>/dev/null; }

# The NAT network and the storage pool the agent uses, as the agent would
# create them (it also does, when they are missing).
kvm_objects() {
    [ "$RUNTIME" = kvm ] || return 0
    step "libvirt network and storage pool"
    if [ "$DRY_RUN" = 1 ] && ! libvirt_answers; then
        would "define, autostart and start the network $KVM_NETWORK ($KVM_GATEWAY/$KVM_PREFIX, bridge $KVM_BRIDGE, NAT, DHCP $KVM_DHCP_FIRST-$KVM_DHCP_LAST)"
        would "define, build, autostart and start the directory pool $KVM_POOL at $KVM_POOL_DIR"
        return 0
    fi
    _info=$(virsh_q net-info "$KVM_NETWORK" || true)
    if [ -z "$_info" ]; then
        network_xml >"$TMP/network.xml"
        act "define the network $KVM_NETWORK ($KVM_GATEWAY/$KVM_PREFIX, NAT)" virsh -c "$LIBVIRT_URI" net-define "$TMP/network.xml"
        _info="Active: no Autostart: no"
    fi
    if printf '%s\n' "$_info" | grep -Eq '^Autostart: +yes'; then :; else
        act "autostart the network $KVM_NETWORK" virsh -c "$LIBVIRT_URI" net-autostart "$KVM_NETWORK"
    fi
    if printf '%s\n' "$_info" | grep -Eq '^Active: +yes'; then
        ok "network $KVM_NETWORK defined and active"
    else
        act "start the network $KVM_NETWORK" virsh -c "$LIBVIRT_URI" net-start "$KVM_NETWORK"
    fi

    _xml=$(virsh_q pool-dumpxml "$KVM_POOL" || true)
    if [ -z "$_xml" ]; then
        pool_xml >"$TMP/pool.xml"
        act "define the storage pool $KVM_POOL at $KVM_POOL_DIR" virsh -c "$LIBVIRT_URI" pool-define "$TMP/pool.xml"
        act "build the storage pool $KVM_POOL" virsh -c "$LIBVIRT_URI" pool-build "$KVM_POOL"
    elif ! printf '%s\n' "$_xml" | grep -q "<path>$KVM_POOL_DIR</path>"; then
        die "a libvirt storage pool named $KVM_POOL already exists for another folder than $KVM_POOL_DIR: remove it (virsh pool-destroy $KVM_POOL; virsh pool-undefine $KVM_POOL), then run this again"
    fi
    _info=$(virsh_q pool-info "$KVM_POOL" || true)
    if printf '%s\n' "$_info" | grep -Eq '^Autostart: +yes'; then :; else
        act "autostart the storage pool $KVM_POOL" virsh -c "$LIBVIRT_URI" pool-autostart "$KVM_POOL"
    fi
    if printf '%s\n' "$_info" | grep -Eq '^State: +running'; then
        ok "storage pool $KVM_POOL at $KVM_POOL_DIR defined and running"
    else
        act "start the storage pool $KVM_POOL" virsh -c "$LIBVIRT_URI" pool-start "$KVM_POOL"
    fi
}

# --- join and run -------------------------------------------------------------------
join() {
    step "joining the controller"
    if [ -f "$IDENTITY" ] && [ "$FORCE" != 1 ]; then
        ok "already joined as host $(host_id)"
        return 0
    fi
    set -- join --controller "$CONTROLLER" --data-dir "$DATA_DIR"
    [ -z "$HOST_NAME" ] || set -- "$@" --hostname "$HOST_NAME"
    [ "$FORCE" != 1 ] || set -- "$@" --force
    if [ "$DRY_RUN" = 1 ]; then
        would "join the controller at $CONTROLLER: $AGENT_BIN $* (the token in METROM_JOIN_TOKEN)"
        return 0
    fi
    if ! METROM_JOIN_TOKEN=$TOKEN "$AGENT_BIN" "$@" </dev/null >"$TMP/join.log" 2>&1; then
        die "metrom-agent join failed: $(grep -v '^ *$' "$TMP/join.log" | tail -n 1)"
    fi
    did "joined as host $(host_id) (identity $IDENTITY)"
    JOINED=1
}

unit_text() {
    cat <<EOF
# Written by the Metrom installer (install.sh); uninstall.sh removes it.
[Unit]
Description=Metrom agent: this box as a host of the Metrom controller $CONTROLLER
After=network-online.target libvirtd.service docker.service
Wants=network-online.target

[Service]
ExecStart=$AGENT_BIN run --data-dir $DATA_DIR
Restart=always
RestartSec=5
# Exit code 3: this host was revoked. Do not restart; join again with a new token.
RestartPreventExitStatus=3
# Stop only the agent: environments' VMs (under libvirtd) and containers (under
# dockerd) keep running across agent restarts and upgrades.
KillMode=process

[Install]
WantedBy=multi-user.target
EOF
}

service() {
    step "agent service"
    if [ "$HAVE_SYSTEMD" != 1 ]; then
        no_systemd
        return 0
    fi
    unit_text >"$TMP/unit"
    _unit_changed=0
    if [ -f "$UNIT_FILE" ] && cmp -s "$TMP/unit" "$UNIT_FILE"; then
        ok "$UNIT_FILE in place"
    else
        _unit_changed=1
        if [ "$DRY_RUN" = 1 ]; then
            would "write $UNIT_FILE:"
            sed 's/^/            | /' "$TMP/unit"
        else
            cp "$TMP/unit" "$UNIT_FILE.new"
            chmod 0644 "$UNIT_FILE.new"
            mv -f "$UNIT_FILE.new" "$UNIT_FILE"
            did "wrote $UNIT_FILE"
        fi
        act "reload systemd" systemctl daemon-reload
    fi
    if systemctl is-enabled --quiet "$UNIT_NAME" 2>/dev/null; then
        ok "$UNIT_NAME enabled at boot"
    else
        act "enable $UNIT_NAME at boot" systemctl enable "$UNIT_NAME"
    fi
    if ! systemctl is-active --quiet "$UNIT_NAME" 2>/dev/null; then
        act "start the agent" systemctl start "$UNIT_NAME"
    elif [ "$BIN_CHANGED" = 1 ] || [ "$_unit_changed" = 1 ] || [ "$JOINED" = 1 ]; then
        act "restart the agent (environments keep running: KillMode=process)" systemctl restart "$UNIT_NAME"
    else
        ok "agent running (systemctl status $UNIT_NAME; journalctl -u $UNIT_NAME)"
    fi
}

no_systemd() {
    _pids=$(agent_pids)
    if [ -n "$_pids" ] && [ "$BIN_CHANGED" != 1 ] && [ "$JOINED" != 1 ]; then
        ok "agent running (pid ${_pids% }; log $AGENT_LOG)"
        return 0
    fi
    if [ -n "$_pids" ]; then
        note "an agent with the old binary or identity runs (pid ${_pids% }): stop it (kill ${_pids% }), then start it again:"
    else
        note "this box has no systemd: start the agent yourself, now and after every boot:"
    fi
    printf '    %s\n' "$START_CMD"
    NEEDS_START=1
}

summary() {
    _id=$(host_id)
    echo
    if [ "$DRY_RUN" = 1 ]; then
        echo "dry run: nothing was changed; $PLANNED change(s) planned above."
    elif [ "$CHANGED" -eq 0 ] && [ "$NEEDS_START" = 0 ]; then
        echo "nothing changed: everything was already in place. This box is Metrom host $_id ($RUNTIME)."
    elif [ "$NEEDS_START" = 1 ]; then
        echo "installed: this box is Metrom host $_id ($RUNTIME; $CHANGED change(s)). Start the agent as shown above; the host then shows as Ready in \`metrom host list\`."
    else
        echo "done: this box is Metrom host $_id ($RUNTIME; $CHANGED change(s)). It shows as Ready in \`metrom host list\` once the agent has connected."
    fi
}

main() {
    CHANGED=0
    PLANNED=0
    NEEDS_START=0
    BIN_CHANGED=0
    JOINED=0
    parse_args "$@"
    TMP=$(mktemp -d)
    trap 'rm -rf "$TMP"' EXIT
    trap 'exit 130' INT TERM
    echo "Metrom installer: making this box a host of the controller at ${CONTROLLER:-?}$([ "$DRY_RUN" = 1 ] && echo ' (dry run)')"
    # Nothing changes before every check has passed and the agent is verified.
    preflight
    fetch_agent
    packages
    runtime_daemon
    install_agent
    join
    kvm_objects
    service
    summary
}

main "$@"
