# pgrealtime — see README.md. `make dev` and `make test` are the two commands
# a newcomer runs.
GO ?= go
export PATH := /usr/local/go/bin:$(PATH)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: build dev test test-go test-browser vet cross bench bench-quick clean postgres

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/pgrealtime ./cmd/pgrealtime

# Installs the PostgreSQL server binaries when they are missing (as root on
# Debian/Ubuntu; otherwise prints the command), builds, and runs
# `pgrealtime dev`. Pass flags with ARGS, e.g. make dev ARGS="--listen :9090".
dev: postgres build
	./bin/pgrealtime dev $(ARGS)

postgres:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing postgresql (server binaries for the throwaway dev database)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	else \
		echo "PostgreSQL server binaries (initdb, pg_ctl) are missing. Install them, then run make dev again:"; \
		echo "    sudo apt-get install -y postgresql"; \
		exit 1; \
	fi

vet:
	$(GO) vet ./...

# The server builds for macOS and Windows too (wsapi's non-blocking
# write(2) path is Unix-only; elsewhere a portable fallback is used).
cross:
	GOOS=darwin $(GO) build ./...
	GOOS=windows $(GO) build ./...

test-go:
	$(GO) test -race -timeout 30m ./...

# Browser test (headless Chromium at /usr/bin/chromium, playwright-core from
# npm; no browser download): the inspector against the real binary and a
# throwaway Postgres. See browsertest/inspector.test.mjs.
test-browser: build
	cd browsertest && npm ci --no-audit --no-fund && PGREALTIME_BIN=$(CURDIR)/bin/pgrealtime node --test

test: vet cross test-go test-browser bench-quick

# Benchmarks (issue 6): a throwaway Postgres, pgrealtime as its own process,
# clients in their own processes. `bench` writes docs/benchmarks.md and
# docs/benchmarks.png (under 10 minutes); `bench-quick` (under 2 minutes)
# only proves that every measurement runs.
bench: build
	$(GO) build -o bin/pgrealtime-bench ./cmd/pgrealtime-bench
	./bin/pgrealtime-bench --pgrealtime bin/pgrealtime --markdown docs/benchmarks.md --chart docs/benchmarks.png

bench-quick: build
	$(GO) build -o bin/pgrealtime-bench ./cmd/pgrealtime-bench
	./bin/pgrealtime-bench --quick --pgrealtime bin/pgrealtime --markdown bin/benchmarks-quick.md --chart bin/benchmarks-quick.png

clean:
	rm -rf bin
