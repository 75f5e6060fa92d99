#!/bin/sh
# Installs every Debian package that building, running and testing sluice
# needs. Idempotent: does nothing when all are present. The one place that
# installs anything; make, make run and make test all come through here.
set -eu

PKGS="build-essential pkg-config clang llvm libevent-dev libssl-dev liblmdb-dev
libhiredis-dev libcmocka-dev postfix dnsmasq-base redis-server swaks python3
python3-pytest python3-pytest-xdist python3-pytest-rerunfailures openssl
procps iproute2 lsof haproxy
debhelper dpkg-dev fakeroot lintian groff-base man-db systemd adduser
debootstrap systemd-container chromium fonts-dejavu-core"

missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
	echo "install-deps: missing packages:$missing (run as root to install)" >&2
	exit 1
fi
echo "install-deps: installing$missing" >&2
# Postfix must not configure or start a system instance on port 25: the
# tests and 'make run' start private instances of their own.
echo "postfix postfix/main_mailer_type select No configuration" |
	debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
