#!/usr/bin/env bash
# Tests of the release plumbing (make test-release):
#   - packaging/version.sh in scratch git repositories: release 1 at the
#     commit that set VERSION (also when a merge brings it), N+1.gSHA after
#     it, 1 outside git, exit 2 for a VERSION that is not MAJOR.MINOR.PATCH;
#     snapshot and release order the same way in rpm and dpkg;
#   - make release end to end in a scratch copy of this work tree with VERSION
#     bumped to 9.9.9 in one commit: both packages and SHA256SUMS in dist/,
#     checksums verify, package versions 9.9.9-1, the packaged binary reports
#     9.9.9 and the commit, the monitoring files are in both packages;
#   - its refusals, each before building: a commit past the release, a dirty
#     tree, a missing CHANGELOG section, a binary of another version.
# Environment: NFPM (the pinned nfpm), GO.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
TAP_NAME=release
. packaging/test/tap.sh
NFPM=${NFPM:-$root/bin/tools/nfpm}
GO=${GO:-go}
need_tools "make deps-packaging; bin/tools/nfpm: make rpm" git rpm dpkg dpkg-deb sha256sum "$NFPM"

work=$(mktemp -d "${TMPDIR:-/tmp}/dsr-agent-reltest.XXXXXX")
trap 'rm -rf "$work"' EXIT
export GIT_AUTHOR_NAME=test GIT_AUTHOR_EMAIL=test@example.invalid GIT_COMMITTER_NAME=test GIT_COMMITTER_EMAIL=test@example.invalid
g() { git -C "$repo" "$@" >/dev/null; }
vr() { "$repo/packaging/version.sh" 2>&1; }
sha() { git -C "$repo" rev-parse --short=12 HEAD; }

# ---------------------------------------------------------------- version.sh
repo=$work/numbering
mkdir -p "$repo/packaging"
cp packaging/version.sh "$repo/packaging/"
git init -q -b main "$repo"
echo 0.1.0 >"$repo/VERSION"
g add -A && g commit -qm "release 0.1.0"
same "the commit that sets VERSION is release 1" "0.1.0 1" "$(vr)"
g commit -q --allow-empty -m "work"
s1=$(sha)
same "one commit later: release 2.gSHA" "0.1.0 2.g$s1" "$(vr)"
g commit -q --allow-empty -m "more work"
same "two commits later: release 3.gSHA" "0.1.0 3.g$(sha)" "$(vr)"
g checkout -q -b feature
echo 0.2.0 >"$repo/VERSION"
g commit -qam "release 0.2.0"
g commit -q --allow-empty -m "after the bump, on the branch"
g checkout -q main
g merge -q --no-ff -m "merge feature" feature
same "a merge that brings the bump is release 1" "0.2.0 1" "$(vr)"
g commit -q --allow-empty -m "after the merge"
same "counted on the first-parent line" "0.2.0 2.g$(sha)" "$(vr)"
echo 0.2 >"$repo/VERSION"
out=$(vr)
rc=$?
[ $rc -eq 2 ] && [[ $out == *"'0.2': expected MAJOR.MINOR.PATCH"* ]] && ok "VERSION 0.2 refused (exit 2): $out" || bad "VERSION 0.2: exit $rc: $out"
echo 0.2.0 >"$repo/VERSION"
mkdir -p "$work/tarball/packaging"
cp packaging/version.sh "$work/tarball/packaging/"
echo 1.2.3 >"$work/tarball/VERSION"
same "outside git: release 1" "1.2.3 1" "$("$work/tarball/packaging/version.sh")"
# Snapshot < release < snapshot after it < next version, in both tools.
order=("0.1.0-0.1.g1" "0.1.0-1" "0.1.0-2.g$s1" "0.1.0-10.g$s1" "0.2.0-1")
for ((i = 0; i + 1 < ${#order[@]}; i++)); do
	a=${order[i]} b=${order[i + 1]}
	if dpkg --compare-versions "$a" lt "$b" &&
		[ "$(rpm --eval "%{lua: print(rpm.vercmp('$a', '$b'))}")" = -1 ]; then
		ok "$a sorts before $b (dpkg and rpm)"
	else
		bad "$a sorts before $b (dpkg and rpm)"
	fi
done

# ---------------------------------------------------------------- make release
# A scratch copy of this work tree (tracked and untracked files, not ignored
# ones) as one commit that bumps VERSION to 9.9.9: a release commit.
src=$work/src
mkdir -p "$src"
git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$src" 2>/dev/null
repo=$src
echo 9.9.9 >"$src/VERSION"
sed -i 's/^## \[Unreleased\]$/## [Unreleased]\n\n## [9.9.9] - 2030-01-02/' "$src/CHANGELOG.md"
git init -q -b main "$src" && g add -A && g commit -qm "release 9.9.9"
head=$(sha)
mk() { make -C "$src" --no-print-directory NFPM="$NFPM" GO="$GO" "$@" 2>&1; }
if out=$(mk release); then
	ok "make release at the release commit"
else
	bad "make release at the release commit: $out"
	finish
fi
dist=$src/dist
same "dist/: the two packages and SHA256SUMS" "SHA256SUMS
dsr-agent-9.9.9-1.$(uname -m).rpm
dsr-agent_9.9.9-1_$("$GO" env GOARCH).deb" "$(ls "$dist")"
same "SHA256SUMS verifies" "$(cd "$dist" && ls ./*.rpm ./*.deb | sed 's|^\./||; s/$/: OK/')" "$(cd "$dist" && sha256sum -c SHA256SUMS 2>&1)"
rpmf=$(echo "$dist"/*.rpm)
debf=$(echo "$dist"/*.deb)
same "rpm version-release" "9.9.9-1" "$(rpm -qp --qf '%{VERSION}-%{RELEASE}' "$rpmf" 2>/dev/null)"
same "deb version" "9.9.9-1" "$(dpkg-deb -f "$debf" Version)"
dx=$work/debx
dpkg-deb -x "$debf" "$dx"
same "the packaged binary reports 9.9.9 and the release commit" "dsr-agent 9.9.9 (commit $head)" "$("$dx/usr/bin/dsr-agent" --version)"
rpmfiles=$(rpm -qlp "$rpmf" 2>/dev/null)
for f in /usr/share/dsr-agent/prometheus/dsr-agent.rules.yml /usr/share/dsr-agent/grafana/dsr-agent-pool.json /usr/share/doc/dsr-agent/CHANGELOG.md; do
	if grep -qx "$f" <<<"$rpmfiles" && [ -f "$dx$f" ]; then ok "both packages ship $f"; else bad "both packages ship $f"; fi
done
grep -q "9.9.9" <<<"$out" && ok "make release prints the checksums" || bad "make release output: $out"

# ---------------------------------------------------------------- refusals
rel() { # run release.sh as make does, with the binary make release built
	(cd "$src" && PKG_VERSION=$(cut -d' ' -f1 <<<"$(packaging/version.sh)") PKG_RELEASE=$(cut -d' ' -f2 <<<"$(packaging/version.sh)") \
		NFPM=$NFPM "$@" packaging/release.sh "$work/refused" 2>&1)
}
refused() { # DESC WANT-IN-MESSAGE [ENV...]
	local desc=$1 want=$2 out rc
	shift 2
	out=$(rel "$@")
	rc=$?
	if [ $rc -ne 0 ] && [[ $out == *"$want"* ]] && [ ! -e "$work/refused" ]; then
		ok "refused: $desc"
	else
		bad "refused: $desc (exit $rc, nothing built): $out"
	fi
}
echo "# scratch" >"$src/untracked-file"
refused "a dirty work tree" "uncommitted or untracked files"
rm "$src/untracked-file"
g commit -q --allow-empty -m "after the release"
refused "a commit past the release" "this commit is not the release of 9.9.9 (package release 2.g"
g reset -q --hard HEAD~1
printf '#!/bin/sh\necho "dsr-agent 9.9.9 (commit 0123456789ab)"\n' >"$work/other-binary"
chmod +x "$work/other-binary"
refused "a binary of another commit" "expected 'dsr-agent 9.9.9 (commit $head)'" env BINARY="$work/other-binary"
sed -i 's/^## \[9.9.9\] - 2030-01-02$/## [9.9.9]/' "$src/CHANGELOG.md"
g commit -qam "undated changelog"
refused "no dated CHANGELOG section" "CHANGELOG.md has no '## [9.9.9] - YYYY-MM-DD' section" env PKG_RELEASE=1

finish
