#!/bin/bash
# System calls and wake-ups per message of one sluice worker, one client at
# a time: strace -f on the worker while the load generator sends MSGS
# messages of 4 KiB over one session after another, after a warm-up. What
# bench/syscalls.sh counts under load (where one wake-up serves many
# sessions), here for the path a message takes when nothing else happens:
# every round trip is a wake-up of its own.
#
#   bench/strace-one.sh sink      smtp-sink backend, backend_xclient = no
#   bench/strace-one.sh postfix   the scenario tests' Postfix (XCLIENT for
#                                 127.0.0.1 only), backend_xclient = yes
#
# Environment: SLUICE=path [./sluice], MSGS [5], KEEP=1 keeps the trace.
# Prints per message: system calls of the worker's loop thread (without
# the idle timer's empty epoll_wait returns), epoll_wait returns with
# events (wake-ups), and the calls by name. strace slows every call, so
# the counts matter here, not the time. Root, Debian 12; needs strace
# (apt-get install strace; a bench tool, not in scripts/install-deps.sh),
# postfix (smtp-sink) and dnsmasq (scripts/install-deps.sh).
set -u
cd "$(dirname "$0")/.." || exit 2
mode=${1:-}
MSGS=${MSGS:-5}
sluice_bin=${SLUICE:-./sluice}
die() { echo "strace-one.sh: $*" >&2; exit 2; }
case "$mode" in sink) xc=no ;; postfix) xc=yes ;; *) die "usage: bench/strace-one.sh sink|postfix" ;; esac
. bench/lib.sh
bench_ready "$sluice_bin" /usr/bin/strace /usr/sbin/smtp-sink /usr/sbin/dnsmasq

dir=$(mktemp -d /tmp/sluice-strace.XXXXXX) || exit 2
chmod 755 "$dir"
pids=() sl_pid='' pf_port=''
pf() { bench_postfix "$1" "$dir/pf" "${pf_port:-0}" 127.0.0.1; }
cleanup() {
	stop_pid "$sl_pid"
	[ -n "$pf_port" ] && pf stop
	for p in "${pids[@]}"; do stop_pid "$p"; done
	if [ -n "${KEEP:-}" ]; then echo "work directory kept: $dir" >&2; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

dns_port=$(free_port) sl_port=$(free_port)
start_dnsmasq "$dns_port"
pids+=("$dns_pid")
if [ "$mode" = sink ]; then
	backend_port=$(free_port)
	start_sink "$backend_port"
else
	pf_port=$(pf start) || { pf_port=''; die "postfix did not start"; }
	backend_port=$pf_port
fi
echo "127.1.0.0/16" >"$dir/allow"
start_bench_sluice "$sluice_bin" "$sl_port" "$backend_port" "$xc" 1 2 "$dir/sluice"
sleep 0.5
worker=$(pgrep -P "$sl_pid" | head -1)
[ -n "$worker" ] || die "no worker process under $sl_pid"
send() { # messages
	timeout 60 build/loadgen --port "$sl_port" --mode throughput --conns 1 --procs 1 \
		--messages "$1" --size 4096 --per-conn 1 --src 127.1.0.1 --srcs 1 --timeout 50
}
send 20 >/dev/null || die "warm-up failed"
strace -f -o "$dir/trace" -p "$worker" 2>/dev/null &
st=$!
sleep 1 # attached
out=$(send "$MSGS" | paste -sd' ')
sleep 0.5
kill -INT "$st"; wait "$st" 2>/dev/null
[ "$(kv "$out" msgs_ok)" = "$MSGS" ] || die "not every message accepted: $out"
echo "# bench/strace-one.sh $mode: $sluice_bin (tree $(git rev-parse --short HEAD 2>/dev/null || echo unknown)), $MSGS messages, one at a time"
# The loop thread is the worker's pid; strace -f also shows the pool and
# log threads (their calls are listed apart). Unfinished/resumed pairs
# count once.
awk -v loop="$worker" -v n="$MSGS" '
	/resumed>/ { next }
	{ name = $2; sub(/\(.*/, "", name) }
	$2 ~ /^epoll_wait\(/ && $0 ~ /\[\]/ { next }
	$1 == loop { calls++; per[name]++; if ($2 ~ /^epoll_wait\(/) wakes++; next }
	{ other++ }
	END {
		printf "syscalls_per_msg=%.1f wakeups_per_msg=%.1f other_threads_per_msg=%.1f\n",
			calls / n, wakes / n, other / n
		for (k in per) printf "  %-16s %6.2f\n", k, per[k] / n | "sort -k2 -nr"
	}' "$dir/trace"
