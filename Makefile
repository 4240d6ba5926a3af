# pgrealtime — see README.md. `make dev` and `make test` are the two commands
# a newcomer runs.
GO ?= go
export PATH := /usr/local/go/bin:$(PATH)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: build dev test test-go test-browser test-js test-supabase vet cross lint deps bench bench-quick clean postgres

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/pgrealtime ./cmd/pgrealtime

# Installs the PostgreSQL server binaries when they are missing (as root on
# Debian/Ubuntu; otherwise prints the command), builds, and runs
# `pgrealtime dev`. Pass flags with ARGS, e.g. make dev ARGS="--listen :9090".
dev: postgres build
	./bin/pgrealtime dev $(ARGS)

postgres:
	@./scripts/deps.sh postgres

# Installs what the tests need when it is missing (Postgres, Chromium,
# node/npm, redis-server: as root on Debian/Ubuntu, otherwise it prints the
# one command to run and stops; staticcheck, pinned, with go install).
deps:
	@./scripts/deps.sh

vet:
	$(GO) vet ./...

# The server builds for macOS and Windows too (wsapi's non-blocking
# write(2) path is Unix-only; elsewhere a portable fallback is used).
cross:
	GOOS=darwin $(GO) build ./...
	GOOS=windows $(GO) build ./...

# staticcheck at the version scripts/deps.sh pins (and installs).
lint: deps
	"$$($(GO) env GOBIN | grep . || echo "$$($(GO) env GOPATH)/bin")/staticcheck" ./...

test-go: deps
	$(GO) test -race -timeout 30m ./...

# Browser test (headless Chromium at /usr/bin/chromium, playwright-core from
# npm; no browser download): the inspector against the real binary and a
# throwaway Postgres. See browsertest/inspector.test.mjs.
test-browser: deps build
	cd browsertest && npm ci --no-audit --no-fund && PGREALTIME_BIN=$(CURDIR)/bin/pgrealtime node --test

# The JavaScript client (clients/js): build, size (<= 4 KB min+gzip, and the
# inspector's committed copy up to date), type check of the public API, then
# its tests against the real binary and a throwaway Postgres.
test-js: deps build
	cd clients/js && npm ci --no-audit --no-fund && npm run build && npm run typecheck && \
		PGREALTIME_BIN=$(CURDIR)/bin/pgrealtime node --test --test-concurrency=1 test/

# The unmodified @supabase/supabase-js (Node with ws, and headless Chromium)
# against /realtime/v1/websocket, the real binary and a throwaway Postgres;
# cluster.test.mjs also against two nodes on a throwaway redis-server (with
# CI=true a missing redis-server fails). See supabasetest/.
test-supabase: deps build
	cd supabasetest && npm ci --no-audit --no-fund && PGREALTIME_BIN=$(CURDIR)/bin/pgrealtime node --test

test: deps vet cross lint test-go test-js test-browser test-supabase bench-quick

# Benchmarks (issue 6): a throwaway Postgres, pgrealtime as its own process,
# clients in their own processes. `bench` writes docs/benchmarks.md and
# docs/benchmarks.png (under 10 minutes); `bench-quick` (under 2 minutes)
# only proves that every measurement runs.
bench: postgres build
	$(GO) build -o bin/pgrealtime-bench ./cmd/pgrealtime-bench
	./bin/pgrealtime-bench --pgrealtime bin/pgrealtime --markdown docs/benchmarks.md --chart docs/benchmarks.png

bench-quick: deps build
	$(GO) build -o bin/pgrealtime-bench ./cmd/pgrealtime-bench
	./bin/pgrealtime-bench --quick --pgrealtime bin/pgrealtime --markdown bin/benchmarks-quick.md --chart bin/benchmarks-quick.png

clean:
	rm -rf bin
