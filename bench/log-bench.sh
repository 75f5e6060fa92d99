#!/bin/sh
# Cost of log_msg to its caller, destination reading vs stalled
# (bench/log_bench.c). Needs build/libsluice.a (make sluice).
set -eu
cd "$(dirname "$0")/.."
make --no-print-directory build/libsluice.a >/dev/null
cc -std=c17 -O2 -g -Isrc -o build/log_bench bench/log_bench.c build/libsluice.a \
	$(pkg-config --libs libevent libevent_openssl libevent_pthreads openssl) \
	-llmdb -lhiredis -lpthread -lm
./build/log_bench
