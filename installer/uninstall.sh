#!/bin/sh
# Metrom host uninstaller: stops and removes what install.sh put on this box —
# the agent service, the agent binary, and its identity and state.
#
#   curl -fsSL --pinnedpubkey 'sha256//…' -k https://CONTROLLER:7444/uninstall.sh | sudo sh -s - [--purge] [--dry-run]
#
# Environments stay: their VMs keep running under libvirt and their disks stay
# in /var/lib/metrom-agent/pool (and the base images they are made from in
# /var/lib/metrom-agent/images); containers and volumes stay in Docker. With
# --purge they go too: the libvirt domains Metrom made, the libvirt network
# and storage pool, and every Docker container, network and volume labelled
# io.metrom.env. Packages (libvirt, QEMU, Docker) are left installed.
# Afterwards revoke the host on the controller (metrom host revoke h-…).
#
# POSIX sh; everything runs from main() at the end (see install.sh).
set -eu

AGENT_BIN=/usr/local/bin/metrom-agent
DATA_DIR=/var/lib/metrom-agent
IDENTITY=$DATA_DIR/identity.toml
UNIT_NAME=metrom-agent
UNIT_FILE=/etc/systemd/system/metrom-agent.service
AGENT_LOG=/var/log/metrom-agent.log
LIBVIRT_URI=qemu:///system
KVM_NETWORK=metrom
KVM_POOL=metrom
# What marks Metrom's objects: the libvirt metadata namespace of its domains,
# and the Docker label of its containers, networks and volumes.
DOMAIN_NS=https://metrom.dev/xmlns/environment/1
DOCKER_LABEL=io.metrom.env
# Folders of the data directory that hold environments' disks: kept without --purge.
KEEP="pool images"

usage() {
    cat <<'EOF'
usage: uninstall.sh [--purge] [--dry-run]

  --purge     also delete environments on this box: the libvirt domains Metrom made,
              the libvirt network and storage pool, and Docker containers, networks
              and volumes labelled io.metrom.env (their data is lost)
  --dry-run   print what would be removed and change nothing
  -h, --help  this text
EOF
}

ok() { printf '  ok      %s\n' "$*"; }
note() { printf '  note    %s\n' "$*"; }
did() { printf '  done    %s\n' "$*"; CHANGED=$((CHANGED + 1)); }
would() { printf '  would   %s\n' "$*"; CHANGED=$((CHANGED + 1)); }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

# act WHAT COMMAND... : runs COMMAND (or, in a dry run, says it would).
act() {
    _what=$1
    shift
    if [ "$DRY_RUN" = 1 ]; then
        would "$_what: $*"
        return 0
    fi
    if ! "$@" </dev/null >"$TMP/act.log" 2>&1; then
        tail -n 10 "$TMP/act.log" | sed 's/^/    | /' >&2
        die "$_what failed ($*); the lines above say why"
    fi
    did "$_what"
}

agent_pids() {
    for _p in /proc/[0-9]*; do
        case $(readlink "$_p/exe" 2>/dev/null || true) in
            "$AGENT_BIN" | "$AGENT_BIN (deleted)") printf '%s ' "${_p#/proc/}" ;;
        esac
    done
}

stop_agent() {
    if [ "$HAVE_SYSTEMD" = 1 ] && [ -f "$UNIT_FILE" ]; then
        if systemctl is-active --quiet "$UNIT_NAME" 2>/dev/null || systemctl is-enabled --quiet "$UNIT_NAME" 2>/dev/null; then
            act "stop and disable $UNIT_NAME" systemctl disable --now "$UNIT_NAME"
        fi
    fi
    _pids=$(agent_pids)
    [ -n "$_pids" ] || return 0
    if [ "$DRY_RUN" = 1 ]; then
        would "stop the agent (pid ${_pids% })"
        return 0
    fi
    # shellcheck disable=SC2086 # a list of pids
    kill -TERM $_pids 2>/dev/null || true
    _n=15
    while [ "$_n" -gt 0 ] && [ -n "$(agent_pids)" ]; do
        sleep 1
        _n=$((_n - 1))
    done
    _left=$(agent_pids)
    if [ -n "$_left" ]; then
        # shellcheck disable=SC2086
        kill -KILL $_left 2>/dev/null || true
    fi
    did "stopped the agent (pid ${_pids% })"
}

remove_unit() {
    [ -f "$UNIT_FILE" ] || return 0
    act "remove $UNIT_FILE" rm -f "$UNIT_FILE"
    if [ "$HAVE_SYSTEMD" = 1 ]; then
        act "reload systemd" systemctl daemon-reload
    fi
}

virsh_q() { virsh -c "$LIBVIRT_URI" "$@" </dev/null 2>/dev/null; }

purge_libvirt() {
    if ! have virsh || ! virsh_q version >/dev/null; then
        note "libvirt does not answer here: no VMs to remove"
        return 0
    fi
    for _d in $(virsh_q list --all --name); do
        virsh_q metadata "$_d" --uri "$DOMAIN_NS" >/dev/null || continue
        if virsh_q domstate "$_d" | grep -q running; then
            act "power off the VM $_d" virsh -c "$LIBVIRT_URI" destroy "$_d"
        fi
        act "remove the VM $_d" virsh -c "$LIBVIRT_URI" undefine "$_d" --nvram
    done
    if virsh_q pool-info "$KVM_POOL" >/dev/null; then
        if virsh_q pool-info "$KVM_POOL" | grep -Eq '^State: +running'; then
            act "stop the storage pool $KVM_POOL" virsh -c "$LIBVIRT_URI" pool-destroy "$KVM_POOL"
        fi
        act "remove the storage pool $KVM_POOL" virsh -c "$LIBVIRT_URI" pool-undefine "$KVM_POOL"
    fi
    if virsh_q net-info "$KVM_NETWORK" >/dev/null; then
        if virsh_q net-info "$KVM_NETWORK" | grep -Eq '^Active: +yes'; then
            act "stop the network $KVM_NETWORK" virsh -c "$LIBVIRT_URI" net-destroy "$KVM_NETWORK"
        fi
        act "remove the network $KVM_NETWORK" virsh -c "$LIBVIRT_URI" net-undefine "$KVM_NETWORK"
    fi
}

purge_docker() {
    if ! have docker || ! docker info </dev/null >/dev/null 2>&1; then
        note "no Docker CLI answering here: no containers to remove"
        return 0
    fi
    for _c in $(docker ps -aq --filter "label=$DOCKER_LABEL" </dev/null); do
        act "remove the container $_c" docker rm -f "$_c"
    done
    for _n in $(docker network ls -q --filter "label=$DOCKER_LABEL" </dev/null); do
        act "remove the network $_n" docker network rm "$_n"
    done
    for _v in $(docker volume ls -q --filter "label=$DOCKER_LABEL" </dev/null); do
        act "remove the volume $_v" docker volume rm -f "$_v"
    done
}

remove_data() {
    [ -d "$DATA_DIR" ] || return 0
    if [ "$PURGE" = 1 ]; then
        act "remove $DATA_DIR" rm -rf "$DATA_DIR"
        return 0
    fi
    _kept=
    for _e in "$DATA_DIR"/* "$DATA_DIR"/.[!.]*; do
        [ -e "$_e" ] || continue
        _name=${_e##*/}
        case " $KEEP " in
            *" $_name "*)
                if [ -n "$(ls -A "$_e" 2>/dev/null)" ]; then
                    _kept="$_kept $_e"
                    continue
                fi
                ;;
        esac
        act "remove $_e" rm -rf "$_e"
    done
    if [ -z "$_kept" ]; then
        act "remove $DATA_DIR" rmdir "$DATA_DIR"
    else
        note "kept the disks of environments' VMs:$_kept (--purge removes them)"
    fi
}

main() {
    PURGE=0
    DRY_RUN=0
    CHANGED=0
    while [ $# -gt 0 ]; do
        case $1 in
            --purge) PURGE=1 ;;
            --dry-run) DRY_RUN=1 ;;
            -h | --help) usage; exit 0 ;;
            *) die "unknown option '$1' (see --help)" ;;
        esac
        shift
    done
    if [ "$(id -u)" -ne 0 ] && [ "$DRY_RUN" != 1 ]; then
        die "run as root: pipe the script into 'sudo sh -s - …'"
    fi
    TMP=$(mktemp -d)
    trap 'rm -rf "$TMP"' EXIT
    trap 'exit 130' INT TERM
    HAVE_SYSTEMD=0
    if [ -d /run/systemd/system ] && have systemctl; then HAVE_SYSTEMD=1; fi
    HOST=$(sed -n 's/^principal = "host:\(.*\)"$/\1/p' "$IDENTITY" 2>/dev/null | head -n 1 || true)
    echo "Metrom uninstaller: removing the agent${HOST:+ of host $HOST} from this box$([ "$PURGE" = 1 ] && echo ', with its environments (--purge)')$([ "$DRY_RUN" = 1 ] && echo ' (dry run)')"

    stop_agent
    remove_unit
    if [ "$PURGE" = 1 ]; then
        purge_libvirt
        purge_docker
    fi
    remove_data
    if [ -e "$AGENT_BIN" ]; then act "remove $AGENT_BIN" rm -f "$AGENT_BIN"; fi
    if [ -e "$AGENT_LOG" ]; then act "remove $AGENT_LOG" rm -f "$AGENT_LOG"; fi

    echo
    if [ "$CHANGED" -eq 0 ]; then
        echo "nothing to remove: the Metrom agent is not installed here."
    elif [ "$DRY_RUN" = 1 ]; then
        echo "dry run: nothing was changed."
    else
        echo "removed the Metrom agent from this box."
    fi
    if [ -n "$HOST" ] && [ "$DRY_RUN" != 1 ]; then
        echo "On the controller, revoke the host so it can never connect again: metrom host revoke $HOST"
    fi
}

main "$@"
