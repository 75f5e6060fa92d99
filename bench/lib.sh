# bench/lib.sh: shell helpers shared by the bench scripts (sourced after
# they define die(); the ones that write files use $dir, set before they
# are called).

bench_ready() { # sluice-binary tool...: root, the tools, build/loadgen, the binary
	[ "$(id -u)" = 0 ] || die "run as root"
	local bin=$1 f
	shift
	for f; do
		[ -x "$f" ] || die "$f missing: run scripts/install-deps.sh (strace, perf: apt-get install them)"
	done
	make -s bench-tools >/dev/null || die "make bench-tools failed"
	[ -x "$bin" ] || die "$bin missing (make)"
}

stop_pid() { # pid: TERM, wait at most 10 s, then KILL
	local pid=$1
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
}

# smtp-sink -c on 127.0.0.1:PORT (sets sink_pid, adds it to pids; its
# counters in $dir/sink.out) and the clients' 127.1.0.0/16 in $dir/allow
# (sluice's cidr_allow_file): the sink phase of bench/lane.sh.
start_sink() { # port
	/usr/sbin/smtp-sink -c -u nobody -m 25000 127.0.0.1:"$1" 4096 \
		</dev/null >"$dir/sink.out" 2>"$dir/sink.err" &
	sink_pid=$!; pids+=("$sink_pid")
	wait_port "$1" smtp-sink "$sink_pid"
	echo "127.1.0.0/16" >"$dir/allow"
	chmod 644 "$dir/allow"
}

# A port that nothing on this machine uses now, TCP and UDP, distinct from
# the ones already taken by this run.
taken=" "
free_port() {
	local p
	for _ in $(seq 200); do
		p=$((20000 + RANDOM % 40000))
		case "$taken" in *" $p "*) continue ;; esac
		[ -z "$(ss -Htuan "( sport = :$p or dport = :$p )" 2>/dev/null)" ] || continue
		taken="$taken$p "
		echo "$p"
		return 0
	done
	die "no free port found"
}
port_open() { (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; }
wait_port() { # port what pid: at most 15 s
	for _ in $(seq 150); do
		port_open "$1" && return 0
		kill -0 "$3" 2>/dev/null || die "$2 exited at start (see $dir)"
		sleep 0.1
	done
	die "$2 does not listen on port $1 after 15 s"
}

# A private dnsmasq on 127.0.0.1:PORT that answers bench.test and the
# 127.in-addr.arpa zone locally (NXDOMAIN unless HOSTS lists the address),
# as a local resolver would. Sets dns_pid.
start_dnsmasq() { # port [hosts file]
	{
		printf 'port=%s\nlisten-address=127.0.0.1\nbind-interfaces\n' "$1"
		printf 'no-resolv\nno-poll\nno-hosts\n'
		[ -n "${2:-}" ] && printf 'addn-hosts=%s\n' "$2"
		printf 'local=/bench.test/\nlocal=/127.in-addr.arpa/\nuser=nobody\n'
	} >"$dir/dnsmasq.conf"
	chmod 644 "$dir/dnsmasq.conf"
	/usr/sbin/dnsmasq --conf-file="$dir/dnsmasq.conf" --keep-in-foreground \
		</dev/null >"$dir/dnsmasq.log" 2>&1 &
	dns_pid=$!
}

proc_tree() { # pid and all descendants
	local p=$1 c
	echo "$p"
	for c in $(pgrep -P "$p"); do proc_tree "$c"; done
}
cpu_ticks() { # pid: user + system clock ticks of it and its descendants so far
	local t=0 p
	for p in $(proc_tree "$1"); do
		t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
	done
	echo "$t"
}

# The last value of counter KEY (sess, quit, mesg) that `smtp-sink -c`
# printed to FILE (CR-separated "sess=N quit=N mesg=N", updated at each
# message): what the sink really received.
sink_count() { # file key
	tr '\r' '\n' <"$1" | sed -n "s/.*$2=\\([0-9]*\\).*/\\1/p" | tail -1 | grep . || echo 0
}

# The value of KEY in a line of key=value words (the load generator's
# output), the first word included.
kv() { # line key
	sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<" $1"
}
net_losses() { # packets the kernel's per-CPU backlog dropped, and TCP segments retransmitted, so far
	local drops=0 retrans _ d
	while read -r _ d _; do drops=$((drops + 16#$d)); done </proc/net/softnet_stat
	retrans=$(awk '$1 == "Tcp:" && !h { for (i = 1; i <= NF; i++) col[$i] = i; h = 1; next }
		$1 == "Tcp:" { print $col["RetransSegs"] }' /proc/net/snmp)
	echo "$drops $retrans"
}

# CPU ticks of the bench Postfix in $dir/pf: its master and every process
# under it, with the children they already reaped (smtpd processes come
# and go): utime + stime + cutime + cstime.
postfix_ticks() {
	local m t=0 p
	m=$(head -1 "$dir/pf/queue/pid/master.pid" 2>/dev/null | tr -d ' ')
	[ -n "$m" ] || { echo 0; return; }
	for p in $(proc_tree "$m"); do
		t=$((t + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat" 2>/dev/null || echo 0)))
	done
	echo "$t"
}

# bench_postfix start|stop DIR PORT XCLIENT_HOSTS: the private Postfix of
# tests/scenario/harness.py in DIR (own config and queue, smtpd on a free
# loopback port, printed by start; PORT is for stop), virtual_transport =
# discard: the queue file is written and fsynced, then the message dropped.
# The load generator's recipient (sink@example.com) exists.
bench_postfix() {
	/usr/bin/python3 - "$1" "$2" "$3" "$4" <<'EOF'
import sys
sys.path.insert(0, "tests/scenario")
import harness
what, d, port, xclient_hosts = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if what == "start":
    p = harness.Postfix(d, users=harness.USERS + ("sink",),
                        xclient_hosts=xclient_hosts,
                        extra={"virtual_transport": "discard"})
    p.write_config().start()
    print(p.port)
else:
    harness.Postfix(d, port=port).stop()
EOF
}

# Medians per run name of the "rep=N run=NAME msgps=... ratio=... k=v ..."
# lines in FILE (the ratio of each repetition to its own direct run): one
# line per name with msgps, the ratio and its range, and every other
# numeric key.
run_medians() { # file
	/usr/bin/python3 - "$1" <<'EOF'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    r = dict(w.split("=", 1) for w in line.split())
    runs.setdefault(r["run"], []).append(r)
for name, rs in runs.items():
    ratios = [float(r["ratio"]) for r in rs]
    rest = " ".join("%s=%.0f" % (k, statistics.median(float(r[k]) for r in rs))
                    for k in rs[0] if k not in ("rep", "run", "msgps", "ratio"))
    print("median run=%s msgps=%.0f ratio=%.2f (%.2f-%.2f) %s" % (
        name, statistics.median(float(r["msgps"]) for r in rs),
        statistics.median(ratios), min(ratios), max(ratios), rest))
EOF
}

# sluice (BINARY) on 127.0.0.1:PORT in front of 127.0.0.1:BACKEND_PORT
# with the bench's settings: its spool and state under WORKDIR (made
# afresh), its log in WORKDIR.log, DNS from the bench's dnsmasq on
# $dns_port, clients from $dir/allow; further arguments are more -o
# settings. Sets sl_pid and returns once it listens.
start_bench_sluice() { # binary port backend_port xclient(yes|no) workers pool workdir [-o k=v ...]
	local bin=$1 port=$2 backend=$3 xclient=$4 workers=$5 pool=$6 wd=$7
	shift 7
	rm -rf "$wd"
	mkdir -p "$wd/spool" "$wd/state"
	"$bin" -f -c /dev/null -o listen=127.0.0.1:"$port" -o backend=127.0.0.1:"$backend" \
		-o backend_xclient="$xclient" -o backend_pool_size="$pool" -o workers="$workers" \
		-o myhostname=sluice.bench.test -o spool_dir="$wd/spool" \
		-o state_dir="$wd/state" -o dns_servers=127.0.0.1:"$dns_port" \
		-o dns_timeout=2s -o shutdown_timeout=5s -o user= \
		-o client_connection_limit=100000 -o cidr_allow_file="$dir/allow" \
		"$@" </dev/null 2>"$wd.log" &
	sl_pid=$!
	wait_port "$port" sluice "$sl_pid"
}

# HAProxy in TCP mode on 127.0.0.1:PORT relaying to 127.0.0.1:BACKEND_PORT
# with THREADS threads (config and log in $dir/haproxy.*): a proxy that
# does no SMTP work at all, the floor for any proxy's cost. Sets ha_pid
# and returns once it listens.
start_haproxy() { # port backend_port threads
	cat >"$dir/haproxy.cfg" <<EOF
global
	maxconn 8000 # two descriptors a connection, under the 20,000 a process may open
	nbthread $3
defaults
	mode tcp
	timeout connect 5s
	timeout client 60s
	timeout server 60s
frontend smtp
	bind 127.0.0.1:$1
	default_backend server
backend server
	server server 127.0.0.1:$2
EOF
	/usr/sbin/haproxy -db -f "$dir/haproxy.cfg" </dev/null >"$dir/haproxy.log" 2>&1 &
	ha_pid=$!
	wait_port "$1" haproxy "$ha_pid"
}

# One throughput run of build/loadgen (at most 300 s) with ARGS: its
# key=value output on one line, with lg_ticks= (the CPU ticks of it and
# its children: the shell's cutime after the wait).
loadgen_run() { # loadgen arguments...
	bash -c '"$@"; rc=$?; awk "{print \"lg_ticks=\" \$16 + \$17}" /proc/$$/stat; exit $rc' \
		_ timeout 300 build/loadgen "$@" | paste -sd' '
}

# Waits (at most 5 s: smtp-sink counts right after its 250) until the
# messages counter of start_sink's smtp-sink is FROM + MSGS; prints it.
sink_wait() { # from msgs
	local m
	for _ in $(seq 50); do
		m=$(sink_count "$dir/sink.out" mesg)
		[ $((m - $1)) -ge "$2" ] && break
		sleep 0.1
	done
	echo "$m"
}

# Waits (at most 60 s: the queue drains before the next run) until the
# bench Postfix in $dir/pf has logged status=sent for MSGS more messages
# than the count kept in FILE; keeps the new count there and prints how
# many more it logged.
postfix_sent_since() { # file msgs
	local before now
	before=$(cat "$1")
	for _ in $(seq 600); do
		now=$(grep -c 'status=sent' "$dir/pf/maillog")
		[ $((now - before)) -ge "$2" ] && break
		sleep 0.1
	done
	echo "$now" >"$1"
	echo $((now - before))
}
