#!/bin/sh
# A clone must be complete by itself: no tracked file may read or name a
# path outside the repository (the design notes that sit beside the
# project's own checkout are not there in a clone). Fails, naming the
# lines, when a tracked file names the parent's notes folder or an
# absolute path under the workplace root.
set -eu
cd "$(dirname "$0")/.."
pattern='\.\./shared|/work/'
# The pattern must catch what it is for (a check that cannot fail is none).
printf 'cat %s\n' "../shar""ed/NOTES" | grep -qE "$pattern" ||
	{ echo "check-self-contained: pattern misses a parent path" >&2; exit 2; }
hits=$(git ls-files -z | xargs -0 grep -nE "$pattern" -- 2>/dev/null |
	grep -v '^scripts/check-self-contained\.sh:' || true)
if [ -n "$hits" ]; then
	echo "check-self-contained: paths outside the repository:" >&2
	echo "$hits" >&2
	exit 1
fi
echo "self-contained: no tracked file names a path outside the repository"
