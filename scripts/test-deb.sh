#!/bin/sh
# The Debian package end to end, on this machine (as root): builds it
# (scripts/build-deb.sh: dpkg-buildpackage + lintian), installs it with
# dpkg, checks the user, files, conffile, unit (not enabled, not started,
# systemd-analyze verify) and manual pages, runs the INSTALLED binary with
# the packaged configuration against a private Postfix and dnsmasq on
# loopback and delivers a message (tests/scenario/test_package.py), installs
# it again over that running sluice (postinst: upgrade in place, same pid),
# reinstalls it as an upgrade (the edited conffile stays), then purges it
# and checks that nothing it installed or created is left.
# The system user sluice stays after purge, as is usual in Debian.
set -u
cd "$(dirname "$0")/.."
failed=0
bad() { echo "test-deb: FAIL: $*" >&2; failed=1; }
ok() { echo "test-deb: ok: $*"; }

[ "$(id -u)" = 0 ] || { echo "test-deb: must run as root (dpkg -i)" >&2; exit 1; }
deb=$(./scripts/build-deb.sh | tail -1) || exit 1
[ -f "$deb" ] || { echo "test-deb: no package built" >&2; exit 1; }
ok "built and lintian-clean: $deb"

if dpkg-query -W -f='${Status}' sluice 2>/dev/null | grep -q installed; then
	echo "test-deb: purging a sluice package left installed before" >&2
	dpkg --purge sluice >/dev/null || exit 1
fi
export DEBIAN_FRONTEND=noninteractive
dpkg -i "$deb" || { bad "dpkg -i failed"; exit 1; }

# --- user
pw=$(getent passwd sluice) || bad "no user sluice"
uid=$(echo "$pw" | cut -d: -f3)
[ -n "$uid" ] && [ "$uid" -lt 1000 ] || bad "sluice is not a system user: $pw"
case "$pw" in *:/var/lib/sluice:/usr/sbin/nologin) ;; *) bad "home/shell of sluice: $pw" ;; esac
getent group sluice >/dev/null || bad "no group sluice"
ok "user: $pw"

# --- files
[ -x /usr/sbin/sluice ] || bad "/usr/sbin/sluice missing"
if make -n --no-print-directory sluicectl >/dev/null 2>&1; then
	has_ctl=1
	[ -x /usr/sbin/sluicectl ] || bad "/usr/sbin/sluicectl missing (the Makefile builds it)"
else
	has_ctl=0
	echo "test-deb: note: no sluicectl rule in the Makefile yet; not required"
fi
dpkg-query -W -f='${Conffiles}\n' sluice | grep -q '^ /etc/sluice/sluice.conf ' ||
	bad "/etc/sluice/sluice.conf is not a conffile"
grep -q '^user = sluice$' /etc/sluice/sluice.conf || bad "sluice.conf does not set user = sluice"
[ "$(/usr/sbin/sluice -n)" = "user = sluice" ] || bad "sluice -n with the packaged file: $(/usr/sbin/sluice -n 2>&1)"
for d in /var/lib/sluice /var/spool/sluice; do
	[ "$(stat -c '%U:%G %a' "$d" 2>/dev/null)" = "sluice:sluice 750" ] ||
		bad "$d: $(stat -c '%U:%G %a' "$d" 2>&1)"
done
ok "files, conffile, directories"

# --- manual pages: every man/*.[0-9] of the tree, installed and clean
for m in man/*.[0-9]; do
	name=$(basename "$m"); sec=${name##*.}; page=${name%.*}
	[ "$page" = sluicectl ] && [ "$has_ctl" = 0 ] && continue
	p=$(man -w "$sec" "$page" 2>/dev/null)
	case "$p" in /usr/share/man/man$sec/$page.$sec.gz) ;; *) bad "man $sec $page: '$p'" ;; esac
	w=$(MANWIDTH=80 man --warnings "$sec" "$page" 2>&1 >/dev/null)
	[ -z "$w" ] || bad "man $sec $page warns: $w"
done
ok "manual pages"

# --- unit: installed, not enabled, not started, verified
unit=/lib/systemd/system/sluice.service
[ -f "$unit" ] || bad "$unit missing"
st=$(systemctl is-enabled sluice.service 2>&1)
[ "$st" = disabled ] || bad "unit is '$st', not disabled"
pgrep -f '^/usr/sbin/sluice( |$)' >/dev/null && bad "the installed sluice runs after install: $(pgrep -a -f '^/usr/sbin/sluice')"
v=$(systemd-analyze verify "$unit" 2>&1)
[ "$has_ctl" = 0 ] && v=$(printf '%s\n' "$v" | grep -v 'sluicectl')
[ -z "$v" ] || bad "systemd-analyze verify: $v"
ok "unit installed, disabled, not running, verified"

# --- the installed binary delivers a message; dpkg -i over it running
# upgrades it in place (postinst: sluicectl upgrade)
SLUICE_PACKAGE_TEST=1 SLUICE_DEB=$deb SLUICE_BIN=/usr/sbin/sluice /usr/bin/python3 -m pytest -q \
	-p no:cacheprovider tests/scenario/test_package.py || bad "installed binary scenario"

# --- upgrade (reinstall): the edited conffile stays
echo "# edited by test-deb" >>/etc/sluice/sluice.conf
dpkg -i "$deb" >/dev/null || bad "reinstall failed"
grep -q '^# edited by test-deb$' /etc/sluice/sluice.conf || bad "reinstall replaced the edited conffile"
ok "reinstall keeps the edited conffile"

# --- purge: nothing left
files=$(dpkg -L sluice)
dpkg --purge sluice >/dev/null || bad "purge failed"
dpkg-query -W -f='${Status}' sluice 2>/dev/null | grep -q installed && bad "still installed after purge"
for f in $files; do
	[ -d "$f" ] && [ "${f#*sluice}" = "$f" ] && continue # /usr, /etc ...: shared
	[ -e "$f" ] && bad "left after purge: $f"
done
for f in /etc/sluice /var/lib/sluice /var/spool/sluice; do
	[ -e "$f" ] && bad "left after purge: $f"
done
pgrep -f '^/usr/sbin/sluice( |$)' >/dev/null && bad "an installed sluice process is left"
ok "purged; nothing left (the system user sluice stays)"

[ "$failed" = 0 ] && echo "test-deb: passed"
exit "$failed"
