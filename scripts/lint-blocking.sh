#!/bin/sh
# Fails when a blocking call appears in code that runs on the event loop.
# Start-up and configuration code (main, config, supervisor) and the
# sluicectl program (no event loop) may block;
# anywhere else a line must say why with "lint: blocking-ok (reason)",
# as work functions that run on the thread pool do.
set -eu
cd "$(dirname "$0")/.."
pattern='\b(getaddrinfo|gethostbyname2?|gethostbyaddr|getnameinfo|sleep|usleep|nanosleep|fsync|fdatasync|sync|SSL_accept|SSL_connect|SSL_do_handshake|system|popen|evdns_base_resolv_conf_parse)[[:space:]]*\('
bad=$(grep -nE "$pattern" src/*.c |
	grep -vE '^src/(main|config|supervisor|sluicectl)\.c:' |
	grep -v 'lint: blocking-ok' |
	grep -vE '^[^:]+:[0-9]+:[[:space:]]*(\*|/\*|//)' || true)
# connect() on a socket made without SOCK_NONBLOCK would block the loop:
# sockets are created only through libevent or with SOCK_NONBLOCK.
bad2=$(awk '/[^_a-z]socket[ \t]*\(/ { pending = FILENAME ":" FNR ": " $0; text = $0; next_line = 1; next }
	next_line { text = text $0; next_line = 0
		if (text !~ /SOCK_NONBLOCK/) print pending }' src/*.c |
	grep -vE '^src/(main|config|supervisor|sluicectl)\.c:' || true)
if [ -n "$bad$bad2" ]; then
	echo "lint-blocking: blocking calls on the event loop:" >&2
	printf '%s\n' "$bad" "$bad2" | sed '/^$/d' >&2
	exit 1
fi
echo "lint-blocking: ok"
