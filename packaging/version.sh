#!/usr/bin/env bash
# Print the package version and release of this checkout: "VERSION RELEASE".
#
#   VERSION   the VERSION file (MAJOR.MINOR.PATCH): RPM Version, Debian
#             upstream version
#   RELEASE   1         at the release commit: the last commit on the
#                       first-parent line that changed VERSION (a merge that
#                       brings in a bump is that commit)
#             N+1.gSHA  N first-parent commits after it: a snapshot, which
#                       sorts after VERSION-1 and before the next version in
#                       rpm and dpkg alike
#             1         outside git (a source tarball of a release)
#
# Git tags are not read: a tag vX.Y.Z may mirror a release, the build never
# depends on one. Exit 2 when VERSION is not MAJOR.MINOR.PATCH.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(cat VERSION)
if ! [[ $version =~ ^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$ ]]; then
	echo "version.sh: VERSION is '$version': expected MAJOR.MINOR.PATCH (digits only)" >&2
	exit 2
fi
if ! git rev-parse --git-dir >/dev/null 2>&1; then
	echo "$version 1"
	exit 0
fi
sha=$(git rev-parse --short=12 HEAD)
base=$(git log -1 --first-parent --format=%H -- VERSION)
if [ -n "$base" ]; then
	n=$(git rev-list --count --first-parent "$base..HEAD")
else
	# VERSION not committed yet: a snapshot of whatever HEAD is.
	n=$(git rev-list --count --first-parent HEAD)
fi
if [ "$n" -eq 0 ]; then
	echo "$version 1"
else
	echo "$version $((n + 1)).g$sha"
fi
