#!/bin/sh
# Which cases of docs/hostile.md (the catalogue) have an automated test? A test
# covers case N when its name contains hostile_NNN_ (three digits), in
# tests/ (scenario, unit or fuzz). Prints one line per group and the
# missing numbers.
#   scripts/hostile-coverage.sh [--require A,B,C,...] [CATALOGUE]
# With --require, exits 1 when a case of the named groups has no test.
set -eu
cd "$(dirname "$0")/.."
require=""
if [ "${1:-}" = "--require" ]; then
	require=$2
	shift 2
fi
catalogue=${1:-docs/hostile.md}
[ -f "$catalogue" ] || { echo "hostile-coverage: no catalogue at $catalogue" >&2; exit 2; }
tested=$(grep -rhoE 'hostile_[0-9]{3}_' tests fuzz 2>/dev/null |
	sed -E 's/hostile_0*([0-9]+)_/\1/' | sort -nu | tr '\n' ' ')
awk -v tested=" $tested " -v require=",$require," '
	/^### [A-M]\./ { g = substr($2, 1, 1); order[++ng] = g }
	/^\*\*[0-9]+\./ {
		match($0, /[0-9]+/); n = substr($0, RSTART, RLENGTH)
		total[g]++
		if (index(tested, " " n " ")) have[g]++
		else miss[g] = miss[g] " " n
	}
	END {
		bad = 0; all = 0; got = 0
		for (i = 1; i <= ng; i++) {
			g = order[i]; all += total[g]; got += have[g] + 0
			printf "%s: %d/%d%s\n", g, have[g] + 0, total[g],
				miss[g] != "" ? "  missing:" miss[g] : ""
			if (miss[g] != "" && index(require, "," g ",")) bad = 1
		}
		printf "hostile cases with tests: %d/%d\n", got, all
		exit bad
	}' "$catalogue"
