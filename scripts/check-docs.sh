#!/bin/sh
# Checks the documentation that must follow the code:
#  - man/sluice.conf.5 and contrib/sluice.conf are what tools/gendoc.c
#    writes from the settings table now (`make man` regenerates them);
#  - contrib/sluice.conf parses (sluice -n) and sets only user = sluice;
#  - every manual page in man/ renders without a groff or man warning;
#  - contrib/grafana/sluice.json queries only metrics that exist
#    (scripts/check-dashboard.py).
# Reads only the repository. Exit 0, or 1 with what is wrong.
set -u
cd "$(dirname "$0")/.."
fail=0
bad() { echo "check-docs: $*" >&2; fail=1; }

make --no-print-directory NO_DEPS=1 sluice build/gendoc >/dev/null || exit 1
tmp=$(mktemp -d /tmp/sluice-check-docs.XXXXXX) || exit 1
trap 'rm -rf "$tmp"' EXIT

./build/gendoc man >"$tmp/sluice.conf.5" || bad "gendoc man failed"
./build/gendoc conf user=sluice >"$tmp/sluice.conf" || bad "gendoc conf failed"
for pair in "man/sluice.conf.5:$tmp/sluice.conf.5" "contrib/sluice.conf:$tmp/sluice.conf"; do
	f=${pair%%:*}
	if ! cmp -s "$f" "${pair#*:}"; then
		bad "$f is out of date with the settings table in src/config.c; run 'make man'"
		diff -u "$f" "${pair#*:}" | head -20 >&2
	fi
done

out=$(./sluice -n -c contrib/sluice.conf 2>&1) || bad "contrib/sluice.conf does not parse: $out"
[ "$out" = "user = sluice" ] || bad "contrib/sluice.conf sets more than user = sluice: $out"

n=0
for m in man/*.[0-9]; do
	n=$((n + 1))
	w=$(groff -ww -man -z "$m" 2>&1) || bad "$m: groff failed"
	[ -z "$w" ] || bad "$m: groff warnings: $w"
	w=$(MANWIDTH=80 man --warnings -l "$m" 2>&1 >/dev/null)
	[ -z "$w" ] || bad "$m: man warnings: $w"
done
[ "$n" -ge 2 ] || bad "fewer than two manual pages in man/"
for m in sluice.8 sluice.conf.5; do
	[ -f "man/$m" ] || bad "man/$m is missing"
done

/usr/bin/python3 scripts/check-dashboard.py || fail=1
[ "$fail" -eq 0 ] && echo "check-docs: $n manual pages, generated files current, dashboard ok"
exit "$fail"
