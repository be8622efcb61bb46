#!/bin/sh
# A stand-in for systemctl in the installer's test box, where no systemd runs
# (a container): it records every call in /var/log/systemctl.calls, keeps
# "enabled" and the main pid of units in /run/fake-systemd, and on start runs
# the unit's ExecStart in the background. Units without a file under
# /etc/systemd/system (docker, libvirtd) count as enabled and running.
set -u
echo "$*" >>/var/log/systemctl.calls
state=/run/fake-systemd
mkdir -p "$state"
cmd=
units=
now=0
for a in "$@"; do
    case $a in
        --now) now=1 ;;
        -*) ;;
        *) if [ -z "$cmd" ]; then cmd=$a; else units="$units ${a%.service}"; fi ;;
    esac
done

unit_file() { echo "/etc/systemd/system/$1.service"; }
running() {
    p=$(cat "$state/$1.pid" 2>/dev/null) && [ -n "$p" ] && kill -0 "$p" 2>/dev/null
}
start() {
    [ -f "$(unit_file "$1")" ] || return 0
    running "$1" && return 0
    exec_start=$(sed -n 's/^ExecStart=//p' "$(unit_file "$1")")
    nohup sh -c "exec $exec_start" >>"/var/log/$1.log" 2>&1 </dev/null &
    echo $! >"$state/$1.pid"
}
stop() {
    p=$(cat "$state/$1.pid" 2>/dev/null) || return 0
    kill "$p" 2>/dev/null
    i=0
    while kill -0 "$p" 2>/dev/null && [ "$i" -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    rm -f "$state/$1.pid"
}

rc=0
for u in $units; do
    case $cmd in
        daemon-reload) ;;
        is-enabled) [ ! -f "$(unit_file "$u")" ] || [ -e "$state/$u.enabled" ] || rc=1 ;;
        is-active) [ ! -f "$(unit_file "$u")" ] || running "$u" || rc=3 ;;
        enable) touch "$state/$u.enabled"; [ "$now" = 0 ] || start "$u" ;;
        disable) rm -f "$state/$u.enabled"; [ "$now" = 0 ] || stop "$u" ;;
        start) start "$u" ;;
        stop) stop "$u" ;;
        restart) stop "$u"; start "$u" ;;
        cat) [ -f "$(unit_file "$u")" ] || rc=1 ;;
        *) echo "fake systemctl: '$cmd' is not supported" >&2; exit 1 ;;
    esac
done
exit "$rc"
