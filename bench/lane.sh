#!/bin/bash
# Fast lane targets (issue 8): what one message costs through sluice beside
# the direct path, in the same run, against smtp-sink and against a real
# Postfix, and Postfix's own count of the connections and commands sluice
# spends per message. Prints key=value lines per run, then one Markdown
# table with the command, the machine and the figures against the targets.
#
#   bench/lane.sh                 the whole bench, a few minutes
#
# Environment (defaults in brackets):
#   SLUICE=path          the binary to measure [./sluice, built by make]
#   SLUICE_OPTS="-o k=v" further sluice settings, both sluice instances
#   WORKERS [2] POOL [8] sluice workers, backend_pool_size per worker
#   REPS [3]             repetitions; each runs direct, then through sluice
#   SESSIONS [100] MSGS [10000] SIZE [4096]   smtp-sink throughput runs
#   LAT_SESSIONS [10] LAT_MSGS [1500] LAT_THINK_MS [20]   smtp-sink latency runs
#   PF_SESSIONS [20] PF_MSGS [1500]           real Postfix runs
#   SLOW [2000]          slow clients (0: skip that phase)
#   SRCS [200]           client source addresses (127.1.0.1 upwards)
#   KEEP=1               keep the work directory (logs)
#
# Phases, all on loopback, one sluice per backend (restarted in between):
#  1. smtp-sink -c, sluice with backend_xclient = no (smtp-sink offers
#     XCLIENT NAME HELO but not ADDR; with "yes" sluice refuses to relay).
#     bench/loadgen.c in throughput mode, SESSIONS in parallel, one message
#     of SIZE per connection, clients on SRCS addresses of 127.1.0.0/16;
#     messages/s direct and through sluice, the ratio, and the CPU per
#     message (user + system ticks, /proc/PID/stat) of sluice (supervisor
#     and workers), of smtp-sink and of the load generator itself (its
#     children, from the cutime of the shell that waited for it): all three
#     share the machine's cores, so the split shows whether the bench
#     measures sluice or its own overhead. "machine busy" is the share of
#     all CPUs busy during the run (/proc/stat), split into softirq (where
#     loopback TCP is mostly processed) and "other processes": busy less
#     softirq less the three processes of the bench, i.e. other users of a
#     shared machine (near 0 % on a quiet one).
#  2. The same servers, LAT_SESSIONS in parallel, each pausing LAT_THINK_MS
#     between its connections (loadgen --think-ms) so that the machine is
#     not saturated (closed-loop, 10 sessions through sluice kept both cores
#     busy): latency from MAIL sent to the 250 after the dot, p50 and p99
#     per run (loadgen's lat_p50_ms / lat_p99_ms).
#  3. SLOW clients (EHLO, MAIL, RCPT, DATA at once, then a body line a
#     second for 10 s, then the dot), as bench/peers.sh does: the largest
#     number of established connections to the sink seen (every 0.5 s)
#     against the pool, WORKERS x POOL.
#  4. A real Postfix: the private instance of the scenario tests
#     (tests/scenario/harness.py: own config directory and queue, smtpd on a
#     free loopback port, XCLIENT allowed for 127.0.0.1, which is sluice's
#     address, never for the clients', and for phase 5's 127.0.0.2) with
#     virtual_transport = discard:
#     cleanup writes and fsyncs the queue file before smtpd answers 250,
#     then the message is discarded. sluice with backend_xclient = yes.
#     PF_SESSIONS in parallel, PF_MSGS per run; after each run the queue
#     drains (status=sent for every message) before the next one starts.
#     The mail server's CPU per message is Postfix's here (the master's
#     process tree with the children it reaped; key sink_us_per_msg).
#     Then sluice stops (its idle pool connections end) and Postfix's
#     per-connection counters ("disconnect from ... ehlo=N xclient=N mail=N
#     rcpt=N data=N rset=N quit=N commands=N", parsed by
#     tests/scenario/postfix_counters.py) are summed per peer: connections
#     from 127.0.0.1 are sluice's, the others the direct clients'.
#  5. The same Postfix, no sluice: REPS more direct runs, each beside a run
#     whose clients name themselves with XCLIENT as sluice would (loadgen
#     --xclient: from 127.0.0.2, which this Postfix also lets send XCLIENT;
#     ADDR over the SRCS addresses, then EHLO): what the identity alone
#     costs Postfix, so the ratio any XCLIENT proxy could reach here.
#
# sluice in every phase: clients' 127.1.0.0/16 in cidr_allow_file (never
# held at the greeting nor shaped: the fast path is measured, not
# classification), a private dnsmasq answers the PTR look-ups at once
# (NXDOMAIN), client_connection_limit raised for the many sessions per
# address. Checks: every message of every run accepted (loadgen msgs_ok),
# counted by smtp-sink (its -c counter) or logged status=sent by Postfix,
# no error line in sluice's log. Exit 0 only then.
#
# Root, Debian 12; needs postfix (smtp-sink), dnsmasq (scripts/install-deps.sh)
# and builds build/loadgen (make bench-tools) and, without SLUICE, ./sluice.
set -u
cd "$(dirname "$0")/.." || exit 2
root=$PWD
cmdline="bench/lane.sh${*:+ $*}"
W=${WORKERS:-2} POOL=${POOL:-8} REPS=${REPS:-3}
SESS=${SESSIONS:-100} MSGS=${MSGS:-10000} SIZE=${SIZE:-4096}
LAT_SESS=${LAT_SESSIONS:-10} LAT_MSGS=${LAT_MSGS:-1500} LAT_THINK=${LAT_THINK_MS:-20}
PF_SESS=${PF_SESSIONS:-20} PF_MSGS=${PF_MSGS:-1500}
SLOW=${SLOW:-2000} SRCS=${SRCS:-200}
SRC=127.1.0.1
loadgen=$root/build/loadgen
sluice_bin=${SLUICE:-$root/sluice}

die() { echo "lane.sh: $*" >&2; exit 2; }
[ $# = 0 ] || die "no arguments; settings come from the environment (see the header)"
. bench/lib.sh # bench_ready, stop_pid, free_port, wait_port, start_dnsmasq, start_sink, start_bench_sluice, bench_postfix, postfix_ticks, proc_tree, cpu_ticks, sink_count, kv, loadgen_run, sink_wait, postfix_sent_since
[ -n "${SLUICE:-}" ] || make -s sluice >/dev/null || die "make failed"
bench_ready "$sluice_bin" /usr/sbin/smtp-sink /usr/sbin/dnsmasq /usr/sbin/postfix
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)

dir=$(mktemp -d /tmp/sluice-lane.XXXXXX) || exit 2
chmod 755 "$dir"
pids=() sl_pid='' pf_port=''
pf() { # start|stop: XCLIENT for sluice's 127.0.0.1, and for the load
	# generator's 127.0.0.2 in phase 5 (clients that name themselves)
	bench_postfix "$1" "$dir/pf" "${pf_port:-0}" "127.0.0.1, 127.0.0.2"
}
failed=0
cleanup() {
	trap - EXIT INT TERM
	stop_pid "$sl_pid"
	[ -n "$pf_port" ] && pf stop
	for p in "${pids[@]}"; do stop_pid "$p"; done
	if [ -n "${KEEP:-}" ] || [ "$failed" != 0 ]; then echo "work directory kept: $dir" >&2
	else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

hz=$(getconf CLK_TCK)
runs=$dir/runs # one key=value line per run
# /proc/stat, all CPUs: busy ticks (user nice system irq softirq steal),
# softirq ticks (loopback TCP is mostly processed there, in no task's
# account or in whichever task ran), all ticks
busy_ticks() { awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $8, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }

dns_port=$(free_port) sink_port=$(free_port)
start_dnsmasq "$dns_port"
pids+=("$dns_pid")
start_sink "$sink_port"

start_sluice() { # backend_port xclient(yes|no) name: sets sl_pid, sl_port
	sl_port=$(free_port)
	# shellcheck disable=SC2086 # SLUICE_OPTS: several -o settings
	start_bench_sluice "$sluice_bin" "$sl_port" "$1" "$2" "$W" "$POOL" "$dir/sluice.$3" ${SLUICE_OPTS:-}
	sleep 0.5 # every worker listening
}
stop_sluice() {
	stop_pid "$sl_pid"; sl_pid=''
	if grep -E 'error: |AddressSanitizer|runtime error|killed by signal|exited with status' \
		"$dir/sluice.$1.log" | head -5 | grep . >&2; then
		echo "sluice ($1) logged errors (above)" >&2
		failed=1
	fi
}

# lg PHASE MODE REP PORT CONNS MSGS [THINK_MS]: one throughput run of the load generator;
# appends one key=value line to $runs and prints it.
lg() {
	local phase=$1 mode=$2 rep=$3 port=$4 conns=$5 msgs=$6 out b0 b1 s0 s1 k0 k1 m0 m1 q0 q1
	local b0 i0 t0 b1 i1 t1
	read -r b0 i0 t0 < <(busy_ticks)
	s0=$( [ "$mode" = sluice ] && cpu_ticks "$sl_pid" || echo 0)
	if [ "$phase" = postfix ]; then k0=$(postfix_ticks); else k0=$(cpu_ticks "$sink_pid"); fi
	m0=$(sink_count "$dir/sink.out" mesg) q0=$(sink_count "$dir/sink.out" sess)
	# the shell's cutime after the wait: the load generator and its children
	local src=(--src $SRC --srcs "$SRCS")
	[ "$mode" = xclient ] && src=(--src 127.0.0.2 --srcs 1 --xclient "$SRCS")
	out=$(loadgen_run --port "$port" --mode throughput --conns "$conns" \
		--procs 2 --messages "$msgs" --size "$SIZE" --per-conn 1 "${src[@]}" \
		--think-ms "${7:-0}" --timeout 240)
	read -r b1 i1 t1 < <(busy_ticks)
	s1=$( [ "$mode" = sluice ] && cpu_ticks "$sl_pid" || echo 0)
	if [ "$phase" = postfix ]; then k1=$(postfix_ticks); else k1=$(cpu_ticks "$sink_pid"); fi
	local ok n lgt
	n=$(kv "$out" msgs_ok) lgt=$(kv "$out" lg_ticks)
	[ "${n:-0}" = "$msgs" ] && [ "$(kv "$out" msgs_failed)" = 0 ] && ok=yes || ok=no
	if [ "$phase" != postfix ]; then
		m1=$(sink_wait "$m0" "$msgs")
		q1=$(sink_count "$dir/sink.out" sess)
		[ $((m1 - m0)) = "$msgs" ] || ok=no
		recv="sink_received=$((m1 - m0)) backend_sessions=$((q1 - q0))"
	else
		local sent
		sent=$(postfix_sent_since "$dir/pf.sent" "$msgs")
		[ "$sent" = "$msgs" ] || ok=no
		recv="postfix_sent=$sent"
	fi
	[ "$ok" = yes ] || failed=1
	local line
	line=$(awk -v p="$phase" -v m="$mode" -v r="$rep" -v c="$conns" -v n="${n:-0}" \
		-v msgps="$(kv "$out" msgps)" -v p50="$(kv "$out" lat_p50_ms)" \
		-v p99="$(kv "$out" lat_p99_ms)" -v secs="$(kv "$out" seconds)" \
		-v sl="$((s1 - s0))" -v sk="$((k1 - k0))" -v lgt="${lgt:-0}" -v hz="$hz" \
		-v busy="$((b1 - b0))" -v si="$((i1 - i0))" -v all="$((t1 - t0))" \
		-v ok="$ok" -v recv="$recv" 'BEGIN {
		us = n ? 1e6 / hz / n : 0
		all = all > 0 ? all : 1
		# busy, less the three processes of the bench and softirq: everyone else
		others = busy - si - sl - sk - lgt; others = others < 0 ? 0 : others
		printf "phase=%s mode=%s rep=%d sessions=%d msgs_ok=%d seconds=%s msgps=%s p50_ms=%s p99_ms=%s", p, m, r, c, n, secs, msgps, p50, p99
		printf " sluice_us_per_msg=%.0f sink_us_per_msg=%.0f loadgen_us_per_msg=%.0f", sl * us, sk * us, lgt * us
		printf " machine_busy=%.2f softirq=%.2f others=%.2f %s ok=%s\n", busy / all, si / all, others / all, recv, ok }')
	echo "$line" | tee -a "$runs"
	[ "$ok" = yes ] || echo "  loadgen said: $out" >&2
}

echo "# $cmdline: sluice $commit ($sluice_bin), workers=$W pool=$POOL reps=$REPS size=$SIZE load=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /)"

# --- 1-3: smtp-sink ---------------------------------------------------------
start_sluice "$sink_port" no sink
for rep in $(seq "$REPS"); do
	lg sink direct "$rep" "$sink_port" "$SESS" "$MSGS"
	lg sink sluice "$rep" "$sl_port" "$SESS" "$MSGS"
done
for rep in $(seq "$REPS"); do
	lg latency direct "$rep" "$sink_port" "$LAT_SESS" "$LAT_MSGS" "$LAT_THINK"
	lg latency sluice "$rep" "$sl_port" "$LAT_SESS" "$LAT_MSGS" "$LAT_THINK"
done
slow_max=– slow_ok=–
if [ "$SLOW" != 0 ]; then
	slow_max=0
	timeout 300 "$loadgen" --port "$sl_port" --mode slow --conns "$SLOW" --procs 2 \
		--src $SRC --srcs "$SRCS" --rate 1000 --hold 10 --drip-ms 1000 --timeout 200 \
		>"$dir/slow.out" &
	lgp=$!
	while kill -0 $lgp 2>/dev/null; do
		b=$(ss -Htn state established "( dport = :$sink_port )" | wc -l)
		[ "$b" -gt "$slow_max" ] && slow_max=$b
		sleep 0.5
	done
	wait $lgp
	slow_ok=$(kv "$(cat "$dir/slow.out")" msgs_ok)
	echo "phase=slow clients=$SLOW msgs_ok=$slow_ok max_backend_connections=$slow_max pool=$((W * POOL))" | tee -a "$runs"
	[ "$slow_ok" = "$SLOW" ] && [ "$slow_max" -le $((W * POOL)) ] || { failed=1; cat "$dir/slow.out" >&2; }
fi
stop_sluice sink

# --- 4: real Postfix --------------------------------------------------------
pf_port=$(pf start) || { pf_port=''; die "postfix did not start"; }
grep -c 'status=sent' "$dir/pf/maillog" >"$dir/pf.sent"
pf_offset=$(stat -c %s "$dir/pf/maillog") # after the harness's readiness probe
start_sluice "$pf_port" yes postfix
for rep in $(seq "$REPS"); do
	lg postfix direct "$rep" "$pf_port" "$PF_SESS" "$PF_MSGS"
	lg postfix sluice "$rep" "$sl_port" "$PF_SESS" "$PF_MSGS"
done
stop_sluice postfix # its pool connections end: every disconnect line is in
sleep 1
counters() { # label peer-option messages
	/usr/bin/python3 tests/scenario/postfix_counters.py "$dir/pf/maillog" \
		"$2" 127.0.0.1 --offset "$pf_offset" --messages "$3" --label "$1" --most 5
}
delivered() { # mode: messages of the Postfix runs
	sed -n "s/^phase=postfix mode=$1 .* msgs_ok=\([0-9]*\) .*/\1/p" "$runs" | paste -sd+ | bc
}
n_sl=$(delivered sluice) n_di=$(delivered direct)
counters sluice --peer "$n_sl" | tee "$dir/counters.sluice"
counters direct --not-peer "$n_di" | tee "$dir/counters.direct"
head -1 "$dir/counters.sluice" >>"$runs"
head -1 "$dir/counters.direct" >>"$runs"
# The ceiling for any proxy that passes identities with XCLIENT: the load
# generator itself names each connection's client with XCLIENT (127.0.0.2
# allowed to), beside direct runs, after the counting above.
for rep in $(seq "$REPS"); do
	lg postfix direct "$rep" "$pf_port" "$PF_SESS" "$PF_MSGS"
	lg postfix xclient "$rep" "$pf_port" "$PF_SESS" "$PF_MSGS"
done

# --- the table ----------------------------------------------------------------
/usr/bin/python3 - "$runs" "$dir/counters.sluice" <<EOF
import statistics, sys
runs = []
for line in open(sys.argv[1]):
    runs.append(dict(w.split("=", 1) for w in line.split() if "=" in w))
def col(phase, mode, key):
    return [float(r[key]) for r in runs
            if r.get("phase") == phase and r.get("mode") == mode and key in r]
def med(v): return statistics.median(v) if v else float("nan")
def rng(v, f="%.0f"): return (f + " (" + f + "–" + f + ")") % (med(v), min(v), max(v)) if v else "–"
def ratios(phase):
    d, s = col(phase, "direct", "msgps"), col(phase, "sluice", "msgps")
    return [b / a for a, b in zip(d, s) if a]
def diffs(key):
    d, s = col("latency", "direct", key), col("latency", "sluice", key)
    return [b - a for a, b in zip(d, s)]
def met(ok): return "yes" if ok else "**no**"
cnt = {r.get("label"): r for r in runs if "label" in r}
rs, rp = ratios("sink"), ratios("postfix")
d50, d99 = diffs("p50_ms"), diffs("p99_ms")
cpu = col("sink", "sluice", "sluice_us_per_msg")
print()
print("Run: \`$cmdline\` (REPS=$REPS), $(date -u +%Y-%m-%d), $(nproc) vCPUs "
      "($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), kernel $(uname -r), "
      "sluice $commit, workers $W, pool $POOL per worker, $SIZE B messages, one per connection, "
      "clients on $SRCS addresses; medians of $REPS runs (min–max).")
print()
print("| figure | direct | sluice | sluice vs direct | target | met |")
print("|---|---:|---:|---:|---|:---|")
print("| smtp-sink, $SESS sessions: msg/s | %s | %s | ratio %s | ≥ 0.8 | %s |" % (
    rng(col("sink", "direct", "msgps")), rng(col("sink", "sluice", "msgps")),
    rng(rs, "%.2f"), met(rs and med(rs) >= 0.8)))
print("| CPU µs per message: sluice (supervisor + workers) | – | %s | – | reported (issue 8: ~120) | – |" % rng(cpu))
print("| CPU µs per message: smtp-sink / loadgen (bench overhead) | %s / %s | %s / %s | – | – | – |" % (
    rng(col("sink", "direct", "sink_us_per_msg")), rng(col("sink", "direct", "loadgen_us_per_msg")),
    rng(col("sink", "sluice", "sink_us_per_msg")), rng(col("sink", "sluice", "loadgen_us_per_msg"))))
tot = {m: [a + b + c for a, b, c in zip(col("sink", m, "sluice_us_per_msg"),
                                        col("sink", m, "sink_us_per_msg"),
                                        col("sink", m, "loadgen_us_per_msg"))]
       for m in ("direct", "sluice")}
bound = [a / b for a, b in zip(tot["direct"], tot["sluice"]) if b]
print("| CPU µs per message, all three (the ratio if CPU-bound) | %s | %s | %s | – | – |" % (
    rng(tot["direct"]), rng(tot["sluice"]), rng(bound, "%.2f")))
def share(phase, mode, key): return "%.0f%%" % (100 * med(col(phase, mode, key)))
for phase, what in (("sink", "the runs"), ("latency", "the latency runs")):
    print("| machine busy during %s (all CPUs, medians): all / softirq / other processes | %s / %s / %s | %s / %s / %s | – | %s | – |" % (
        what, share(phase, "direct", "machine_busy"), share(phase, "direct", "softirq"),
        share(phase, "direct", "others"), share(phase, "sluice", "machine_busy"),
        share(phase, "sluice", "softirq"), share(phase, "sluice", "others"),
        "others near 0%" if phase == "sink" else "not saturated"))
print("| smtp-sink, $LAT_SESS sessions, $LAT_THINK ms between connections: MAIL → 250 after the dot, p50 ms | %s | %s | %s | ≤ direct + 1 ms | %s |" % (
    rng(col("latency", "direct", "p50_ms"), "%.2f"), rng(col("latency", "sluice", "p50_ms"), "%.2f"),
    rng(d50, "%+.2f"), met(d50 and med(d50) <= 1)))
print("| the same, p99 ms | %s | %s | %s | ≤ direct + 5 ms | %s |" % (
    rng(col("latency", "direct", "p99_ms"), "%.2f"), rng(col("latency", "sluice", "p99_ms"), "%.2f"),
    rng(d99, "%+.2f"), met(d99 and med(d99) <= 5)))
print("| real Postfix, $PF_SESS sessions: msg/s | %s | %s | ratio %s | ≥ 0.9 | %s |" % (
    rng(col("postfix", "direct", "msgps")[:$REPS]), rng(col("postfix", "sluice", "msgps")),
    rng(rp, "%.2f"), met(rp and med(rp) >= 0.9)))
print("| CPU µs per message with Postfix: sluice | – | %s | – | – | – |" % rng(col("postfix", "sluice", "sluice_us_per_msg")))
# direct runs pair with the sluice runs first, then with the xclient runs
dx = col("postfix", "direct", "msgps")[$REPS:]
xc = col("postfix", "xclient", "msgps")
rx = [b / a for a, b in zip(dx, xc) if a]
print("| real Postfix, the clients sending XCLIENT themselves (no proxy; the ceiling for any XCLIENT proxy): msg/s | %s | %s | ratio %s | – | – |" % (
    rng(dx), rng(xc), rng(rx, "%.2f")))
print("| CPU µs per message: Postfix, direct / clients with XCLIENT | %s | %s | – | – | – |" % (
    rng(col("postfix", "direct", "sink_us_per_msg")[$REPS:]), rng(col("postfix", "xclient", "sink_us_per_msg"))))
print("| CPU µs per message: Postfix (master, smtpd, cleanup, qmgr, ...) | %s | %s | – | – | – |" % (
    rng(col("postfix", "direct", "sink_us_per_msg")[:$REPS]), rng(col("postfix", "sluice", "sink_us_per_msg"))))
s, d = cnt.get("sluice", {}), cnt.get("direct", {})
def f(r, k): return r.get(k, "–")
print("| Postfix connections with MAIL per message | %s | %s | – | 1 | %s |" % (
    f(d, "conns_per_msg"), f(s, "conns_per_msg"), met(s and float(s["conns_per_msg"]) == 1)))
print("| Postfix MAIL commands per message (RSET in all) | %s (%s) | %s (%s) | – | 1 (0) | %s |" % (
    f(d, "mail_per_msg"), f(d, "rset"), f(s, "mail_per_msg"), f(s, "rset"),
    met(s and float(s["mail_per_msg"]) == 1)))
print("| share of Postfix connections with mail that carry mail=1, data=1 or bdat=1, no rset | %s | %s | – | 100%% | %s |" % (
    f(d, "one_message_share"), f(s, "one_message_share"), met(s and float(s["one_message_share"]) == 1)))
print("| backend connections, $SLOW slow clients (pool $((W * POOL))) | – | $slow_max | – | ≤ $((W * POOL)) | %s |" % (
    met("$slow_max" != "–" and int("$slow_max") <= $((W * POOL)))))
print()
print("Postfix's commonest counter sets on sluice's connections (count, counters):")
print()
for line in open(sys.argv[2]).read().splitlines()[1:]:
    print("    " + line.strip())
EOF
echo "bench took ${SECONDS} s"
[ "$failed" = 0 ] && echo "all messages delivered, no errors" || echo "FAILED: see above"
exit "$failed"
