#!/usr/bin/env bash
# Installs what `make dev` and `make test` need, or says in one command how
# to. The one place that knows the project's machine dependencies: the
# Makefile (`make deps`, `make test`, `make dev`) and .ci/run call it.
#
#   scripts/deps.sh            everything `make test` needs
#   scripts/deps.sh postgres   only the PostgreSQL server binaries (`make dev`)
#
# Debian packages (apt-get update once, then one apt-get install) when run
# as root on Debian/Ubuntu: postgresql (initdb, pg_ctl, pg_recvlogical),
# chromium at /usr/bin/chromium (or $CHROMIUM) and nodejs + npm for the
# browser test, redis-server for the multi-node tests. Not root, or no
# apt-get: it installs nothing, prints the one command to run and fails
# before anything else runs. Then staticcheck, pinned, with `go install`
# (no root needed: it goes to the user's GOBIN or GOPATH/bin).
#
# Test hooks: DEPS_UID stands in for `id -u`; DEPS_DRY_RUN=1 prints the
# commands instead of running them.
set -euo pipefail

STATICCHECK_VERSION=v0.8.2 # the version `make lint` runs; change it here only

want_postgres=1 want_test=1
case "${1:-all}" in
all) ;;
postgres) want_test=0 ;;
*)
  echo "usage: scripts/deps.sh [postgres]" >&2
  exit 2
  ;;
esac

run() {
  if [ "${DEPS_DRY_RUN:-0}" = 1 ]; then
    echo "would run: $*"
  else
    "$@"
  fi
}

have() { command -v "$1" >/dev/null 2>&1; }

missing=() # Debian packages
why=()     # what each stands for, for the message
need() { missing+=("$1"); why+=("$2"); }

if [ "$want_postgres" = 1 ] && ! have initdb && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need postgresql "PostgreSQL server binaries (initdb, pg_ctl)"
fi
if [ "$want_test" = 1 ]; then
  chromium="${CHROMIUM:-/usr/bin/chromium}"
  if [ ! -x "$chromium" ]; then
    need chromium "Chromium at $chromium (browser test)"
  fi
  if ! have node; then
    need nodejs "node (browser test)"
  fi
  if ! have npm; then
    need npm "npm (browser test: playwright-core)"
  fi
  if ! have redis-server; then
    need redis-server "redis-server (multi-node tests)"
  fi
fi

if [ "${#missing[@]}" -gt 0 ]; then
  uid="${DEPS_UID:-$(id -u)}"
  if [ "$uid" = 0 ] && have apt-get; then
    echo "installing ${missing[*]}"
    run apt-get update -qq
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "missing:" >&2
    for w in "${why[@]}"; do echo "  - $w" >&2; done
    echo "install them with this command, then run make again:" >&2
    echo "    sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

if [ "$want_test" = 1 ]; then
  go=go
  have go || go=/usr/local/go/bin/go
  if ! "$go" version >/dev/null 2>&1; then
    echo "go is missing: install Go (see go.mod for the version), then run make again" >&2
    exit 1
  fi
  bin="$("$go" env GOBIN)"
  [ -n "$bin" ] || bin="$("$go" env GOPATH)/bin"
  if ! "$bin/staticcheck" -version 2>/dev/null | grep -q "(${STATICCHECK_VERSION#v})"; then
    echo "installing staticcheck $STATICCHECK_VERSION into $bin"
    run "$go" install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
  fi
fi
