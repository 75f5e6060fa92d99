#!/bin/sh
# `make test`: installs what is missing, builds, then runs every suite:
# unit tests, the blocking-call lint, the self-containment check, the
# layer and state check (tests/layers/check.sh), the catalogue coverage
# check (docs/hostile.md), the
# core scenarios against the release build, unit tests and the whole
# scenario suite (real Postfix, real DNS server) under ASan + UBSan, and a
# short fuzz run of every target, and the Debian package built, installed,
# run and purged. Ends with one line
# "suites: N passed, M failed".
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
# Scenario tests run with several pytest workers: most of their time is
# spent waiting on timers (shaping, timeouts), not on the two cores. A test
# that fails is run once more (pytest-rerunfailures): timing assertions on a
# loaded two-core machine can lose a race now and then. Reruns stay visible
# in the summary ("N rerun"); a test that fails twice fails the suite.
jobs=${SCENARIO_JOBS:-4}
reruns="--reruns 1 --reruns-delay 1"
stage build make --no-print-directory sluice sluicectl
stage unit make --no-print-directory unit
stage lint ./scripts/lint-blocking.sh
stage self-contained ./scripts/check-self-contained.sh
stage layers ./tests/layers/check.sh
stage docs ./scripts/check-docs.sh
stage hostile-coverage ./scripts/hostile-coverage.sh --require A,B,C,E,F,J
stage scenario-release env SLUICE_BIN="$(pwd)/sluice" \
	/usr/bin/python3 -m pytest -q -p no:cacheprovider $reruns tests/scenario/test_core.py
stage sanitizer-build make --no-print-directory san
stage sanitizer-unit sh -c 'set -e; for t in build-san/test_*; do echo "== $t"; "$t"; done'
# The whole scenario suite runs against the ASan + UBSan build.
stage sanitizer-scenario env SLUICE_BIN="$(pwd)/build-san/sluice" \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=99 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	/usr/bin/python3 -m pytest -q -p no:cacheprovider -n "$jobs" $reruns tests/scenario
stage fuzz make --no-print-directory fuzz-smoke FUZZ_SECONDS="${FUZZ_SECONDS:-30}"
# The Debian package: build, lintian, install, run the installed binary,
# purge (about a minute; needs root, as all of make test does).
stage deb ./scripts/test-deb.sh
[ -n "$failed_names" ] && echo "failed suites:$failed_names"
echo "suites: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
