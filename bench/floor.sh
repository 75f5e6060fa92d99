#!/bin/bash
# What any proxy costs on this machine: the smtp-sink phase of
# bench/lane.sh (SESSIONS clients in parallel, one 4 KiB message per
# connection, clients on 200 addresses of 127.1.0.0/16) run direct,
# through HAProxy in TCP mode (a byte relay: no SMTP parsing, no spool,
# no classification; one backend connection per client connection, as
# many threads as sluice has workers) and through sluice, one after
# another in every repetition so that the machine's drift hits each
# alike. HAProxy's ratio is the floor the machine sets for a proxy that
# holds each client's connection on the same cores as the load generator
# and the server: the issue 8 target (ratio >= 0.8) read against it.
#
#   REPS=5 bench/floor.sh
#
# Per run one line: messages/s, the ratio to the direct run of the same
# repetition, and the CPU µs a message of the proxy, of smtp-sink and of
# the load generator; then medians. Environment: REPS [3], MSGS [10000],
# SESSIONS [100], W [2] (sluice's workers, HAProxy's threads), POOL [8],
# SLUICE [./sluice], KEEP=1 keeps the work directory. Root, Debian 12;
# postfix (smtp-sink), dnsmasq and haproxy (scripts/install-deps.sh).
# Hold the machine's bench lock.
set -u
cd "$(dirname "$0")/.." || exit 2
REPS=${REPS:-3} MSGS=${MSGS:-10000} SESS=${SESSIONS:-100} W=${W:-2} POOL=${POOL:-8}
sluice_bin=${SLUICE:-./sluice}
die() { echo "floor.sh: $*" >&2; exit 2; }
. bench/lib.sh # bench_ready, stop_pid, free_port, start_dnsmasq, start_sink, start_haproxy, start_bench_sluice, cpu_ticks, sink_count, kv, run_medians, loadgen_run, sink_wait
[ -n "${SLUICE:-}" ] || make -s sluice >/dev/null || die "make failed"
bench_ready "$sluice_bin" /usr/sbin/smtp-sink /usr/sbin/dnsmasq /usr/sbin/haproxy

dir=$(mktemp -d /tmp/sluice-floor.XXXXXX) || exit 2
chmod 755 "$dir"
pids=()
cleanup() {
	for p in "${pids[@]}"; do stop_pid "$p"; done
	if [ -n "${KEEP:-}" ]; then echo "work directory kept: $dir" >&2; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

dns_port=$(free_port) sink_port=$(free_port) ha_port=$(free_port) sl_port=$(free_port)
start_dnsmasq "$dns_port"
pids+=("$dns_pid")
start_sink "$sink_port"

declare -A port pid
start_haproxy "$ha_port" "$sink_port" "$W"
pid[haproxy]=$ha_pid port[haproxy]=$ha_port
pids+=("$ha_pid")
start_bench_sluice "$sluice_bin" "$sl_port" "$sink_port" no "$W" "$POOL" "$dir/sluice"
pid[sluice]=$sl_pid port[sluice]=$sl_port
pids+=("$sl_pid")
sleep 1 # every worker listening
hz=$(getconf CLK_TCK)

direct_msgps=0
run() { # name port
	local p0=0 p1=0 k0 k1 m0 m1 out n msgps lgt
	k0=$(cpu_ticks "$sink_pid") m0=$(sink_count "$dir/sink.out" mesg)
	[ "$1" = direct ] || p0=$(cpu_ticks "${pid[$1]}")
	out=$(loadgen_run --port "$2" --mode throughput --conns "$SESS" --procs 2 \
		--messages "$MSGS" --size 4096 --per-conn 1 --src 127.1.0.1 --srcs 200 --timeout 240)
	[ "$1" = direct ] || p1=$(cpu_ticks "${pid[$1]}")
	k1=$(cpu_ticks "$sink_pid")
	m1=$(sink_wait "$m0" "$MSGS")
	n=$(kv "$out" msgs_ok) msgps=$(kv "$out" msgps) lgt=$(kv "$out" lg_ticks)
	[ "${n:-0}" = "$MSGS" ] && [ $((m1 - m0)) = "$MSGS" ] ||
		echo "  $1: not every message arrived (sink $((m1 - m0))): $out" >&2
	[ "$1" = direct ] && direct_msgps=$msgps
	awk -v name="$1" -v r="$rep" -v m="$msgps" -v d="$direct_msgps" -v px=$((p1 - p0)) \
		-v sk=$((k1 - k0)) -v lg="${lgt:-0}" -v n="$MSGS" -v hz="$hz" 'BEGIN {
		us = 1e6 / hz / n
		printf "rep=%d run=%s msgps=%s ratio=%.2f proxy_us_per_msg=%.0f sink_us_per_msg=%.0f loadgen_us_per_msg=%.0f\n",
			r, name, m, (d > 0 ? m / d : 0), px * us, sk * us, lg * us }' |
		tee -a "$dir/runs"
}

echo "# bench/floor.sh: tree $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(/usr/sbin/haproxy -v | head -1 | cut -d' ' -f1-3), $SESS sessions, $MSGS messages a run, $REPS repetitions, $W workers/threads"
for rep in $(seq "$REPS"); do
	run direct "$sink_port"
	run haproxy "$ha_port"
	run sluice "$sl_port"
done
grep -E 'AddressSanitizer|runtime error|error: ' "$dir/sluice.log" | head -5 | grep . >&2 &&
	echo "sluice logged errors (above)" >&2
# medians per run name (the ratio of each repetition to its own direct run)
run_medians "$dir/runs"
