#!/bin/sh
# check-layers.sh [DIR]: fails when a module of DIR/src (default: the
# repository's src/) includes or calls what its layer may not. The layers
# and who may call whom are drawn in docs/architecture.md; the rules here
# are that picture made checkable, one line per rule:
#   files (basename glob)  kind  pattern (grep -E)  why
# kind "include" matches #include lines, "call" matches NAME( anywhere
# outside comments. Exit 0 when clean, 1 with one line per breach.
# tests/layers/bad is a fixture this script must reject (and
# tests/layers/check.sh proves that it does).
set -u
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
src=$root/src
[ -d "$src" ] || { echo "check-layers: no $src" >&2; exit 2; }

rules=$(cat <<'RULES'
reputation.c|ascii.c|ipaddr.c|mstime.c|ratelog.c|rdns.c|helo.c|cidr.c|slab.c|smtp_parse.c|smtp_data.c|smtp_reply.c	include	(event2|lmdb|hiredis|openssl)/|<(lmdb|event)\.h>|"(store|pool|backend|replay|session[a-z_]*|worker|spool|workq|dns|dnsbl|config|metrics|log)\.h"	a pure leaf: no I/O library, no module above it
store_lmdb.c|store_redis.c	include	"store\.h"	an implementation sees only store_ops.h (and its own header), never the facade or the other store
store_lmdb.c	include	"store_redis\.h"	the implementations do not know each other
store_redis.c	include	"store_lmdb\.h"	the implementations do not know each other
store_lmdb.c|store_redis.c	call	\bstore_(open_lmdb|open_redis|close|reputation|record|pass_check|pass_grant|async|lookup_start|lookup_cancel)\(	an implementation never calls back into the facade
*	include	"worker\.h"	only the worker (and its starters) see the worker
*	include	"limits\.h"	renamed client_limits.h: it hid <limits.h>
*	include	"session_priv\.h"	the session's insides are the session files'
backend.c	include	"(pool|replay|session[a-z_]*|spool|store)\.h"	backend reports to its owner through the hooks given at open
backend.c	call	\bpool_[a-z_]+\(	backend reports to its owner through the hooks given at open
pool.c	include	"(replay|session[a-z_]*|spool|store)\.h"	the pool lends to callbacks, it does not know its borrowers
replay.c	include	"session[a-z_]*\.h"	the replay reports through its callback, not to the session
lane.c	include	"session[a-z_]*\.h"	the fast lane reports through struct lane_owner, not to the session
lane.c	call	\bpool_lend(_long)?\(	a lane takes its connection through replay_identify_lane (pool_lend_long: counted in the lanes' share)
shape.c	include	"session[a-z_]*\.h"	shaping knows no session
session_shape.c	call	\bsession_greet\(	shaping hands the verdict back (s->verdict_done), it does not greet
RULES
)

allowed_worker_h="worker.c supervisor.c main.c"
allowed_priv_h="session.c session_cmd.c session_data.c session_lane.c session_mem.c session_park.c session_report.c session_shape.c session_tls.c"
fail=0
tab=$(printf '\t')
# printf, not echo: dash's echo would turn \b into a backspace.
printf '%s\n' "$rules" | while IFS="$tab" read -r files kind pattern why; do
	[ -n "$files" ] || continue
	for f in "$src"/*.c "$src"/*.h; do
		[ -e "$f" ] || continue
		b=$(basename "$f")
		match=0
		old_ifs=$IFS; IFS='|'
		set -f # the globs are for case, not for the file system
		for g in $files; do
			case "$b" in $g) match=1 ;; esac
		done
		set +f
		IFS=$old_ifs
		[ "$match" = 1 ] || continue
		case "$pattern" in
		*worker*) case " $allowed_worker_h worker.h " in *" $b "*) continue ;; esac ;;
		*session_priv*) case " $allowed_priv_h session_priv.h " in *" $b "*) continue ;; esac ;;
		esac
		if [ "$kind" = include ]; then
			hits=$(grep -nE '^[[:space:]]*#[[:space:]]*include' "$f" | grep -E "$pattern")
		else
			# Drop comment lines and the function's own definition.
			hits=$(grep -nE "$pattern" "$f" | grep -vE '^[0-9]+:[[:space:]]*(/?\*|//)')
		fi
		if [ -n "$hits" ]; then
			echo "$hits" | while IFS= read -r h; do
				echo "check-layers: ${f#$root/}:$h: $why"
			done
			echo breach
		fi
	done
done | {
	n=0
	while IFS= read -r line; do
		if [ "$line" = breach ]; then n=$((n + 1)); else echo "$line"; fi
	done
	if [ "$n" -gt 0 ]; then
		echo "check-layers: $n breach(es) of the layers"
		exit 1
	fi
	echo "check-layers: clean"
}
