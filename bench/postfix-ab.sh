#!/bin/bash
# Side by side against one real Postfix: the direct path and one or more
# sluice builds or settings, run after one another in every repetition, so
# that the machine's drift between runs (a fifth here) hits each alike.
# The Postfix phase of bench/lane.sh (the scenario tests' Postfix: XCLIENT
# for sluice's 127.0.0.1 only, virtual_transport = discard; the load
# generator with SESSIONS in parallel, one 4 KiB message per connection,
# clients on 200 addresses of 127.1.0.0/16), without the other phases.
#
#   bench/postfix-ab.sh 'base:SLUICE=/tmp/sluice-old' 'new:' 'w1:-o workers=1'
#   bench/postfix-ab.sh 'sluice:' 'haproxy:HAPROXY'
#
# Each argument is NAME:[SLUICE=binary] [-o key=value ...] and starts one
# sluice (workers 2, backend_pool_size 8, as lane.sh) beside the others,
# all idle but the one measured; NAME:HAPROXY starts HAProxy in TCP mode
# instead (HAPROXY_THREADS [2] threads; Postfix then sees every client as
# 127.0.0.1), the floor for any proxy's cost. Per run one line:
# messages/s, the ratio to the direct run of the same repetition, and the
# CPU µs a message of that proxy and of Postfix (its process tree with the
# children it reaped); the queue drains (status=sent for every message)
# before the next run starts. Environment: REPS [3], MSGS [1500],
# SESSIONS [20], KEEP=1 keeps the work directory. Root, Debian 12;
# postfix, dnsmasq and haproxy (scripts/install-deps.sh). Hold the
# machine's bench lock.
set -u
cd "$(dirname "$0")/.." || exit 2
REPS=${REPS:-3} MSGS=${MSGS:-1500} SESS=${SESSIONS:-20} HA_THREADS=${HAPROXY_THREADS:-2}
die() { echo "postfix-ab.sh: $*" >&2; exit 2; }
[ $# -gt 0 ] || die "usage: bench/postfix-ab.sh NAME:[SLUICE=binary] [-o key=value ...] | NAME:HAPROXY ..."
. bench/lib.sh # bench_ready, stop_pid, free_port, start_dnsmasq, start_haproxy, start_bench_sluice, bench_postfix, postfix_ticks, cpu_ticks, kv, run_medians, postfix_sent_since
make -s sluice >/dev/null || die "make failed"
bench_ready ./sluice /usr/sbin/postfix /usr/sbin/dnsmasq

dir=$(mktemp -d /tmp/sluice-pfab.XXXXXX) || exit 2
chmod 755 "$dir"
pids=() pf_port=''
cleanup() {
	for p in "${pids[@]}"; do stop_pid "$p"; done
	[ -n "$pf_port" ] && bench_postfix stop "$dir/pf" "$pf_port" 127.0.0.1
	if [ -n "${KEEP:-}" ]; then echo "work directory kept: $dir" >&2; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

dns_port=$(free_port)
start_dnsmasq "$dns_port"
pids+=("$dns_pid")
pf_port=$(bench_postfix start "$dir/pf" 0 127.0.0.1) || { pf_port=''; die "postfix did not start"; }
echo "127.1.0.0/16" >"$dir/allow"
chmod 644 "$dir/allow"
grep -c 'status=sent' "$dir/pf/maillog" >"$dir/sent"

names=()
declare -A port pid
for arg; do
	name=${arg%%:*} rest=${arg#*:} bin=./sluice opts=() haproxy=0
	[[ "$name" =~ ^[A-Za-z0-9_-]+$ ]] && [ "$name" != direct ] || die "bad name in $arg"
	for w in $rest; do
		case "$w" in SLUICE=*) bin=${w#SLUICE=} ;; HAPROXY) haproxy=1 ;; *) opts+=("$w") ;; esac
	done
	p=$(free_port)
	if [ "$haproxy" = 1 ]; then
		[ -x /usr/sbin/haproxy ] || die "/usr/sbin/haproxy missing"
		start_haproxy "$p" "$pf_port" "$HA_THREADS"
		pid[$name]=$ha_pid
	else
		[ -x "$bin" ] || die "$bin missing"
		start_bench_sluice "$bin" "$p" "$pf_port" yes 2 8 "$dir/$name" "${opts[@]}"
		pid[$name]=$sl_pid
	fi
	port[$name]=$p
	pids+=("${pid[$name]}")
	names+=("$name")
done
sleep 1 # every worker listening
hz=$(getconf CLK_TCK)

direct_msgps=0
run() { # name port
	local s0=0 s1=0 k0 k1 out n sent msgps
	k0=$(postfix_ticks)
	[ "$1" = direct ] || s0=$(cpu_ticks "${pid[$1]}")
	out=$(timeout 300 build/loadgen --port "$2" --mode throughput --conns "$SESS" --procs 2 \
		--messages "$MSGS" --size 4096 --per-conn 1 --src 127.1.0.1 --srcs 200 \
		--timeout 240 | paste -sd' ')
	[ "$1" = direct ] || s1=$(cpu_ticks "${pid[$1]}")
	sent=$(postfix_sent_since "$dir/sent" "$MSGS")
	k1=$(postfix_ticks)
	n=$(kv "$out" msgs_ok) msgps=$(kv "$out" msgps)
	[ "${n:-0}" = "$MSGS" ] && [ "$sent" -ge "$MSGS" ] || echo "  $1: not every message delivered: $out" >&2
	[ "$1" = direct ] && direct_msgps=$msgps
	awk -v name="$1" -v r="$rep" -v m="$msgps" -v d="$direct_msgps" -v sl=$((s1 - s0)) \
		-v pf=$((k1 - k0)) -v n="$MSGS" -v hz="$hz" 'BEGIN {
		printf "rep=%d run=%s msgps=%s ratio=%.2f proxy_us_per_msg=%.0f postfix_us_per_msg=%.0f\n",
			r, name, m, (d > 0 ? m / d : 0), sl * 1e6 / hz / n, pf * 1e6 / hz / n }' |
		tee -a "$dir/runs"
}

echo "# bench/postfix-ab.sh $*: tree $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $SESS sessions, $MSGS messages a run, $REPS repetitions"
for rep in $(seq "$REPS"); do
	run direct "$pf_port"
	for name in "${names[@]}"; do run "$name" "${port[$name]}"; done
done
# medians per run name (the ratio of each repetition to its own direct run)
run_medians "$dir/runs"
