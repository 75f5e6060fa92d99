#!/bin/bash
# Throughput: messages per second from Postfix's smtp-source to smtp-sink,
# straight and through sluice, side by side in one run (the ratio is the
# figure; absolute numbers depend on the machine). See BENCHMARKS.md.
#
#   bench/throughput.sh [messages] [sessions] [size]
#
# Environment:
#   POOL=8        backend_pool_size (per worker)
#   WORKERS=1     sluice worker processes
#   REPS=1        repetitions; each one runs direct, then proxied
#   SLUICE=./sluice   the binary to measure
#   RUN_TIMEOUT=110   seconds allowed per smtp-source run
#   KEEP=1        keep the work directory (logs) after the run
#   SLUICE_OPTS="-o name=value ..."  further sluice settings
#   NODELAY=1     diagnostic: run sluice with bench/nodelay-preload.c, which
#                 sets TCP_NODELAY on its backend connections (BENCHMARKS.md)
#
# One line per repetition on stdout, "key=value" (for bench/matrix.sh), plus
# a readable summary. Exit status 0 only if every message of every run was
# accepted by smtp-source's peer AND counted by smtp-sink (and, proxied, logged
# "status=sent" by sluice), and sluice logged no error and did not die.
#
# Runs as root on Debian 12 (smtp-sink and dnsmasq drop to nobody). Needs a
# built sluice (make) and postfix + dnsmasq (scripts/install-deps.sh).
#
# Set-up, all on 127.0.0.1, on free ports chosen at start:
#   smtp-sink -c       the mail server; offers XCLIENT NAME HELO but not ADDR,
#                      so sluice runs with backend_xclient=no (with =yes it
#                      refuses to relay without ADDR, by design)
#   dnsmasq            answers sluice's PTR look-up for 127.0.0.1 at once
#                      (127.0.0.1 <-> client.bench.test), as a local resolver
#                      would; without it every session waits dns_timeout
#   sluice             listen -> smtp-sink, backend_pool_size=$POOL;
#                      127.0.0.1 (smtp-source's address) in cidr_allow_file:
#                      never held at the greeting nor shaped. Without it the
#                      first wave of sessions (until one passed) waited
#                      greet_wait, 6 s, in a run of 1-2 s, and 127.0.0.1
#                      scored PTRGENERIC (client.bench.test) already: two
#                      more signal points and every session would trickle
#                      at shape_rate, a "hung" run. The bench measures the
#                      proxy path, not classification.
set -u
cd "$(dirname "$0")/.." || exit 2

msgs=${1:-5000}
sessions=${2:-20}
size=${3:-4096}
pool=${POOL:-8}
workers=${WORKERS:-1}
reps=${REPS:-1}
sluice_bin=${SLUICE:-./sluice}
run_timeout=${RUN_TIMEOUT:-110}

die() { echo "throughput.sh: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "run as root (smtp-sink -u nobody, dnsmasq user=nobody)"
for f in /usr/sbin/smtp-sink /usr/sbin/smtp-source /usr/sbin/dnsmasq; do
	[ -x "$f" ] || die "$f missing: run scripts/install-deps.sh"
done
[ -x "$sluice_bin" ] || die "$sluice_bin missing: run make"

dir=$(mktemp -d /tmp/sluice-bench.XXXXXX) || exit 2
chmod 755 "$dir"
sink_pid='' sluice_pid='' dns_pid=''

. bench/lib.sh # stop_pid, free_port, port_open, wait_port, sink_count
cleanup() {
	trap - EXIT INT TERM
	stop_pid "$sluice_pid"
	stop_pid "$sink_pid"
	stop_pid "$dns_pid"
	if [ -n "${KEEP:-}" ]; then echo "work directory kept: $dir" >&2
	else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

sink_port=$(free_port)
sluice_port=$(free_port)
dns_port=$(free_port)

# --- DNS: PTR and A for 127.0.0.1, nothing else --------------------------
echo "127.0.0.1 client.bench.test" >"$dir/hosts"
echo "127.0.0.1/32" >"$dir/allow"
chmod 644 "$dir/hosts" "$dir/allow"
start_dnsmasq "$dns_port" "$dir/hosts"

# --- the mail server ------------------------------------------------------
# -c: counters "sess=N quit=N mesg=N", CR-separated, updated at each "." --
# the count of messages the sink really received.
/usr/sbin/smtp-sink -c -u nobody -m 1024 127.0.0.1:"$sink_port" 1024 \
	</dev/null >"$dir/sink.out" 2>"$dir/sink.err" &
sink_pid=$!
wait_port "$sink_port" smtp-sink "$sink_pid"
kill -0 "$dns_pid" 2>/dev/null || die "dnsmasq exited at start: $(cat "$dir/dnsmasq.log")"

# --- sluice ---------------------------------------------------------------
mkdir -p "$dir/spool" "$dir/state"
preload=
if [ -n "${NODELAY:-}" ]; then
	cc -shared -fPIC -O2 -o "$dir/nodelay.so" bench/nodelay-preload.c -ldl ||
		die "cannot build bench/nodelay-preload.c"
	preload=$dir/nodelay.so
fi
LD_PRELOAD=$preload "$sluice_bin" -f -c /dev/null \
	-o listen=127.0.0.1:"$sluice_port" -o backend=127.0.0.1:"$sink_port" \
	-o backend_xclient=no -o backend_pool_size="$pool" -o workers="$workers" \
	-o myhostname=sluice.bench.test -o spool_dir="$dir/spool" \
	-o state_dir="$dir/state" -o dns_servers=127.0.0.1:"$dns_port" \
	-o dns_timeout=2s -o shutdown_timeout=5s -o user= \
	-o cidr_allow_file="$dir/allow" ${SLUICE_OPTS:-} \
	</dev/null 2>"$dir/sluice.log" &
sluice_pid=$!
wait_port "$sluice_port" sluice "$sluice_pid"

sink_mesg() { sink_count "$dir/sink.out" mesg; }
sluice_cpu() { # clock ticks used so far by the sluice worker processes
	local t=0 c
	for c in $(pgrep -P "$sluice_pid"); do
		t=$((t + $(awk '{print $14 + $15}' "/proc/$c/stat" 2>/dev/null || echo 0)))
	done
	echo "$t"
}
hz=$(getconf CLK_TCK)
failed=0

# run MODE PORT REP: one smtp-source run; prints one key=value line
run() {
	local mode=$1 port=$2 rep=$3 before after start end rc sent=- cpu0 cpu1
	local out="$dir/source.$mode.$rep"
	before=$(sink_mesg)
	local sent_before
	sent_before=$(grep -c 'status=sent' "$dir/sluice.log")
	cpu0=$(sluice_cpu)
	start=$(date +%s.%N)
	timeout "$run_timeout" /usr/sbin/smtp-source -s "$sessions" -m "$msgs" \
		-l "$size" -M bench.test -f bench@client.bench.test \
		-t sink@example.com 127.0.0.1:"$port" >"$out" 2>&1
	rc=$?
	end=$(date +%s.%N)
	cpu1=$(sluice_cpu)
	# smtp-sink updates its counter right after answering "."; allow it 5 s.
	for _ in $(seq 50); do
		after=$(sink_mesg)
		[ $((after - before)) -ge "$msgs" ] && break
		sleep 0.1
	done
	local got=$((after - before))
	if [ "$mode" = proxied ]; then
		sent=$(( $(grep -c 'status=sent' "$dir/sluice.log") - sent_before ))
	fi
	local ok=yes
	[ "$rc" = 0 ] || ok=no
	[ -s "$out" ] && ok=no  # smtp-source prints only on trouble
	[ "$got" = "$msgs" ] || ok=no
	[ "$sent" = - ] || [ "$sent" = "$msgs" ] || ok=no
	echo "$start $end $msgs $((cpu1 - cpu0)) $hz" | awk -v m="$mode" -v r="$rep" \
		-v rc="$rc" -v got="$got" -v sent="$sent" -v ok="$ok" \
		-v s="$sessions" -v l="$size" -v p="$pool" -v w="$workers" '{
		t = $2 - $1; printf "mode=%s rep=%d messages=%d sessions=%d size=%d pool=%d workers=%d seconds=%.3f msgps=%.0f", m, r, $3, s, l, p, w, t, $3 / t;
		if (m == "proxied") printf " sluice_cpu_s=%.2f sluice_cpu_us_per_msg=%.0f", $4 / $5, $4 / $5 / $3 * 1e6;
		printf " source_rc=%s sink_received=%s sluice_sent=%s ok=%s\n", rc, got, sent, ok }'
	if [ -s "$out" ]; then
		echo "smtp-source ($mode, rep $rep) said:" >&2
		head -5 "$out" >&2
	fi
}

echo "# messages=$msgs sessions=$sessions size=$size backend_pool_size=$pool workers=$workers reps=$reps sluice=$sluice_bin${preload:+ nodelay=yes} load=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /)"
results=()
for rep in $(seq "$reps"); do
	for mode in direct proxied; do
		[ $mode = direct ] && port=$sink_port || port=$sluice_port
		line=$(run $mode "$port" "$rep")
		echo "$line"
		results+=("$line")
		case "$line" in *" ok=yes"*) ;; *) failed=1 ;; esac
	done
	kill -0 "$sluice_pid" 2>/dev/null || { echo "sluice died" >&2; failed=1; break; }
done

# Health of sluice over the whole run.
if grep -qE 'error: |AddressSanitizer|runtime error|killed by signal|exited with status' "$dir/sluice.log"; then
	echo "sluice logged errors:" >&2
	grep -E 'error: |AddressSanitizer|runtime error|killed by signal|exited with status' "$dir/sluice.log" | head -20 >&2
	failed=1
fi
warnings=$(grep -c 'warning: ' "$dir/sluice.log")
if [ "$warnings" != 0 ]; then
	echo "sluice logged $warnings warnings, first ones:" >&2
	grep 'warning: ' "$dir/sluice.log" | head -5 >&2
fi
if [ "$failed" != 0 ] && [ -z "${KEEP:-}" ]; then
	KEEP=1  # keep the logs of a failed run
fi

printf '%s\n' "${results[@]}" | awk '
	function median(a, n,   i, j, t) {
		for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
			if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
	{ for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
	  if (f["mode"] == "direct") d[++nd] = f["msgps"]; else { p[++np] = f["msgps"]; r[np] = f["msgps"] / d[nd] } }
	END { if (!nd || !np) exit
	  printf "direct   smtp-source -> smtp-sink:           median %6.0f msg/s\n", median(d, nd)
	  printf "proxied  smtp-source -> sluice -> smtp-sink: median %6.0f msg/s\n", median(p, np)
	  printf "ratio proxied/direct (median of per-rep ratios): %.2f\n", median(r, np) }'
[ "$failed" = 0 ] && echo "all messages delivered, no errors" || echo "FAILED: see above"
exit "$failed"
