# Packaging: RPM and DEB with nfpm (issue 5). Included by the top Makefile.
#   make rpm / make deb   -> dist/dsr-agent-VERSION-RELEASE.ARCH.rpm, dist/dsr-agent_VERSION-RELEASE_ARCH.deb
#   make test-packaging   -> packaging/test/test-packages.sh on freshly built packages
NFPM_VERSION := v2.45.0
NFPM := $(GOBIN_DIR)/nfpm
DIST := dist

# Package version: from the newest vX.Y.Z tag (release = commits since it + 1,
# plus the commit when past the tag); 0.0.0 with release 0.N.gSHA before any tag.
PKG_DESCRIBE := $(shell git describe --tags --long --match 'v[0-9]*' 2>/dev/null)
ifneq ($(PKG_DESCRIBE),)
PKG_VERSION ?= $(patsubst v%,%,$(word 1,$(subst -, ,$(PKG_DESCRIBE))))
PKG_DISTANCE := $(word 2,$(subst -, ,$(PKG_DESCRIBE)))
PKG_RELEASE ?= $(if $(filter 0,$(PKG_DISTANCE)),1,$(shell echo $$(($(PKG_DISTANCE)+1))).g$(COMMIT))
else
PKG_VERSION ?= 0.0.0
PKG_RELEASE ?= 0.$(shell git rev-list --count HEAD 2>/dev/null || echo 0).g$(COMMIT)
endif
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
