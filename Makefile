# hamirror — build, test, benchmark and demo.
#
#   make demo    the HA pair's story on a network-namespace lab (root; installs
#                what it needs with make deps): a node killed, an array lost
#   make demo-volume  the volume alone: two file legs, a leg failed and resynced
#   make test    go vet + every test (root, netns and QEMU tests included)
#   make bench   the benchmarks, peers side by side, ratios printed
#   make lab     start the QEMU lab interactively
#   make install binaries, systemd unit, example config, man pages, bash completion
#                (DESTDIR, PREFIX=/usr/local; make uninstall removes them)
#   make deb     a .deb in bin/ built with dpkg-deb (DEB_VERSION, DEB_ARCH, DEB_COMPRESS)

GO      ?= go
PREFIX  ?= /usr/local
BIN     := bin
GOFLAGS ?=
export CGO_ENABLED ?= 0

CMDS := mirrord mirrorctl

.PHONY: all build test vet unit bench demo demo-volume install uninstall deb lab fuzz clean deps

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build $(GOFLAGS) -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

vet:
	$(GO) vet ./...

# The whole ladder: pure unit tests, in-process fakes, netns/pty tests and the
# QEMU lab. Tests that need root, tgtd or QEMU skip loudly when those are
# truly absent (a developer laptop); CI is root and installs them (.ci/run).
test: vet build
	$(GO) test -count=1 -timeout 60m ./...

unit:
	$(GO) test -count=1 -short ./...

# Short fuzzing runs of every decoder; `make fuzz FUZZTIME=10m` to go longer.
FUZZTIME ?= 20s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# SECTIONS picks sections (nbd lab heartbeat engine iscsi failover); soak,
# the fast profile for HAMIRROR_SOAK (10m) under full CPU and I/O load, runs
# only when named: make bench SECTIONS=soak.
bench: build
	$(GO) run ./testenv/cmd/hamirror-bench $(SECTIONS)

# The HA pair's story (testenv/hademo): two nodes and two tgtd arrays in
# network namespaces, PostgreSQL behind the VIP, the active node killed, an
# array lost and resynced, then everything torn down (also on Ctrl-C).
# It runs make deps first when a package it needs is missing.
demo: build
	@[ "$$(id -u)" = 0 ] || { echo "make demo needs root (network namespaces, tgtd, loop devices, mounts)"; exit 1; }
	$(GO) build $(GOFLAGS) -o $(BIN)/ ./testenv/cmd/hamirror-hademo
	@$(BIN)/hamirror-hademo --check 2>/dev/null || { echo "installing what the demo needs (make deps) ..."; $(MAKE) --no-print-directory deps; }
	$(BIN)/hamirror-hademo --bin $(BIN)

# The volume alone: two file legs mirrored by `mirrord volume`, served over
# NBD, a leg failed, re-added and resynced, verified.
demo-volume: build
	$(GO) run ./testenv/cmd/hamirror-demo

lab: build
	$(GO) run ./testenv/cmd/hamirror-lab

# Where `make install` puts things. The units and the example config keep
# their system paths whatever PREFIX is (systemd and mirrord look there);
# an existing /etc/hamirror/cluster.yaml is never touched.
SBINDIR     ?= $(PREFIX)/sbin
MANDIR      ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
UNITDIR     ?= /lib/systemd/system
SYSCONFDIR  ?= /etc
UNITS       := $(notdir $(wildcard systemd/*))
# Man pages carry the date of the last commit (reproducible builds).
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || date +%s)
export SOURCE_DATE_EPOCH

install: build
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/hamirror \
		$(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(BASHCOMPDIR)
	install -m 0755 $(addprefix $(BIN)/,$(CMDS)) $(DESTDIR)$(SBINDIR)/
	set -e; for u in $(UNITS); do \
		sed -e 's|/usr/local/sbin/|$(SBINDIR)/|g' -e 's|/etc/hamirror/|$(SYSCONFDIR)/hamirror/|g' \
			systemd/$$u > $(DESTDIR)$(UNITDIR)/$$u; chmod 0644 $(DESTDIR)$(UNITDIR)/$$u; done
	install -m 0644 docs/cluster.example.yaml $(DESTDIR)$(SYSCONFDIR)/hamirror/cluster.yaml.example
	set -e; for c in $(CMDS); do \
		$(BIN)/$$c completion bash > $(DESTDIR)$(BASHCOMPDIR)/$$c; chmod 0644 $(DESTDIR)$(BASHCOMPDIR)/$$c; done
	rm -rf $(BIN)/man
	set -e; for c in $(CMDS); do $(BIN)/$$c man $(BIN)/man; done
	set -e; for f in $(BIN)/man/*.8; do \
		gzip -9n < $$f > $(DESTDIR)$(MANDIR)/man8/$${f##*/}.gz; chmod 0644 $(DESTDIR)$(MANDIR)/man8/$${f##*/}.gz; done

# Removes what `make install` put there; cluster.yaml and the state in
# /var/lib/hamirror stay.
uninstall:
	rm -f $(addprefix $(DESTDIR)$(SBINDIR)/,$(CMDS)) $(addprefix $(DESTDIR)$(BASHCOMPDIR)/,$(CMDS))
	rm -f $(addprefix $(DESTDIR)$(UNITDIR)/,$(UNITS)) $(DESTDIR)$(SYSCONFDIR)/hamirror/cluster.yaml.example
	rm -f $(addprefix $(DESTDIR)$(MANDIR)/man8/,$(addsuffix .8.gz,$(CMDS))) \
		$(foreach c,$(CMDS),$(wildcard $(DESTDIR)$(MANDIR)/man8/$(c)-*.8.gz))
	rm -f $(DESTDIR)$(OCF_ROOT)/resource.d/hamirror/volume
	rmdir $(DESTDIR)$(OCF_ROOT)/resource.d/hamirror 2>/dev/null || true

# A binary .deb of what `make install` installs with PREFIX=/usr, built by
# dpkg-deb alone (packaging/deb holds its control file and maintainer
# scripts; packaging's test installs it into a throwaway root). The
# version comes from the last commit unless DEB_VERSION says.
GIT_HASH    := $(shell git log -1 --format=%h 2>/dev/null)
DEB_VERSION ?= $(if $(GIT_HASH),0.1~git$(shell git log -1 --format=%cd --date=format:%Y%m%d).$(GIT_HASH),0.1)
DEB_ARCH    ?= $(shell dpkg --print-architecture 2>/dev/null || $(GO) env GOARCH)
DEB_ROOT    := $(BIN)/deb-root
DEB_FILE    := $(BIN)/hamirror_$(DEB_VERSION)_$(DEB_ARCH).deb
# dpkg-deb's compression; the test uses a fast one (xz takes ~30 s here).
DEB_COMPRESS ?= -Zxz

deb:
	rm -rf $(DEB_ROOT)
	$(MAKE) install DESTDIR=$(abspath $(DEB_ROOT)) PREFIX=/usr
	install -d $(DEB_ROOT)/DEBIAN $(DEB_ROOT)/usr/share/doc/hamirror
	install -m 0644 NOTICE $(DEB_ROOT)/usr/share/doc/hamirror/copyright
	sed -e 's|@VERSION@|$(DEB_VERSION)|' -e 's|@ARCH@|$(DEB_ARCH)|' \
		-e "s|@SIZE@|$$(du -sk $(DEB_ROOT) | cut -f1)|" packaging/deb/control > $(DEB_ROOT)/DEBIAN/control
	install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm $(DEB_ROOT)/DEBIAN/
	echo $(SYSCONFDIR)/hamirror/cluster.yaml.example > $(DEB_ROOT)/DEBIAN/conffiles
	cd $(DEB_ROOT) && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum > DEBIAN/md5sums
	dpkg-deb --root-owner-group $(DEB_COMPRESS) --build $(DEB_ROOT) $(DEB_FILE)
	@echo "built $(DEB_FILE)"

# Debian packages the tests and benchmarks use (CI runs this through .ci/run).
APT_PACKAGES := tgt libnbd-bin python3-libnbd nbdkit qemu-utils qemu-system-x86 qemu-block-extra \
	fio libiscsi-bin busybox-static cpio iproute2 mdadm \
	dmsetup e2fsprogs xfsprogs dbus-daemon iputils-ping \
	postgresql-15 keepalived pacemaker corosync resource-agents
# Daemons in these packages (PostgreSQL, keepalived, Corosync) must not start
# on the host at install: the tests start their own. policy-rc.d says so to
# invoke-rc.d when the machine has none.
deps:
	[ -e /usr/sbin/policy-rc.d ] || printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES)

# The OCF resource agent ocf:hamirror:volume, for Pacemaker (resources/ocf,
# docs/PACEMAKER.md). `make install` installs it too; Pacemaker looks for it
# under OCF_ROOT whatever PREFIX is.
OCF_ROOT ?= /usr/lib/ocf
.PHONY: install-ocf
install: install-ocf
install-ocf:
	install -d $(DESTDIR)$(OCF_ROOT)/resource.d/hamirror
	install -m 0755 resources/ocf/hamirror/volume $(DESTDIR)$(OCF_ROOT)/resource.d/hamirror/volume

# xmllint: ocf-tester (resource-agents) checks the agent's meta-data with it;
# shellcheck keeps the agent POSIX sh.
APT_PACKAGES += libxml2-utils shellcheck

clean:
	rm -rf $(BIN)
