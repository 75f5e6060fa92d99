#!/bin/bash
# The configurations of BENCHMARKS.md: bench/throughput.sh over message size,
# concurrent sessions and worker count, REPS repetitions each (direct and
# proxied side by side in every repetition); prints a Markdown table of
# medians. Raw key=value lines go to $OUT (default /tmp/sluice-bench-matrix.txt).
#   bench/matrix.sh                        all configurations
#   MSGS=5000 REPS=3 POOL=8 SIZES="4096 102400" SESSIONS="20 100" WORKERS_LIST="1 2"
#   NODELAY=1 SLUICE=./sluice             passed on to throughput.sh
#   BENCH=bench/throughput-postfix.py     real Postfix backend (XCLIENT_ALL=1 too)
set -u
cd "$(dirname "$0")/.." || exit 2
msgs=${MSGS:-5000}
reps=${REPS:-3}
sizes=${SIZES:-4096 102400}
sessions_list=${SESSIONS:-20 100}
workers_list=${WORKERS_LIST:-1 2}
out=${OUT:-/tmp/sluice-bench-matrix.txt}
: >"$out"
status=0
for size in $sizes; do
	for s in $sessions_list; do
		for w in $workers_list; do
			WORKERS=$w REPS=$reps ${BENCH:-bench/throughput.sh} "$msgs" "$s" "$size" \
				>>"$out" 2>>"$out.stderr" || status=1
			tail -n 4 "$out" >&2
		done
	done
done

awk '
	function median(a, n,   i, j, t) {
		for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
			if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
	/^mode=/ {
		delete f
		for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
		k = f["size"] " " f["sessions"] " " f["workers"] " " f["pool"]
		if (!(k in seen)) { seen[k] = 1; order[++nk] = k }
		if (f["ok"] != "yes") bad[k]++
		if (f["mode"] == "direct") { nd[k]++; d[k, nd[k]] = f["msgps"]; last[k] = f["msgps"] }
		else { np[k]++; p[k, np[k]] = f["msgps"]; r[k, np[k]] = f["msgps"] / last[k]
		       c[k, np[k]] = f["sluice_cpu_us_per_msg"] } }
	END {
		print "| size | sessions | workers | pool | direct msg/s (min–max) | proxied msg/s (min–max) | proxied/direct | sluice CPU µs/msg | all delivered |"
		print "|---:|---:|---:|---:|---:|---:|---:|---:|:---|"
		for (i = 1; i <= nk; i++) {
			k = order[i]; split(k, a, " ")
			delete x; for (j = 1; j <= nd[k]; j++) x[j] = d[k, j]; md = median(x, nd[k])
			delete x; for (j = 1; j <= np[k]; j++) x[j] = p[k, j]; mp = median(x, np[k])
			delete x; for (j = 1; j <= np[k]; j++) x[j] = r[k, j]; mr = median(x, np[k])
			delete x; for (j = 1; j <= np[k]; j++) x[j] = c[k, j]; mc = median(x, np[k])
			sz = a[1] >= 1024 ? sprintf("%d KiB", a[1] / 1024) : a[1] " B"
			dlo = dhi = d[k, 1]
			for (j = 2; j <= nd[k]; j++) { if (d[k, j] < dlo) dlo = d[k, j]; if (d[k, j] > dhi) dhi = d[k, j] }
			lo = hi = p[k, 1]
			for (j = 2; j <= np[k]; j++) { if (p[k, j] < lo) lo = p[k, j]; if (p[k, j] > hi) hi = p[k, j] }
			printf "| %s | %d | %d | %d | %.0f (%d–%d) | %.0f (%d–%d) | %.2f | %.0f | %s |\n",
				sz, a[2], a[3], a[4], md, dlo, dhi, mp, lo, hi, mr, mc,
				bad[k] ? "NO (" bad[k] " of " nd[k] + np[k] " runs failed)" : "yes (" nd[k] " + " np[k] " runs)" } }' "$out"
exit "$status"
