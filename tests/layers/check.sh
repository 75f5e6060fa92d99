#!/bin/sh
# The layer check as a test stage: src/ must pass scripts/check-layers.sh,
# and the fixture tests/layers/bad (one breach of each kind of rule) must be
# rejected with every one of its breaches named, so the check cannot go
# blind without this failing.
set -u
cd "$(dirname "$0")/../.."
./scripts/check-layers.sh || exit 1
out=$(./scripts/check-layers.sh tests/layers/bad) && {
	echo "layers: the bad fixture passed the check:"; echo "$out"; exit 1; }
echo "$out"
for want in 'store_redis.c:3:#include "store.h"' 'store_redis.c:4:#include "store_lmdb.h"' \
	'store_redis.c:8:	store_record(' 'reputation.c:3:#include <event2/event.h>' \
	'reputation.c:4:#include "log.h"' 'backend.c:3:#include "pool.h"' \
	'backend.c:7:	pool_backend_ready(' 'replay.c:3:#include "worker.h"' \
	'replay.c:4:#include "session_priv.h"'; do
	case "$out" in
	*"$want"*) ;;
	*) echo "layers: the check missed: $want"; exit 1 ;;
	esac
done
echo "layers: src clean, fixture rejected"

# The state machines in docs/architecture.md against the X-macro lists.
for list in SESSION_STATES SESSION_WAITS SESSION_PHASES SHAPE_STATES REPLAY_STEPS LANE_STATES; do
	file=$(grep -l "#define $list(X)" src/*.h src/*.c | head -1)
	[ -n "$file" ] || { echo "states: $list not found in src"; exit 1; }
	code=$(awk -v l="#define $list(X)" 'index($0, l) {on = 1; next}
		on && /X\(/ {s = $0; sub(/.*X\(/, "", s); sub(/[,)].*/, "", s); print s}
		on && !/\\$/ {on = 0}' "$file" | sort -u)
	doc=$(grep "^- $list " docs/architecture.md | sed 's/^[^:]*://' |
		grep -oE '\b[A-Z][A-Z_]+[A-Z]\b' | sort -u)
	if [ "$code" != "$doc" ]; then
		echo "states: docs/architecture.md disagrees with $list in $file:"
		echo "code: $(echo $code)"; echo "doc:  $(echo $doc)"
		exit 1
	fi
done
echo "states: docs/architecture.md matches the code"
