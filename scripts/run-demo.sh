#!/bin/sh
# make run: sluice on 127.0.0.1:2525 in front of a private Postfix.
#
# Sets up (or reuses, if already running) under $DEMO_DIR
# (default /var/tmp/sluice-demo):
#   postfix/   a private Postfix on 127.0.0.1:10025 (XCLIENT allowed for
#              127.0.0.1 only) delivering alice, bob, carol and dave
#              @example.com to maildirs in postfix/mail/<user>/new/
#   dns/       dnsmasq on 127.0.0.1:$DEMO_DNS_PORT (default 5353) serving
#              only local test zones, so the demo works offline and never
#              asks the system resolver
#   sluice.conf
# then runs ./sluice in the foreground (Ctrl-C stops it; Postfix and
# dnsmasq keep running for the next `make run`).
#
# The Postfix and dnsmasq configurations are written by
# tests/scenario/harness.py, the same code the scenario tests use.
set -eu

cd "$(dirname "$0")/.."
DEMO_DIR=${DEMO_DIR:-/var/tmp/sluice-demo}
PYTHON=${PYTHON:-/usr/bin/python3}
export DEMO_DNS_PORT="${DEMO_DNS_PORT:-5353}"

if [ "$(id -u)" != 0 ]; then
	echo "run-demo: run as root (Postfix needs it; sluice drops to nobody)" >&2
	exit 1
fi
if [ ! -x ./sluice ]; then
	echo "run-demo: ./sluice is not built; run make" >&2
	exit 1
fi

conf=$("$PYTHON" tests/scenario/harness.py demo-setup "$DEMO_DIR")
./sluice -n -c "$conf" >/dev/null

cat <<EOF

  sluice demo
  -----------
  sluice       127.0.0.1:2525   config $conf
  Postfix      127.0.0.1:10025  log    $DEMO_DIR/postfix/maillog
  dnsmasq      127.0.0.1:$DEMO_DNS_PORT   (local test zones only)

  Send a test message through sluice (from another terminal):

    swaks --server 127.0.0.1:2525 --to alice@example.com --from demo@example.net

  Delivered mail lands in $DEMO_DIR/postfix/mail/<user>/new/
  (users: alice bob carol dave @example.com; others get Postfix's 550 5.1.1).

  Stop the helpers afterwards with:
    postfix -c $DEMO_DIR/postfix/etc stop
    kill \$(cat $DEMO_DIR/dns/dnsmasq.pid)

  Starting sluice in the foreground; Ctrl-C to stop.

EOF
exec ./sluice -f -c "$conf"
