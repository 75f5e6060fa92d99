#!/bin/sh
# `make test`: installs what is missing, builds, then runs every suite:
# unit tests, the blocking-call lint, scenario tests against a real Postfix
# and DNS server, the same unit and scenario tests under ASan + UBSan, and
# a short fuzz run. Ends with one line "suites: N passed, M failed".
set -u
cd "$(dirname "$0")/.."
./scripts/install-deps.sh || exit 1
passed=0
failed=0
failed_names=""
stage() {
	name=$1; shift
	echo "==== $name"
	start=$(date +%s)
	if "$@"; then
		passed=$((passed + 1))
		echo "==== $name: ok ($(( $(date +%s) - start ))s)"
	else
		failed=$((failed + 1))
		failed_names="$failed_names $name"
		echo "==== $name: FAILED ($(( $(date +%s) - start ))s)"
	fi
}
stage build make --no-print-directory sluice
stage unit make --no-print-directory unit
stage lint ./scripts/lint-blocking.sh
stage scenario make --no-print-directory scenario
stage sanitizer-build make --no-print-directory san
stage sanitizer-unit sh -c 'set -e; for t in build-san/test_*; do echo "== $t"; "$t"; done'
stage sanitizer-scenario env SLUICE_BIN="$(pwd)/build-san/sluice" \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=99 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	/usr/bin/python3 -m pytest -q -p no:cacheprovider tests/scenario
stage fuzz make --no-print-directory fuzz-smoke FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
[ -n "$failed_names" ] && echo "failed suites:$failed_names"
echo "suites: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
