# Releases (issue 18 point 5). Included by the top Makefile.
#   make release        dist/: dsr-agent-VERSION-1.ARCH.rpm, dsr-agent_VERSION-1_ARCH.deb
#                       and SHA256SUMS, from the commit that set VERSION, clean
#                       tree (packaging/release.sh says why it refuses)
#   make test-release   packaging/test/test-release.sh: version.sh's numbering in
#                       scratch repositories, and make release end to end in a
#                       scratch copy of this tree (plus its refusals)
.PHONY: release test-release
TEST_TARGETS += test-release

## release: the RPM, the DEB and SHA256SUMS of VERSION in dist/ (release commits only).
release: $(BIN)/dsr-agent $(NFPM)
	$(PKG_ENV) packaging/release.sh $(DIST)

## test-release: package numbering without tags and make release end to end (root for nothing; needs rpm, dpkg).
test-release: $(NFPM)
	NFPM=$(NFPM) GO=$(GO) packaging/test/test-release.sh
