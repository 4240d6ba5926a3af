package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// depsScript runs scripts/deps.sh (what `make test` and `make dev` run
// first) with only the commands in tools on PATH, Chromium looked for at a
// path that does not exist, and env added. It never installs anything:
// a run as root is a dry run.
func depsScript(t *testing.T, tools []string, env ...string) (string, error) {
	t.Helper()
	dir := t.TempDir()
	for _, name := range tools {
		p, err := exec.LookPath(name)
		if err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not installed: %v", name, err)
			}
			t.Skipf("%s not installed: %v", name, err)
		}
		if err := os.Symlink(p, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	script, err := filepath.Abs(filepath.Join("..", "..", "scripts", "deps.sh"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, script)
	cmd.Env = append([]string{"PATH=" + dir, "HOME=" + os.Getenv("HOME"), "CHROMIUM=" + filepath.Join(dir, "no-chromium"), "DEPS_DRY_RUN=1"}, env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Not root, Chromium, node, npm and redis-server missing: make test stops
// at once with the one command that installs all of them, and runs nothing.
func TestDepsNotRootPrintsOneCommand(t *testing.T) {
	out, err := depsScript(t, []string{"bash", "env", "id", "ls", "grep", "go"}, "DEPS_UID=1000")
	t.Logf("output:\n%s", out)
	if err == nil {
		t.Fatal("scripts/deps.sh succeeded with Chromium, node, npm and redis-server missing")
	}
	const want = "sudo apt-get update && sudo apt-get install -y chromium nodejs npm redis-server\n"
	if !strings.Contains(out, "\n    "+want) {
		t.Errorf("output lacks the one command %q", want)
	}
	if strings.Contains(out, "would run") || strings.Contains(out, "installing") {
		t.Errorf("a run without root tried to install something")
	}
}

// As root on Debian: one apt-get update, then one apt-get install of
// everything missing (a dry run here).
func TestDepsAsRootInstalls(t *testing.T) {
	out, err := depsScript(t, []string{"bash", "env", "id", "ls", "grep", "go", "apt-get"}, "DEPS_UID=0")
	t.Logf("output:\n%s", out)
	if err != nil {
		t.Fatalf("scripts/deps.sh as root: %v", err)
	}
	if n := strings.Count(out, "would run: apt-get update"); n != 1 {
		t.Errorf("apt-get update %d times, want once", n)
	}
	if !strings.Contains(out, "would run: env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium nodejs npm redis-server\n") {
		t.Errorf("no single apt-get install of chromium nodejs npm redis-server")
	}
}

// The Makefile runs the script before the tests and the linter, and .ci/run
// uses the same script, so that the two cannot drift apart.
func TestMakeTestRunsDeps(t *testing.T) {
	mk := string(repoFile(t, "Makefile"))
	for _, want := range []string{"\ndeps:\n\t@./scripts/deps.sh\n", "\ntest: deps ", "\nlint: deps\n", "\ntest-go: deps\n", "\npostgres:\n\t@./scripts/deps.sh postgres\n"} {
		if !strings.Contains(mk, want) {
			t.Errorf("Makefile lacks %q", want)
		}
	}
	// make test: deps first, then at least vet, staticcheck and the Go tests.
	_, rest, _ := strings.Cut(mk, "\ntest: ")
	line, _, _ := strings.Cut(rest, "\n")
	for _, want := range []string{"vet", "lint", "test-go"} {
		if !slices.Contains(strings.Fields(line), want) {
			t.Errorf("make test (%q) does not run %s", line, want)
		}
	}
	if ci := string(repoFile(t, ".ci/run")); !strings.Contains(ci, "scripts/deps.sh") || strings.Contains(ci, "apt-get") {
		t.Errorf(".ci/run must install through scripts/deps.sh, not apt-get of its own")
	}
}
