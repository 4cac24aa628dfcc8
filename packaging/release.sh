#!/usr/bin/env bash
# make release: the RPM and the DEB of VERSION, and their SHA256SUMS, in OUTDIR.
#   packaging/release.sh OUTDIR
# Environment (set by mk/packaging.mk, as for packaging/build.sh): PKG_VERSION,
# PKG_RELEASE, NFPM; BINARY (default bin/dsr-agent).
#
# Refuses, before building anything, unless: PKG_VERSION is VERSION; the
# release is a plain number (this commit set VERSION, see packaging/version.sh;
# PKG_RELEASE=N rebuilds a release on purpose); the work tree is clean;
# CHANGELOG.md has the version's section; the binary reports VERSION and the
# commit being released.
set -euo pipefail
out=${1:?usage: release.sh OUTDIR}
: "${PKG_VERSION:?}" "${PKG_RELEASE:?}"
BINARY=${BINARY:-bin/dsr-agent}
fail() {
	echo "release: $*" >&2
	exit 1
}

version=$(cat VERSION)
[ "$PKG_VERSION" = "$version" ] || fail "PKG_VERSION is $PKG_VERSION but VERSION says $version"
[[ $PKG_RELEASE =~ ^[1-9][0-9]*$ ]] ||
	fail "this commit is not the release of $version (package release $PKG_RELEASE: commits since VERSION changed). To release it, bump VERSION and date its CHANGELOG.md section in one commit (docs/packaging.md, Releases); PKG_RELEASE=N rebuilds $version on purpose"
commit=
if git rev-parse --git-dir >/dev/null 2>&1; then
	[ -z "$(git status --porcelain)" ] || fail "the work tree has uncommitted or untracked files (git status): a release is built from a commit"
	commit=$(git rev-parse --short=12 HEAD)
fi
grep -Eq "^## \[$version\] - [0-9]{4}-[0-9]{2}-[0-9]{2}\$" CHANGELOG.md ||
	fail "CHANGELOG.md has no '## [$version] - YYYY-MM-DD' section"
ver=$("$BINARY" --version)
if [ -n "$commit" ]; then
	[ "$ver" = "dsr-agent $version (commit $commit)" ] ||
		fail "$BINARY --version says '$ver': expected 'dsr-agent $version (commit $commit)' (make build at this commit)"
elif ! [[ $ver =~ ^dsr-agent\ $version\ \(commit\ [0-9a-f]{7,}\)$ ]]; then
	fail "$BINARY --version says '$ver': expected 'dsr-agent $version (commit SHA)' (outside git: make COMMIT=SHA)"
fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/dsr-agent-release.XXXXXX")
trap 'rm -rf "$stage"' EXIT
packaging/build.sh "$stage" rpm deb
(cd "$stage" && sha256sum -- *.rpm *.deb >SHA256SUMS)
mkdir -p "$out"
mv -f -- "$stage"/*.rpm "$stage"/*.deb "$stage"/SHA256SUMS "$out"/
echo "release $version-$PKG_RELEASE (commit ${commit:-?}) in $out:"
sed 's/^/  /' "$out/SHA256SUMS"
