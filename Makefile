# pgrealtime — see README.md. `make dev` and `make test` are the two commands
# a newcomer runs.
GO ?= go
export PATH := /usr/local/go/bin:$(PATH)

.PHONY: build dev test test-go vet bench bench-quick clean

build:
	$(GO) build -o bin/pgrealtime ./cmd/pgrealtime

dev:
	@echo "make dev: coming with the newcomer issue (#5)"

vet:
	$(GO) vet ./...

test-go:
	$(GO) test -race -timeout 30m ./...

test: vet test-go

clean:
	rm -rf bin
