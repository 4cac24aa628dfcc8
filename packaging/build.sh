#!/usr/bin/env bash
# Build the dsr-agent RPM and/or DEB with nfpm.
#   packaging/build.sh OUTDIR rpm|deb...
# Environment (set by mk/packaging.mk; the tests override some):
#   PKG_VERSION, PKG_RELEASE   package version and release (required)
#   PKG_ARCH                   nfpm/GOARCH name (default: go env GOARCH)
#   BINARY                     the static, version-stamped binary (default bin/dsr-agent)
#   CONFIG_SRC                 the shipped config (default packaging/config.yaml)
#   NFPM                       the pinned nfpm (default bin/tools/nfpm)
# Run from the repository root. The man page and bash completion are generated
# by the binary itself (hidden commands gen-man, gen-completion), so they
# always match the CLI that ships.
set -euo pipefail
out=${1:?usage: build.sh OUTDIR rpm|deb...}
shift
[ $# -gt 0 ] || set -- rpm deb
: "${PKG_VERSION:?}" "${PKG_RELEASE:?}"
BINARY=${BINARY:-bin/dsr-agent}
NFPM=${NFPM:-bin/tools/nfpm}
export PKG_VERSION PKG_RELEASE
export PKG_ARCH=${PKG_ARCH:-$(go env GOARCH)}
export CONFIG_SRC=${CONFIG_SRC:-packaging/config.yaml}

# A static binary: the package declares no library dependencies.
if ldd "$BINARY" >/dev/null 2>&1; then
	echo "build.sh: $BINARY is dynamically linked; build it with CGO_ENABLED=0" >&2
	exit 1
fi

mkdir -p "$out"
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/dsr-agent-stage.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
export STAGE
install -m 0755 "$BINARY" "$STAGE/dsr-agent"
"$STAGE/dsr-agent" gen-man | gzip -9n >"$STAGE/dsr-agent.8.gz"
"$STAGE/dsr-agent" gen-completion bash >"$STAGE/dsr-agent.bash"
if [ -f README.md ]; then
	cp README.md "$STAGE/README.md"
else
	printf 'dsr-agent: see man dsr-agent and /usr/share/doc/dsr-agent/packaging.md\n' >"$STAGE/README.md"
fi

# nfpm expands ${VAR} in version, release and arch but not in contents paths:
# render those two here.
sed -e "s|\${STAGE}|$STAGE|g" -e "s|\${CONFIG_SRC}|$CONFIG_SRC|g" packaging/nfpm.yaml >"$STAGE/nfpm.yaml"

for fmt in "$@"; do
	"$NFPM" package --config "$STAGE/nfpm.yaml" --packager "$fmt" --target "$out/" >&2
done
