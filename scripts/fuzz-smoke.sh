#!/bin/sh
# Runs every fuzz target briefly (default 30 s each, two at a time) from
# its seed corpus, under ASan + UBSan. A crash fails the run and leaves
# the reproducer in build-fuzz/.
set -eu
cd "$(dirname "$0")/.."
secs=${1:-30}
fail=0
run_one() {
	name=$1
	# Every crash once found stays a regression test.
	regress=fuzz/regress/${name#fuzz_}
	if [ -d "$regress" ] && [ -n "$(ls -A "$regress")" ]; then
		if ! build-fuzz/$name -runs=0 "$regress"/* >build-fuzz/$name.regress.log 2>&1; then
			echo "fuzz: $name FAILED on a regression input"; tail -40 build-fuzz/$name.regress.log
			return 1
		fi
	fi
	corpus=fuzz/corpus/${name#fuzz_}
	work=build-fuzz/corpus-$name
	mkdir -p "$work"
	[ -d "$corpus" ] && cp -r "$corpus"/. "$work"/ 2>/dev/null || true
	dict=""
	[ -f fuzz/smtp.dict ] && dict="-dict=fuzz/smtp.dict"
	if build-fuzz/$name $dict -max_total_time="$secs" -timeout=5 -rss_limit_mb=2048 \
		-artifact_prefix=build-fuzz/$name- -print_final_stats=1 "$work" \
		>build-fuzz/$name.log 2>&1; then
		execs=$(grep -E 'stat::number_of_executed_units' build-fuzz/$name.log | awk '{print $2}')
		echo "fuzz: $name ok ($execs executions in ${secs}s)"
	else
		echo "fuzz: $name FAILED"; tail -40 build-fuzz/$name.log
		return 1
	fi
}
set --
for f in build-fuzz/fuzz_*; do
	n=$(basename "$f")
	case $n in *.log|*-*|*.*) continue ;; esac
	[ -f "$f" ] && [ -x "$f" ] && set -- "$@" "$n"
done
if [ $# -eq 0 ]; then
	echo "fuzz: no targets built" >&2
	exit 1
fi
echo "fuzz: $# targets, ${secs}s each"
# two at a time: the machines have two cores
while [ $# -gt 0 ]; do
	a=$1; shift
	b=${1:-}; [ $# -gt 0 ] && shift
	run_one "$a" & pa=$!
	pb=""
	[ -n "$b" ] && { run_one "$b" & pb=$!; }
	wait $pa || fail=1
	[ -n "$pb" ] && { wait $pb || fail=1; }
done
exit $fail
