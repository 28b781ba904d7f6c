# hamirror — build, test, benchmark and demo.
#
#   make demo    the HA pair's story on a network-namespace lab (root; installs
#                what it needs with make deps): a node killed, an array lost
#   make demo-volume  the volume alone: two file legs, a leg failed and resynced
#   make test    go vet + every test (root, netns and QEMU tests included)
#   make bench   the benchmarks, peers side by side, ratios printed
#   make lab     start the QEMU lab interactively

GO      ?= go
PREFIX  ?= /usr/local
BIN     := bin
GOFLAGS ?=
export CGO_ENABLED ?= 0

CMDS := mirrord mirrorctl

.PHONY: all build test vet unit bench demo demo-volume install lab fuzz clean deps

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

install: build
	install -d $(DESTDIR)$(PREFIX)/sbin
	install -m 0755 $(addprefix $(BIN)/,$(CMDS)) $(DESTDIR)$(PREFIX)/sbin/
	if [ -d systemd ]; then install -d $(DESTDIR)/lib/systemd/system && install -m 0644 systemd/*.service $(DESTDIR)/lib/systemd/system/ 2>/dev/null || true; fi

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
