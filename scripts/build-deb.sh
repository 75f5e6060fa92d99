#!/bin/sh
# `make deb`: builds the Debian package with dpkg-buildpackage -us -uc -b in
# a copy of the source tree (dpkg-buildpackage starts with `make clean`,
# which would wipe this tree's builds, and writes its results next to the
# tree), then checks it with lintian (errors fail) and leaves
# build/deb/sluice_VERSION_ARCH.deb (and .changes, .buildinfo, -dbgsym).
# Prints the path of the .deb last.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
tmp=$(mktemp -d /tmp/sluice-deb.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/sluice"
# The files of the tree, without builds: git's view when there is one.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	git ls-files -z --cached --others --exclude-standard |
		xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh |
		tar --null -T - -cf - | tar -xf - -C "$tmp/sluice"
else
	tar --exclude=./build --exclude=./build-san --exclude=./build-fuzz \
		--exclude=./sluice --exclude=./debian/sluice -cf - . | tar -xf - -C "$tmp/sluice"
fi
(cd "$tmp/sluice" && DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:-parallel=2}" dpkg-buildpackage -us -uc -b) >"$tmp/build.log" 2>&1 || {
	tail -40 "$tmp/build.log" >&2
	echo "build-deb: dpkg-buildpackage failed" >&2
	exit 1
}
v=$(cd "$tmp/sluice" && dpkg-parsechangelog -S Version)
a=$(dpkg-architecture -qDEB_HOST_ARCH)
mkdir -p build/deb
rm -f build/deb/sluice*
for f in "sluice_${v}_$a.deb" "sluice-dbgsym_${v}_$a.deb" "sluice_${v}_$a.buildinfo" \
	"sluice_${v}_$a.changes"; do
	mv "$tmp/$f" build/deb/
done
# lintian refuses to run as root only with a warning; errors fail the build.
lintian --fail-on error "build/deb/sluice_${v}_$a.changes" 2>&1 |
	grep -v 'running with root privileges' >&2 || true
lintian --fail-on error "build/deb/sluice_${v}_$a.changes" >/dev/null 2>&1 || {
	echo "build-deb: lintian reports errors" >&2
	exit 1
}
echo "$top/build/deb/sluice_${v}_$a.deb"
