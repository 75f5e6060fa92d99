#!/bin/bash
# Throughput: messages per second from Postfix's smtp-source to smtp-sink,
# straight and through sluice, side by side in one run (the ratio is the
# figure; absolute numbers depend on the machine).
#   bench/throughput.sh [messages] [sessions] [size]
# Needs a built ./sluice (make) and Postfix's tools (scripts/install-deps.sh).
set -eu
cd "$(dirname "$0")/.."
msgs=${1:-5000}
sessions=${2:-20}
size=${3:-4096}
pool=${POOL:-8}
workers=${WORKERS:-1}
dir=$(mktemp -d /tmp/sluice-bench.XXXXXX)
sink_port=${SINK_PORT:-19025}
sluice_port=${SLUICE_PORT:-19026}
cleanup() {
	[ -n "${sluice_pid:-}" ] && kill "$sluice_pid" 2>/dev/null
	[ -n "${sink_pid:-}" ] && kill "$sink_pid" 2>/dev/null
	wait 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT INT TERM

/usr/sbin/smtp-sink -u nobody 127.0.0.1:$sink_port 256 &
sink_pid=$!
./sluice -f -o listen=127.0.0.1:$sluice_port -o backend=127.0.0.1:$sink_port \
	-o backend_pool_size=$pool -o workers=$workers -o myhostname=sluice.bench \
	-o spool_dir=$dir/spool -o state_dir=$dir/state -o dns_servers=127.0.0.1:1 \
	-o dns_timeout=100ms -o user= 2>$dir/sluice.log &
sluice_pid=$!
port_open() { (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; }
for i in $(seq 50); do
	port_open $sluice_port && port_open $sink_port && break
	sleep 0.1
done

run() { # port -> seconds (3 decimals)
	start=$(date +%s.%N)
	/usr/sbin/smtp-source -c -s "$sessions" -m "$msgs" -l "$size" \
		-f bench@example.net -t sink@example.com 127.0.0.1:"$1" >/dev/null 2>&1
	end=$(date +%s.%N)
	echo "$start $end" | awk '{printf "%.3f", $2 - $1}'
}
direct=$(run $sink_port)
proxied=$(run $sluice_port)
echo "messages=$msgs sessions=$sessions size=$size backend_pool_size=$pool workers=$workers"
echo "$direct $proxied $msgs" | awk '{
	d = $3 / $1; p = $3 / $2;
	printf "direct   smtp-source -> smtp-sink:          %8.0f msg/s (%.2fs)\n", d, $1;
	printf "proxied  smtp-source -> sluice -> smtp-sink: %8.0f msg/s (%.2fs)\n", p, $2;
	printf "ratio proxied/direct: %.2f\n", p / d }'
grep -c 'status=sent' $dir/sluice.log | sed 's/^/sluice log, messages sent: /'
