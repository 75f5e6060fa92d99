#!/bin/bash
# Peers: sluice beside nginx's mail proxy, Haraka and the direct path, all
# in front of the same smtp-sink, driven by the same load generator
# (bench/loadgen.c), in one run; prints one Markdown table (and, with
# --write, puts it into BENCHMARKS.md between the "peers table" markers).
#
#   bench/peers.sh [--quick] [--write] [--only direct,sluice,nginx,haraka]
#   bench/peers.sh --scale N      sluice only: N shaped (5 B/s both ways) and
#                                 N idle sessions at once; memory per session,
#                                 CPU, wake-ups and system calls per shaped
#                                 session per second, the rates the shaped
#                                 clients see
#                                 (IDLE=M: M idle sessions instead of N;
#                                 IDLE=0: shaped sessions alone, so that
#                                 the memory figure is theirs; PROBES=K:
#                                 K probe clients [100], shaped sessions
#                                 in a load process of their own at
#                                 PROBE_NICE [-10], whose rates are
#                                 printed apart;
#                                 NETDEV_BACKLOG=P: net.core.netdev_max_backlog
#                                 during the run [100000; 0: leave it])
#   bench/peers.sh --overload N   sluice only, two workers: N clients at once
#                                 against session_limit (OVL_LIMIT [1000] a
#                                 worker), then against the file limit
#                                 (OVL_FILES [1024] descriptors a worker):
#                                 held, refused with 421 and how fast, CPU,
#                                 limit log lines, workers alive
#   bench/peers.sh --tls N        sluice only, one worker: N idle sessions
#                                 after STARTTLS; memory per TLS session and
#                                 STARTTLS handshakes per second
#
# --quick: 2,000 messages, 5,000 held sessions instead of 10,000 and no
#          100,000 row, 500 slow clients instead of 2,000 (a few minutes).
#          The table says which ran.
# Installs what it needs (as root, Debian 12): apt nginx-light +
# libnginx-mod-mail, postfix (smtp-sink) and dnsmasq; npm Haraka into
# bench/.peers/haraka (not in git).
#
# Set-up, all on loopback (127.0.0.0/8):
#   smtp-sink -c     the mail server behind every peer (-m: 25,000 sessions)
#   dnsmasq          local resolver for sluice (PTR of 127.x: NXDOMAIN at once)
#   sluice           backend_xclient = no (smtp-sink offers no XCLIENT ADDR),
#                    workers = W, pool 8 per worker; throughput and slow
#                    clients come from an allow-listed range (no greet_wait),
#                    shaped clients from a deny-listed one, idle clients from
#                    a range that is neither (greet_wait, DNS, verdict; the
#                    PTR and reputation weights are 0, so that the missing
#                    PTR of 127.3.x does not shape them by reputation).
#   nginx            mail proxy, smtp_auth none, xclient on, auth_http served
#                    by the same nginx (a location returning Auth-Status OK)
#   Haraka           rcpt_to.in_host_list + queue/smtp_forward to the sink,
#                    cluster of W nodes
# Memory per held session: growth of the server's memory (sum of Pss over
# its processes, /proc/PID/smaps_rollup: pages shared by a master and its
# forked workers count once)
# while N idle sessions (greeted, EHLO answered) are held, divided by the
# sessions held; each server is restarted before each hold so that freed
# memory from an earlier phase does not hide the growth. HEAPWALK=1 adds,
# for one sluice worker at the moment of the measurement, where its heap
# goes (bench/heapwalk.py: resident pages, bytes in use on them, the
# chunk sizes holding most).
set -u
cd "$(dirname "$0")/.." || exit 2
root=$PWD

args="$*"
quick=0 write=0 only=direct,sluice,nginx,haraka scale=0 tls=0 overload=0
while [ $# -gt 0 ]; do
	case $1 in
	--quick) quick=1 ;;
	--scale) scale=$2; shift ;;
	--tls) tls=$2; shift ;;
	--overload) overload=$2; shift ;;
	--write) write=1 ;;
	--only) only=$2; shift ;;
	*) echo "usage: bench/peers.sh [--quick] [--write] [--only list]" >&2; exit 2 ;;
	esac
	shift
done
W=${WORKERS:-8}
if [ $quick = 1 ]; then
	MSGS=${MSGS:-2000} HOLDS=${HOLDS:-5000} SLOW=${SLOW:-500}
else
	MSGS=${MSGS:-5000} HOLDS=${HOLDS:-"10000 100000"} SLOW=${SLOW:-2000}
fi
SESS=${SESSIONS:-20} SIZE=${SIZE:-4096} PROCS=${PROCS:-8}
loadgen=$root/build/loadgen
sluice_bin=${SLUICE:-$root/sluice}

die() { echo "peers.sh: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "run as root"

# --- install -----------------------------------------------------------
need=
[ -x /usr/sbin/smtp-sink ] || need="$need postfix"
[ -x /usr/sbin/dnsmasq ] || need="$need dnsmasq"
[ -x /usr/sbin/nginx ] || need="$need nginx-light"
[ -e /usr/lib/nginx/modules/ngx_mail_module.so ] || need="$need libnginx-mod-mail"
command -v npm >/dev/null || need="$need npm"
if [ -n "$need" ]; then
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need >/dev/null || die "apt-get install$need failed"
fi
haraka_dir=$root/bench/.peers/haraka
# Haraka only when it runs: --scale, --tls and --overload run sluice alone.
if [ "$scale" = 0 ] && [ "$tls" = 0 ] && [ "$overload" = 0 ] && [[ ,$only, == *,haraka,* ]] &&
	[ ! -x "$haraka_dir/node_modules/.bin/haraka" ]; then
	mkdir -p "$haraka_dir"
	(cd "$haraka_dir" && npm install --no-audit --no-fund --loglevel=error Haraka@3) >/dev/null ||
		die "npm install Haraka failed"
fi
make -s bench-tools sluice >/dev/null || die "make failed"
commit=$(git rev-parse --short HEAD) # what was built

dir=$(mktemp -d /tmp/sluice-peers.XXXXXX) || exit 2
chmod 755 "$dir"
pids=()
. bench/lib.sh # stop_pid, free_port, port_open, wait_port, proc_tree, cpu_ticks, kv
cleanup() {
	trap - EXIT INT TERM
	[ -n "$srv_pid" ] && stop_server
	for p in "${pids[@]}"; do stop_pid "$p"; done
	[ -n "${KEEP:-}" ] && echo "work directory kept: $dir" >&2 || rm -rf "$dir"
	[ -n "$backlog_was" ] && sysctl -qw net.core.netdev_max_backlog="$backlog_was"
}
backlog_was=
trap cleanup EXIT
trap 'exit 130' INT TERM

sink_port=$(free_port) dns_port=$(free_port)
/usr/sbin/smtp-sink -c -u nobody -m 25000 127.0.0.1:"$sink_port" 4096 \
	</dev/null >"$dir/sink.out" 2>"$dir/sink.err" &
sink_pid=$!; pids+=("$sink_pid")
wait_port "$sink_port" smtp-sink "$sink_pid"
start_dnsmasq "$dns_port"
pids+=("$dns_pid")

# Client ranges: allow-listed (throughput, slow), deny-listed (shaped),
# neither (idle).
ALLOW_SRC=127.1.0.1 DENY_SRC=127.2.0.1 IDLE_SRC=127.3.0.1
echo "127.1.0.0/16" >"$dir/allow"
echo "127.2.0.0/16" >"$dir/deny"

# --- servers: start_NAME sets srv_pid and srv_port ------------------------
srv_pid='' srv_port=''
start_sluice() {
	srv_port=$(free_port)
	rm -rf "$dir/spool" "$dir/state"; mkdir -p "$dir/spool" "$dir/state"
	${SLUICE_WRAP:-} "$sluice_bin" -f -c /dev/null \
		-o listen=127.0.0.1:"$srv_port" -o backend=127.0.0.1:"$sink_port" \
		-o backend_xclient=no -o backend_pool_size=8 -o workers="$W" \
		-o myhostname=sluice.bench.test -o spool_dir="$dir/spool" \
		-o state_dir="$dir/state" -o dns_servers=127.0.0.1:"$dns_port" \
		-o dns_timeout=2s -o shutdown_timeout=5s -o user= \
		-o session_limit=19000 -o client_connection_limit=100000 \
		-o cidr_allow_file="$dir/allow" -o cidr_deny_file="$dir/deny" \
		-o shape_time=1d -o smtpd_timeout=600s \
		-o weight_ptr_missing=0 -o weight_reputation=0 ${SLUICE_OPTS:-} \
		</dev/null 2>>"$dir/sluice.log" &
	srv_pid=$!
	wait_port "$srv_port" sluice "$srv_pid"
	sleep 0.5 # every worker listening
}
start_nginx() {
	srv_port=$(free_port)
	local auth_port; auth_port=$(free_port)
	mkdir -p "$dir/nginx"
	cat >"$dir/nginx/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_mail_module.so;
worker_processes $W;
worker_rlimit_nofile 20000;
daemon off;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/error.log warn;
events { worker_connections 19500; }
http {
    access_log off;
    client_body_temp_path $dir/nginx; proxy_temp_path $dir/nginx;
    fastcgi_temp_path $dir/nginx; uwsgi_temp_path $dir/nginx; scgi_temp_path $dir/nginx;
    server {
        listen 127.0.0.1:$auth_port;
        location /auth {
            add_header Auth-Status OK;
            add_header Auth-Server 127.0.0.1;
            add_header Auth-Port $sink_port;
            return 204;
        }
    }
}
mail {
    server_name nginx.bench.test;
    auth_http 127.0.0.1:$auth_port/auth;
    xclient on;
    smtp_auth none;
    smtp_capabilities PIPELINING 8BITMIME;
    server { listen 127.0.0.1:$srv_port; protocol smtp; }
}
EOF
	/usr/sbin/nginx -c "$dir/nginx/nginx.conf" -p "$dir/nginx" </dev/null \
		>>"$dir/nginx/out.log" 2>&1 &
	srv_pid=$!
	wait_port "$srv_port" nginx "$srv_pid"
	sleep 0.5
}
start_haraka() {
	srv_port=$(free_port)
	local h=$dir/haraka
	rm -rf "$h"; mkdir -p "$h"
	cp -r "$haraka_dir/node_modules/Haraka/config" "$h/config" # the defaults
	cat >"$h/config/smtp.ini" <<EOF
listen=127.0.0.1:$srv_port
nodes=$W
inactivity_timeout=600
EOF
	printf 'rcpt_to.in_host_list\nqueue/smtp_forward\n' >"$h/config/plugins"
	echo example.com >"$h/config/host_list"
	printf 'host=127.0.0.1\nport=%s\nenable_tls=false\n' "$sink_port" >"$h/config/smtp_forward.ini"
	echo haraka.bench.test >"$h/config/me"
	printf '[main]\nlevel=warn\n' >"$h/config/log.ini"
	(ulimit -n 20000; exec node "$haraka_dir/node_modules/Haraka/bin/haraka" -c "$h") \
		</dev/null >>"$h/out.log" 2>&1 &
	srv_pid=$!
	wait_port "$srv_port" haraka "$srv_pid"
	sleep 2 # every node listening
}
start_direct() { srv_pid=$sink_pid srv_port=$sink_port; }
stop_server() { [ "$srv_pid" = "$sink_pid" ] || stop_pid "$srv_pid"; srv_pid=''; }

private_kb() { # sum of the proportional set sizes of the server's processes, KiB
	local t=0 p v
	for p in $(proc_tree "$1"); do
		v=$(awk '/^Pss:/ {s += $2} END {print s + 0}' \
			"/proc/$p/smaps_rollup" 2>/dev/null)
		t=$((t + ${v:-0}))
	done
	echo "$t"
}
heapwalk() { # where one sluice worker's heap goes (HEAPWALK=1)
	[ -n "${HEAPWALK:-}" ] || return 0
	local w; w=$(pgrep -P "$srv_pid" | head -1)
	[ -n "$w" ] && /usr/bin/python3 "$root/bench/heapwalk.py" "$w" 512,144 512,144,32,48 >&2
}
backend_conns() { ss -Htn state established "( dport = :$sink_port )" | wc -l; }

declare -A R # R[name.key] = figure
run_throughput() { # name
	local out
	out=$(timeout 300 "$loadgen" --port "$srv_port" --mode throughput --conns "$SESS" \
		--procs 2 --messages "$MSGS" --size "$SIZE" --per-conn 1 --src $ALLOW_SRC \
		--srcs 50 --timeout 240)
	echo "$1 throughput: $out" >&2
	R[$1.msgps]=$(kv "$out" msgps) R[$1.p50]=$(kv "$out" lat_p50_ms)
	R[$1.p99]=$(kv "$out" lat_p99_ms) R[$1.ok]=$(kv "$out" msgs_ok)
}
run_hold() { # name n
	local n=$2 before after out ready=$dir/ready.$1.$2 held
	before=$(private_kb "$srv_pid")
	rm -f "$ready"
	local procs=$(( (n + 17999) / 18000 )); [ "$procs" -lt 2 ] && procs=2
	timeout 900 "$loadgen" --port "$srv_port" --mode idle --conns "$n" --procs "$procs" \
		--src $IDLE_SRC --srcs 250 --rate 4000 --hold 20 --timeout 300 \
		--ready-file "$ready" >"$dir/hold.$1.$n" &
	local lg=$!
	while [ ! -e "$ready" ] && kill -0 $lg 2>/dev/null; do sleep 1; done
	sleep 8 # the server settles
	after=$(private_kb "$srv_pid")
	[ "$1" = sluice ] && heapwalk
	wait $lg
	out=$(cat "$dir/hold.$1.$n")
	echo "$1 hold $n: $out (private KiB $before -> $after)" >&2
	held=$(kv "$out" held)
	R[$1.held$n]=$held
	if [ "${held:-0}" -gt 0 ]; then
		R[$1.mem$n]=$(awk -v a="$after" -v b="$before" -v h="$held" \
			'BEGIN {printf "%.2f", (a - b) * 1024 / h / 1024}')
	fi
}
run_slow() { # name
	local ready=$dir/ready.slow.$1 max=0 b
	rm -f "$ready"
	timeout 300 "$loadgen" --port "$srv_port" --mode slow --conns "$SLOW" --procs 2 \
		--src $ALLOW_SRC --srcs 50 --rate 1000 --hold 15 --drip-ms 1000 --timeout 200 \
		--ready-file "$ready" >"$dir/slow.$1" &
	local lg=$!
	while kill -0 $lg 2>/dev/null; do
		b=$(backend_conns); [ "$b" -gt "$max" ] && max=$b
		sleep 0.5
	done
	wait $lg
	echo "$1 slow: $(cat "$dir/slow.$1") max backend conns $max" >&2
	R[$1.slow]=$max R[$1.slowok]=$(kv "$(cat "$dir/slow.$1")" msgs_ok)
}
run_shaped() { # name (sluice only: the others do not shape)
	local out
	out=$(timeout 200 "$loadgen" --port "$srv_port" --mode shaped --conns 20 --procs 1 \
		--src $DENY_SRC --srcs 20 --hold 40 --line 60 --timeout 150)
	echo "$1 shaped: $out" >&2
	R[$1.shin]=$(kv "$out" in_p50) R[$1.shout]=$(kv "$out" out_p50)
	R[$1.shn]=$(kv "$out" in_n)
}

pids_of() { proc_tree "$1" | tail -n +2 | paste -sd,; } # the workers
sum_status() { # pid-list field: sum of a /proc/PID/status or io field
	local t=0 p v
	for p in ${1//,/ }; do
		v=$(awk -v f="$2:" '$1 == f {print $2}' "/proc/$p/status" "/proc/$p/io" 2>/dev/null | head -1)
		t=$((t + ${v:-0}))
	done
	echo "$t"
}
wait_ready() { # file pid
	while [ ! -e "$1" ] && kill -0 "$2" 2>/dev/null; do sleep 1; done
}

if [ "$scale" != 0 ]; then
	# N shaped + N idle at once, one sluice with W workers.
	n=$scale window=${WINDOW:-15}
	# Every worker's walk sends a tick's byte to thousands of sockets at
	# once; on loopback those segments queue in the per-CPU backlog, whose
	# default (1,000 packets) drops some of them at 50,000 shaped sessions
	# (1,465 in a 15 s window), and each drop comes again only after
	# TCP's 200 ms retransmission timer. A host that holds this many
	# connections raises it (NETDEV_BACKLOG=0 keeps the machine's value).
	want=${NETDEV_BACKLOG:-100000}
	if [ "$want" != 0 ]; then
		backlog_was=$(sysctl -n net.core.netdev_max_backlog)
		sysctl -qw net.core.netdev_max_backlog="$want" || die "sysctl net.core.netdev_max_backlog failed"
	fi
	start_sluice
	before=$(private_kb "$srv_pid")
	lp=$(( (n + 17999) / 18000 )); [ "$lp" -lt 2 ] && lp=2
	"$loadgen" --port "$srv_port" --mode shaped --conns "$n" --procs "$lp" --src $DENY_SRC \
		--srcs 250 --rate 1500 --line 60 --hold $((window + 40)) --timeout 900 \
		--ready-file "$dir/ready.shaped" >"$dir/scale.shaped" &
	lg1=$!
	ni=${IDLE:-$n} lg2=
	if [ "$ni" -gt 0 ]; then
		"$loadgen" --port "$srv_port" --mode idle --conns "$ni" --procs "$lp" --src $IDLE_SRC \
			--srcs 250 --rate 1500 --hold $((window + 300)) --timeout 900 \
			--ready-file "$dir/ready.idle" >"$dir/scale.idle" &
		lg2=$!
	else
		: >"$dir/scale.idle"
	fi
	wait_ready "$dir/ready.shaped" $lg1
	[ -n "$lg2" ] && wait_ready "$dir/ready.idle" $lg2
	# Probe clients: a few shaped sessions more, in a process of their own
	# that has little else to do and runs before the load (nice -10), so
	# that the rates they print are what sluice sends and reads, not how
	# late a process sharing the two cores with eight busy workers and six
	# load processes got round to reading: a reply's rate is timed from its
	# first read to its last, and a first read 0.4 s late reads 10 % fast.
	probes=${PROBES:-100} lgp=
	if [ "$probes" -gt 0 ]; then
		nice -n "${PROBE_NICE:--10}" "$loadgen" --port "$srv_port" --mode shaped --conns "$probes" --procs 1 --src 127.2.1.1 \
			--srcs 50 --rate 100 --line 60 --hold $((window + 20)) --timeout 900 \
			--ready-file "$dir/ready.probe" >"$dir/scale.probe" &
		lgp=$!
		wait_ready "$dir/ready.probe" $lgp
	fi
	sleep 10 # every shaped session in its HELO loop
	w=$(pids_of "$srv_pid")
	read -r drop0 rtx0 < <(net_losses)
	c0=$(cpu_ticks "$srv_pid") v0=$(sum_status "$w" voluntary_ctxt_switches)
	i0=$(sum_status "$w" nonvoluntary_ctxt_switches)
	r0=$(sum_status "$w" syscr) s0=$(sum_status "$w" syscw)
	perf_out=$dir/perf.txt
	# Which calls: perf's per-call tracepoints (strace -p records nothing
	# on this machine's kernel, and would slow the workers).
	calls="epoll_wait epoll_ctl recvfrom sendmsg sendto read readv write writev ioctl getsockopt setsockopt accept4 close"
	events=raw_syscalls:sys_enter
	for c in $calls; do events="$events,syscalls:sys_enter_$c"; done
	if command -v perf >/dev/null; then
		perf stat -x, -e "$events" -p "$w" -- sleep "$window" 2>"$perf_out" ||
			sleep "$window"
	else
		sleep "$window"
	fi
	c1=$(cpu_ticks "$srv_pid") v1=$(sum_status "$w" voluntary_ctxt_switches)
	read -r drop1 rtx1 < <(net_losses)
	i1=$(sum_status "$w" nonvoluntary_ctxt_switches)
	r1=$(sum_status "$w" syscr) s1=$(sum_status "$w" syscw)
	after=$(private_kb "$srv_pid")
	heapwalk
	cost=$("$root/build/syscost" 2>/dev/null) # what a call costs here, now
	sys=$(awk -F, '/raw_syscalls:sys_enter/ {print $1}' "$perf_out" 2>/dev/null)
	bycall=$(awk -F, '/syscalls:sys_enter_/ && $1 ~ /^[0-9]+$/ {
		sub(/.*sys_enter_/, "", $3); printf "%s=%s ", $3, $1 }' "$perf_out" 2>/dev/null)
	[ -n "$lg2" ] && kill -USR1 $lg2 2>/dev/null # measured: the idle sessions' long hold can end
	wait $lg1 $lg2 $lgp
	o1=$(cat "$dir/scale.shaped") o2=$(cat "$dir/scale.idle") op=$(cat "$dir/scale.probe" 2>/dev/null)
	echo "shaped: $o1" >&2
	echo "idle: $o2" >&2
	[ -n "$lgp" ] && echo "probe: $op" >&2
	h1=$(kv "$o1" held) h2=$(kv "$o2" held); h2=${h2:-0}
	hz=$(getconf CLK_TCK)
	awk -v n="$n" -v ni="$ni" -v h1="$h1" -v h2="$h2" -v b="$before" -v a="$after" -v c="$((c1 - c0))" \
		-v hz="$hz" -v win="$window" -v vol="$((v1 - v0))" -v inv="$((i1 - i0))" \
		-v rd="$((r1 - r0))" -v wr="$((s1 - s0))" -v sys="${sys:-}" -v w="$W" -v bycall="${bycall:-}" -v cost="${cost:-}" \
		-v in50="$(kv "$o1" in_p50)" -v in1="$(kv "$o1" in_p1)" -v in99="$(kv "$o1" in_p99)" \
		-v out50="$(kv "$o1" out_p50)" -v out1="$(kv "$o1" out_p1)" -v out99="$(kv "$o1" out_p99)" \
		-v inok="$(kv "$o1" in_5pm05)" -v outok="$(kv "$o1" out_5pm05)" -v rounds="$(kv "$o1" in_n)" \
		-v cin="$(kv "$o1" client_in_p1)/$(kv "$o1" client_in_p50)/$(kv "$o1" client_in_p99)" \
		-v cout="$(kv "$o1" client_out_p1)/$(kv "$o1" client_out_p50)/$(kv "$o1" client_out_p99)" \
		-v cinok="$(kv "$o1" client_in_5pm05)" -v coutok="$(kv "$o1" client_out_5pm05)" \
		-v drops="$((drop1 - drop0))" -v rtx="$((rtx1 - rtx0))" -v backlog="$(sysctl -n net.core.netdev_max_backlog)" \
		-v np="$(kv "$op" held)" -v prounds="$(kv "$op" in_n)" \
		-v pin="$(kv "$op" in_p1)/$(kv "$op" in_p50)/$(kv "$op" in_p99)" \
		-v pout="$(kv "$op" out_p1)/$(kv "$op" out_p50)/$(kv "$op" out_p99)" \
		-v pinok="$(kv "$op" in_5pm05)" -v poutok="$(kv "$op" out_5pm05)" \
		-v pcinok="$(kv "$op" client_in_5pm05)" -v pcoutok="$(kv "$op" client_out_5pm05)" \
		'BEGIN {
		printf "scale shaped=%d/%d idle=%d/%d workers=%d window_s=%d\n", h1, n, h2, ni, w, win
		n_load = h1; h1 += np # the probes are shaped sessions too
		printf "memory: %.0f KiB for %d sessions = %.2f KiB per session (%s)\n", a - b, h1 + h2, (a - b) / (h1 + h2), h2 ? "shaped and idle together" : "shaped alone"
		printf "cpu: %.2f cores (%.1f us per shaped session per second)\n", c / hz / win, c / hz / win / h1 * 1e6
		printf "wake-ups (voluntary context switches): %.3f per shaped session per second (involuntary %.3f)\n", vol / win / h1, inv / win / h1
		printf "read-type syscalls %.2f, write-type %.2f per shaped session per second (/proc/PID/io: read/write family; recv/send are not counted there)\n", rd / win / h1, wr / win / h1
		if (sys != "") printf "all system calls (perf raw_syscalls:sys_enter): %.2f per shaped session per second\n", sys / win / h1
		if (bycall != "") {
			k = split(bycall, kv, " "); line = ""
			for (i = 1; i <= k; i++) { split(kv[i], p, "="); if (p[2] > 0) line = line sprintf(" %s %.2f", p[1], p[2] / win / h1) }
			printf "by call (perf syscalls:sys_enter_*), per shaped session per second:%s\n", line
		}
		printf "loopback losses: %d packets dropped by the per-CPU backlog (net.core.netdev_max_backlog = %d), %d TCP segments retransmitted (%.3f per shaped session per second)\n", drops, backlog, rtx, rtx / win / h1
		if (cost != "") printf "system call cost now (build/syscost): %s\n", cost
		printf "rates seen by the shaped clients (%d HELO rounds): in p1/p50/p99 %s/%s/%s B/s, out %s/%s/%s B/s; within 5+-0.5: in %s, out %s\n", rounds, in1, in50, in99, out1, out50, out99, inok, outok
		printf "rates per load client over all its rounds (%d clients): in p1/p50/p99 %s B/s, out %s B/s; within 5+-0.5: in %s, out %s\n", n_load, cin, cout, cinok, coutok
		if (np != "") printf "probe clients (%d in a process of their own, %d rounds): in p1/p50/p99 %s B/s, out %s B/s; rounds within 5+-0.5: in %s, out %s; clients within 5+-0.5: in %s, out %s\n", np, prounds, pin, pout, pinok, poutok, pcinok, pcoutok
	}' | tee "$dir/scale.txt"
	stop_server
	exit 0
fi

if [ "$overload" != 0 ]; then
	# More clients than slots, two workers: first at session_limit
	# (OVL_LIMIT sessions a worker), then at the file limit (each worker
	# under RLIMIT_NOFILE OVL_FILES, session_limit far above it). Every
	# client must get its greeting or a 421 at once; sluice must stay up,
	# not spin, and log the limit once a minute, not once a client.
	limit=${OVL_LIMIT:-1000} files=${OVL_FILES:-1024}
	run_overload() { # what
		local out c0 c1 l0 t0 t1 alive procs=$(( (overload + 17999) / 18000 ))
		[ "$procs" -lt 2 ] && procs=2
		l0=$(wc -l <"$dir/sluice.log") c0=$(cpu_ticks "$srv_pid") t0=$(date +%s.%N)
		out=$(timeout 300 "$loadgen" --port "$srv_port" --mode idle --conns "$overload" \
			--procs "$procs" --src $ALLOW_SRC --srcs 250 --rate 5000 --hold 5 --timeout 200)
		c1=$(cpu_ticks "$srv_pid") t1=$(date +%s.%N)
		alive=$(pgrep -c -P "$srv_pid")
		echo "overload $1: $out" >&2
		tail -n +"$((l0 + 1))" "$dir/sluice.log" | grep -E "refused: session_limit|accept failed" >"$dir/limit.$1"
		awk -v what="$1" -v n="$overload" -v held="$(kv "$out" held)" -v ref="$(kv "$out" refused)" \
			-v failed="$(kv "$out" failed)" -v dropped="$(kv "$out" dropped)" \
			-v p50="$(kv "$out" refuse_p50_ms)" -v p99="$(kv "$out" refuse_p99_ms)" \
			-v max="$(kv "$out" refuse_max_ms)" -v c="$((c1 - c0))" -v hz="$(getconf CLK_TCK)" \
			-v secs="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" -v lines="$(wc -l <"$dir/limit.$1")" \
			-v alive="$alive" -v w="$W" 'BEGIN {
			printf "overload at %s: %d clients, %d held, %d refused with 421 (connect -> 421 p50 / p99 / max %s / %s / %s ms), %d failed, %d dropped; sluice %.2f s of CPU over the %.1f s run (%.2f cores); %d limit log line(s); workers alive %d of %d\n", what, n, held, ref, p50, p99, max, failed, dropped, c / hz, secs, c / hz / secs, lines, alive, w
		}' | tee -a "$dir/overload.txt"
		sed 's/^/  log: /' "$dir/limit.$1" | head -4
	}
	W=2
	SLUICE_OPTS="${SLUICE_OPTS:-} -o session_limit=$limit" start_sluice
	run_overload "session_limit = $limit a worker"
	stop_server
	SLUICE_WRAP="prlimit --nofile=$files:$files --" start_sluice
	run_overload "RLIMIT_NOFILE = $files a worker"
	stop_server
	exit 0
fi

if [ "$tls" != 0 ]; then
	# One worker: handshakes per second per worker, and memory per idle
	# TLS session (SSL_MODE_RELEASE_BUFFERS frees the record buffers while
	# idle).
	openssl req -x509 -newkey rsa:2048 -nodes -keyout "$dir/key.pem" -out "$dir/cert.pem" \
		-subj "/CN=sluice.bench.test" -days 2 2>/dev/null || die "openssl req failed"
	chmod 644 "$dir/key.pem"
	W=1 SLUICE_OPTS="-o tls_cert_file=$dir/cert.pem -o tls_key_file=$dir/key.pem" start_sluice
	before=$(private_kb "$srv_pid")
	"$loadgen" --port "$srv_port" --mode idle --starttls --conns "$tls" --procs 2 \
		--src $ALLOW_SRC --srcs 250 --rate 5000 --hold 20 --timeout 600 \
		--ready-file "$dir/ready.tls" >"$dir/tls.out" &
	lg=$!
	wait_ready "$dir/ready.tls" $lg
	sleep 5
	after=$(private_kb "$srv_pid")
	heapwalk
	wait $lg
	o=$(cat "$dir/tls.out")
	echo "tls: $o" >&2
	awk -v n="$(kv "$o" tls_ok)" -v b="$before" -v a="$after" -v hs="$(kv "$o" tls_hs_per_s)" \
		-v span="$(kv "$o" tls_span_s)" -v held="$(kv "$o" held)" \
		'BEGIN { printf "tls sessions=%d held=%d: %.2f KiB per idle TLS session; %s STARTTLS handshakes/s on one worker (%d in %.1f s, RSA 2048)\n", n, held, (a - b) / held, hs, n, span }' |
		tee "$dir/tls.txt"
	stop_server
	exit 0
fi

# In the order given; direct first by default, so that it is not measured
# after another server's 100,000-connection hold (the 6 December run:
# 1,697 msg/s after Haraka's, 4,200-4,700 otherwise).
for name in ${only//,/ }; do
	echo "== $name" >&2
	"start_$name"
	run_throughput "$name"
	[ "$name" = direct ] || run_slow "$name"
	[ "$name" = sluice ] && run_shaped "$name"
	stop_server
	if [ "$name" != direct ]; then
		for n in $HOLDS; do
			"start_$name"
			run_hold "$name" "$n"
			stop_server
		done
	fi
done

# --- the table -------------------------------------------------------------
d=${R[direct.msgps]:-}
mode=$([ $quick = 1 ] && echo "--quick" || echo "full")
{
	echo "Run: \`bench/peers.sh $*\` ($mode), $(date -u +%Y-%m-%d), $(nproc) vCPUs" \
		"($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), kernel $(uname -r)," \
		"nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), Haraka" \
		"$(node -e "console.log(require('$haraka_dir/node_modules/Haraka/package.json').version)" 2>/dev/null)," \
		"sluice $commit; $W workers/nodes each; $MSGS messages of $SIZE B," \
		"$SESS sessions, one message per connection; $SLOW slow clients."
	echo
	printf '| | direct | sluice | nginx | Haraka |\n|---|---:|---:|---:|---:|\n'
	row() { # label key
		local s
		printf '| %s |' "$1"
		for s in direct sluice nginx haraka; do printf ' %s |' "${R[$s.$2]:-–}"; done
		echo
	}
	printf '| throughput msg/s (ratio to direct) |'
	for n in direct sluice nginx haraka; do
		v=${R[$n.msgps]:-}
		if [ -n "$v" ] && [ -n "$d" ]; then
			printf ' %s (%s) |' "$v" "$(awk -v a="$v" -v b="$d" 'BEGIN {printf "%.2f", a / b}')"
		else printf ' – |'; fi
	done
	echo
	row "latency MAIL → 250 after the dot, p50 ms" p50
	row "latency p99 ms" p99
	for n in $HOLDS; do
		row "KiB per held idle session, $n (held)" "mem$n"
		row "sessions held of $n" "held$n"
	done
	row "backend connections, $SLOW slow clients" slow
	row "shaped rate B/s in / out (p50)" shin
} >"$dir/table.md"
# shaped: both directions in one cell
sed -i "s#^| shaped rate B/s in / out (p50) | – | ${R[sluice.shin]:-–} |#| shaped rate B/s in / out (p50) | – | ${R[sluice.shin]:-–} / ${R[sluice.shout]:-–} (${R[sluice.shn]:-0} rounds) |#" "$dir/table.md"
cat "$dir/table.md"
if [ $write = 1 ]; then
	python3 - "$dir/table.md" <<'EOF'
import sys, re
table = open(sys.argv[1]).read()
p = "BENCHMARKS.md"
s = open(p).read()
a, b = "<!-- peers table: bench/peers.sh --write -->", "<!-- end of peers table -->"
block = a + "\n" + table + b
s = re.sub(re.escape(a) + ".*?" + re.escape(b), lambda m: block, s, flags=re.S) if a in s else s + "\n" + block + "\n"
open(p, "w").write(s)
EOF
fi
