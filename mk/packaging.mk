# Packaging: RPM and DEB with nfpm (issue 5). Included by the top Makefile.
#   make rpm / make deb   -> dist/dsr-agent-VERSION-RELEASE.ARCH.rpm, dist/dsr-agent_VERSION-RELEASE_ARCH.deb
#   make test-packaging   -> packaging/test/test-packages.sh on freshly built packages
NFPM_VERSION := v2.45.0
NFPM := $(GOBIN_DIR)/nfpm
DIST := dist

# Package version and release (packaging/version.sh, no git tags needed):
# VERSION, release 1 at the commit that set it (the release commit, on the
# first-parent line), N+1.gSHA for a build N commits later (sorts after the
# release, before the next version); `make release` builds only release commits.
PKG_VR := $(shell packaging/version.sh)
PKG_VERSION ?= $(word 1,$(PKG_VR))
PKG_RELEASE ?= $(word 2,$(PKG_VR))
PKG_ENV := PKG_VERSION=$(PKG_VERSION) PKG_RELEASE=$(PKG_RELEASE) NFPM=$(NFPM)

.PHONY: rpm deb packages test-packaging
TEST_TARGETS += test-packaging
TEST_DEPS += packaging

## rpm / deb: build the package into dist/ (static, version-stamped binary).
rpm: $(BIN)/dsr-agent $(NFPM)
	$(PKG_ENV) packaging/build.sh $(DIST) rpm

deb: $(BIN)/dsr-agent $(NFPM)
	$(PKG_ENV) packaging/build.sh $(DIST) deb

packages: rpm deb

$(NFPM):
	GOBIN=$(GOBIN_DIR) $(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)

## test-packaging: contents, scriptlets, install/upgrade/erase in scratch roots,
## systemd-analyze verify + security of the unit, the unit under a real systemd
## in systemd-nspawn (root; packages in mk/packaging.packages).
test-packaging: $(BIN)/dsr-agent $(NFPM)
	$(PKG_ENV) packaging/test/test-packages.sh
