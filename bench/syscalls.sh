#!/bin/bash
# System calls per message in sluice's workers (BENCHMARKS.md, "Where a
# message's CPU goes"): the smtp-sink phase of bench/lane.sh (same
# settings: workers 2, backend_pool_size 8, backend_xclient = no, clients
# allow-listed, a private dnsmasq answering the PTR look-ups) with
# `perf stat -e raw_syscalls:sys_enter -e 'syscalls:sys_enter_*'` attached
# to the worker processes for one load generator run. Prints the total and
# the calls per message by type (those above 0.05 per message), and
# sluice's CPU µs per message over that run.
#
#   bench/syscalls.sh       (about 30 s; hold the machine's bench lock)
#
# Environment: SLUICE [./sluice] MSGS [3000] SESSIONS [100] SIZE [4096]
# SRCS [200] WORKERS [2] POOL [8]; PERF=0: no perf (sluice's CPU per
# message alone, without perf's cost per system call). Root, Debian 12; needs postfix
# (smtp-sink), dnsmasq and perf (linux-perf).
set -u
cd "$(dirname "$0")/.." || exit 2
root=$PWD
W=${WORKERS:-2} POOL=${POOL:-8}
SESS=${SESSIONS:-100} MSGS=${MSGS:-3000} SIZE=${SIZE:-4096} SRCS=${SRCS:-200}
sluice_bin=${SLUICE:-$root/sluice}
loadgen=$root/build/loadgen

die() { echo "syscalls.sh: $*" >&2; exit 2; }
. bench/lib.sh
bench_ready "$sluice_bin" /usr/sbin/smtp-sink /usr/sbin/dnsmasq /usr/bin/perf

dir=$(mktemp -d /tmp/sluice-sys.XXXXXX) || exit 2
chmod 755 "$dir"
pids=() sl_pid=''
cleanup() {
	stop_pid "$sl_pid"
	for p in "${pids[@]}"; do stop_pid "$p"; done
	if [ -n "${KEEP:-}" ]; then echo "work directory kept: $dir" >&2; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

dns_port=$(free_port) sink_port=$(free_port) sl_port=$(free_port)
start_dnsmasq "$dns_port"
pids+=("$dns_pid")
start_sink "$sink_port"
start_bench_sluice "$sluice_bin" "$sl_port" "$sink_port" no "$W" "$POOL" "$dir/sluice"
sleep 0.5
workers=$(pgrep -P "$sl_pid" | paste -sd,)
[ -n "$workers" ] || die "no worker processes under $sl_pid"
# a warm-up run: pool connections open, caches warm
"$loadgen" --port "$sl_port" --mode throughput --conns "$SESS" --procs 2 \
	--messages 500 --size "$SIZE" --per-conn 1 --src 127.1.0.1 --srcs "$SRCS" \
	--timeout 120 >/dev/null || die "warm-up run failed"
t0=$(cpu_ticks "$sl_pid")
perf_pid=''
if [ "${PERF:-1}" != 0 ]; then
	perf stat -x, -o "$dir/perf.csv" -e raw_syscalls:sys_enter -e 'syscalls:sys_enter_*' \
		-p "$workers" &
	perf_pid=$!
	sleep 1 # perf attached
fi
out=$("$loadgen" --port "$sl_port" --mode throughput --conns "$SESS" --procs 2 \
	--messages "$MSGS" --size "$SIZE" --per-conn 1 --src 127.1.0.1 --srcs "$SRCS" \
	--timeout 240 | paste -sd' ')
[ -n "$perf_pid" ] && { kill -INT "$perf_pid"; wait "$perf_pid"; }
t1=$(cpu_ticks "$sl_pid")
n=$(kv "$out" msgs_ok)
[ "${n:-0}" = "$MSGS" ] || die "not every message accepted: $out"
hz=$(getconf CLK_TCK)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
echo "# bench/syscalls.sh: $sluice_bin (tree $commit), $MSGS messages of $SIZE B," \
	"$SESS sessions, workers $W, pool $POOL; $(kv "$out" msgps) msg/s"
[ -n "$perf_pid" ] || : >"$dir/perf.csv"
awk -F, -v n="$MSGS" -v cpu="$(( (t1 - t0) * 1000000 / hz / MSGS ))" '
	$3 == "raw_syscalls:sys_enter" { total = $1 }
	$3 ~ /^syscalls:sys_enter_/ && $1 + 0 > 0 {
		name = substr($3, 20); per[name] = $1 / n }
	END {
		if (total) printf "syscalls_per_msg=%.1f ", total / n
		printf "sluice_us_per_msg=%d\n", cpu
		for (k in per) if (per[k] >= 0.05)
			printf "  %-16s %6.2f\n", k, per[k] | "sort -k2 -nr"
	}' "$dir/perf.csv"
grep -E 'error: |AddressSanitizer|runtime error' "$dir/sluice.log" | head -3
