#!/bin/sh
# A clone must be complete by itself: no tracked file may read or name a
# path outside the repository (the design notes beside the project's
# checkout are not there in a clone). Fails, naming the lines, when a
# tracked file mentions ../shared or an absolute path under /work.
set -eu
cd "$(dirname "$0")/.."
hits=$(git ls-files -z | xargs -0 grep -nE '\.\./shared|/work/' -- 2>/dev/null |
	grep -v '^scripts/check-self-contained\.sh:' || true)
if [ -n "$hits" ]; then
	echo "check-self-contained: paths outside the repository:" >&2
	echo "$hits" >&2
	exit 1
fi
echo "self-contained: no tracked file names a path outside the repository"
