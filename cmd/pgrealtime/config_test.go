package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func envOf(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestFlagEnvPrecedence(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  func(string) string
		want string
		src  string
	}{
		{"default", nil, envOf(), ":8080", "default"},
		{"env", nil, envOf("PGREALTIME_LISTEN", ":7000"), ":7000", "PGREALTIME_LISTEN"},
		{"flag wins", []string{"--listen=:9000"}, envOf("PGREALTIME_LISTEN", ":7000"), ":9000", "--listen"},
		{"flag with space", []string{"--listen", "127.0.0.1:9001"}, envOf(), "127.0.0.1:9001", "--listen"},
		{"single dash", []string{"-listen=:9002"}, envOf(), ":9002", "--listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseConfig(cmdServe, "serve", tc.args, tc.env, &bytes.Buffer{})
			if err != nil {
				t.Fatal(err)
			}
			if c.Listen != tc.want || c.source["listen"] != tc.src {
				t.Fatalf("listen = %q from %q, want %q from %q", c.Listen, c.source["listen"], tc.want, tc.src)
			}
		})
	}
}

func TestDefaultsMatchProtocol(t *testing.T) {
	c, err := parseConfig(cmdServe, "serve", nil, envOf(), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != ":8080" || c.Publication != "pgrealtime" || c.Slot != "pgrealtime" || c.NotifyChannel != "pgrealtime" ||
		c.AdminRole != "admin" || c.MaxConnections != 10000 || c.MaxSubscriptions != 100 || c.SubscribeRate != 10 ||
		c.MaxMessageBytes != 65536 || c.SendQueue != 1024 || c.HistorySize != 10000 || c.AllowedOrigins != nil ||
		c.LogLevel.String() != "info" || c.LogFormat != "json" || c.ConfigFile != "" || c.JWTSecret != "" || c.JWKSFile != "" {
		t.Fatalf("defaults differ from PROTOCOL section 1: %+v", c)
	}
	d, err := parseConfig(cmdDev, "dev", nil, envOf(), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if d.LogFormat != "console" || d.Listen != ":8080" {
		t.Fatalf("dev defaults: %+v", d)
	}
}

func TestDatabaseURLFallback(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  func(string) string
		want string
		src  string
	}{
		{"DATABASE_URL", nil, envOf("DATABASE_URL", "postgres://a/db"), "postgres://a/db", "DATABASE_URL"},
		{"PGREALTIME wins over DATABASE_URL", nil, envOf("DATABASE_URL", "postgres://a/db", "PGREALTIME_DATABASE_URL", "postgres://b/db"), "postgres://b/db", "PGREALTIME_DATABASE_URL"},
		{"flag wins over both", []string{"--database-url=postgres://c/db"}, envOf("DATABASE_URL", "postgres://a/db", "PGREALTIME_DATABASE_URL", "postgres://b/db"), "postgres://c/db", "--database-url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseConfig(cmdServe, "serve", tc.args, tc.env, &bytes.Buffer{})
			if err != nil {
				t.Fatal(err)
			}
			if c.DatabaseURL != tc.want || c.Source("database-url") != tc.src {
				t.Fatalf("database url %q from %q, want %q from %q", c.DatabaseURL, c.Source("database-url"), tc.want, tc.src)
			}
		})
	}
}

func TestAllowedOriginsAndNumbers(t *testing.T) {
	c, err := parseConfig(cmdServe, "serve",
		[]string{"--allowed-origins", "https://app.example.com, *.example.com", "--subscribe-rate=2.5", "--max-message-bytes=1024", "--log-level=DEBUG"},
		envOf("PGREALTIME_SEND_QUEUE", "7"), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.AllowedOrigins, "|") != "https://app.example.com|*.example.com" || c.SubscribeRate != 2.5 ||
		c.MaxMessageBytes != 1024 || c.SendQueue != 7 || c.LogLevel.String() != "debug" {
		t.Fatalf("got %+v", c)
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// runExpectConfigError runs a full command line and checks that it fails as
// a configuration error (exit 2) whose message contains every want string.
func runExpectConfigError(t *testing.T, args []string, env func(string) string, want ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	err := run(ctx, args, env, &out, &errb)
	if code := exitCode(err); code != 2 {
		t.Fatalf("%q: exit code %d (err %v), want 2", args, code, err)
	}
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("%q: %T is not a *ConfigError", args, err)
	}
	msg := "pgrealtime: " + err.Error()
	if strings.Contains(msg, "\n") {
		t.Errorf("%q: message is not one line: %q", args, msg)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("%q: message %q does not mention %q", args, msg, w)
		}
	}
}

func TestBadSettingsExit2(t *testing.T) {
	db := []string{"--database-url", "postgres://postgres@127.0.0.1:1/none?sslmode=disable"}
	serve := func(a ...string) []string { return append(append([]string{"serve"}, db...), a...) }
	badYAML := writeFile(t, "bad.yaml", "collections:\n  posts:\n    read: \"true\"\n   omit_columns: [x]\n")
	unknownKey := writeFile(t, "unknown.yaml", "collections:\n  posts:\n    reed: \"true\"\n")
	wrongType := writeFile(t, "type.yaml", "collections:\n  posts:\n    omit_columns: 3\n")
	for _, tc := range []struct {
		name string
		args []string
		env  func(string) string
		want []string
	}{
		{"max-connections abc", serve("--max-connections", "abc"), envOf(), []string{`--max-connections: must be a positive integer, got "abc"`}},
		{"max-connections 0", serve("--max-connections=0"), envOf(), []string{"--max-connections", `"0"`}},
		{"max-subscriptions env", serve(), envOf("PGREALTIME_MAX_SUBSCRIPTIONS", "-3"), []string{"PGREALTIME_MAX_SUBSCRIPTIONS", `"-3"`}},
		{"subscribe-rate 0", serve("--subscribe-rate=0"), envOf(), []string{"--subscribe-rate", "positive number"}},
		{"subscribe-rate NaN", serve("--subscribe-rate=NaN"), envOf(), []string{"--subscribe-rate"}},
		{"max-message-bytes tiny", serve("--max-message-bytes=10"), envOf(), []string{"--max-message-bytes", "at least 256"}},
		{"max-message-bytes text", serve("--max-message-bytes=64k"), envOf(), []string{"--max-message-bytes", `"64k"`}},
		{"send-queue empty flag", serve("--send-queue="), envOf(), []string{"--send-queue"}},
		{"batch-window not a duration", serve("--batch-window=5"), envOf(), []string{"--batch-window", `"5"`}},
		{"batch-window too long", serve("--batch-window=2s"), envOf(), []string{"--batch-window", "0 to 1s"}},
		{"history-size negative", serve("--history-size=-1"), envOf(), []string{"--history-size"}},
		{"log-level", serve("--log-level=loud"), envOf(), []string{"--log-level", `"loud"`}},
		{"log-format", serve(), envOf("PGREALTIME_LOG_FORMAT", "xml"), []string{"PGREALTIME_LOG_FORMAT", `"xml"`}},
		{"listen without port", serve("--listen=8080"), envOf(), []string{"--listen", "host:port"}},
		{"listen bad port", serve("--listen=:http99"), envOf(), []string{"--listen", "port"}},
		{"publication name", serve("--publication=Bad-Name"), envOf(), []string{"--publication", `"Bad-Name"`}},
		{"slot name", serve("--slot="), envOf(), []string{"--slot", "empty"}},
		{"admin-role empty", serve(), envOf("PGREALTIME_ADMIN_ROLE", " "), []string{"PGREALTIME_ADMIN_ROLE"}},
		{"unknown flag", serve("--max-conections=5"), envOf(), []string{"--max-conections", "unknown flag"}},
		{"flag without value", serve("--listen"), envOf(), []string{"--listen", "needs a value"}},
		{"positional argument", serve("extra"), envOf(), []string{"extra", "unexpected argument"}},
		{"no database url", []string{"serve"}, envOf(), []string{"--database-url", "DATABASE_URL"}},
		{"bad database url", []string{"serve"}, envOf("DATABASE_URL", "postgres://u:secret@host:notaport/db"), []string{"DATABASE_URL", "not a valid connection URL"}},
		{"unreadable config", serve("--config=/nonexistent/rules.yaml"), envOf(), []string{"--config", "/nonexistent/rules.yaml"}},
		{"config from env", serve(), envOf("PGREALTIME_CONFIG", "/nonexistent/r.yaml"), []string{"PGREALTIME_CONFIG"}},
		{"yaml syntax", serve("--config=" + badYAML), envOf(), []string{"--config", "bad.yaml", "line "}},
		{"yaml unknown key", serve("--config=" + unknownKey), envOf(), []string{"--config", "line 3", "reed"}},
		{"yaml wrong type", serve("--config=" + wrongType), envOf(), []string{"--config", "line 3"}},
		{"unreadable jwks", serve("--jwks-file=/nonexistent/jwks.json"), envOf(), []string{"--jwks-file", "/nonexistent/jwks.json"}},
		{"malformed jwks", serve("--jwks-file=" + writeFile(t, "jwks.json", `{"keys":[{"kty":"RSA","kid":"k"}]}`)), envOf(), []string{"--jwks-file"}},
		{"jwks not json", serve(), envOf("PGREALTIME_JWKS_FILE", writeFile(t, "jwks2.json", "hello")), []string{"PGREALTIME_JWKS_FILE"}},
		{"jwks-url plain http", serve("--jwks-url=http://idp.example/jwks.json"), envOf(), []string{`--jwks-url: must be https:// (plain http:// is accepted only for localhost`, `"http://idp.example/jwks.json"`}},
		{"jwks-url not a URL", serve(), envOf("PGREALTIME_JWKS_URL", "idp.example/jwks.json"), []string{"PGREALTIME_JWKS_URL", "absolute https:// URL"}},
		{"jwks-url scheme", serve("--jwks-url=file:///etc/jwks.json"), envOf(), []string{"--jwks-url", `scheme "file"`}},
		{"jwks-url with jwks-file", serve("--jwks-url=https://idp.example/jwks.json", "--jwks-file=/x.json"), envOf(), []string{"--jwks-url: cannot be combined with --jwks-file"}},
		{"jwks-refresh-interval", serve("--jwks-refresh-interval=10ms"), envOf(), []string{"--jwks-refresh-interval", "at least 1s", `"10ms"`}},
		{"jwks-unknown-kid-refresh", serve(), envOf("PGREALTIME_JWKS_UNKNOWN_KID_REFRESH", "soon"), []string{"PGREALTIME_JWKS_UNKNOWN_KID_REFRESH", `"soon"`}},
		{"teardown without yes", []string{"teardown"}, envOf("DATABASE_URL", "postgres://x/y"), []string{"--yes", "add --yes"}},
		{"teardown yes=false env", []string{"teardown"}, envOf("PGREALTIME_YES", "false", "DATABASE_URL", "postgres://x/y"), []string{"--yes"}},
		{"teardown bad yes env", []string{"teardown"}, envOf("PGREALTIME_YES", "sure"), []string{"PGREALTIME_YES"}},
		{"dev data-dir not empty", []string{"dev", "--data-dir", t.TempDir() + "/.."}, envOf(), []string{"--data-dir", "not empty"}},
		{"dev rejects database-url", []string{"dev", "--database-url=postgres://x/y"}, envOf(), []string{"--database-url", "unknown flag"}},
		{"jwt-audience only commas", serve("--jwt-audience= , "), envOf(), []string{"--jwt-audience", "at least one audience", `" , "`}},
		{"jwt-audience env only commas", serve(), envOf("PGREALTIME_JWT_AUDIENCE", ","), []string{"PGREALTIME_JWT_AUDIENCE", "at least one audience"}},
		{"unknown command", []string{"srve"}, envOf(), []string{`"srve"`, "token", "healthcheck"}},
		{"no command", nil, envOf(), []string{"missing command"}},
		{"version with args", []string{"version", "x"}, envOf(), []string{"x"}},
	} {
		t.Run(tc.name, func(t *testing.T) { runExpectConfigError(t, tc.args, tc.env, tc.want...) })
	}
}

func TestPasswordNotPrinted(t *testing.T) {
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"serve"}, envOf("DATABASE_URL", "postgres://u:hunter2@host:notaport/db"), &out, &errb)
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error %v leaks the password", err)
	}
}

func TestHelpAndVersion(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"serve", "--help"}, envOf(), &out, &out); err != nil {
		t.Fatal(err)
	}
	for _, o := range options {
		if o.cmds&cmdServe != 0 && !strings.Contains(out.String(), "--"+o.name) {
			t.Errorf("serve --help does not list --%s", o.name)
		}
	}
	out.Reset()
	if err := run(context.Background(), []string{"version"}, envOf(), &out, &out); err != nil || !strings.HasPrefix(out.String(), "pgrealtime "+version) {
		t.Fatalf("version: %q %v", out.String(), err)
	}
}

func TestDevRulesDecode(t *testing.T) {
	rc, err := decodeRules(devRules, "dev-rules.yaml", "--config")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := rc.Collections["posts"]; !ok || rc.Default == nil {
		t.Fatalf("dev rules: %+v", rc)
	}
}

func TestEnvNames(t *testing.T) {
	if got := envName("max-message-bytes"); got != "PGREALTIME_MAX_MESSAGE_BYTES" {
		t.Fatal(got)
	}
}

// TestDevWithoutPostgres: on a machine without the server binaries, dev
// exits 1 and says what to install.
func TestDevWithoutPostgres(t *testing.T) {
	saved := findBinDir
	findBinDir = func() (string, error) { return "", errors.New("not found") }
	defer func() { findBinDir = saved }()
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"dev", "--listen", "127.0.0.1:0"}, envOf(), &out, &errb)
	if exitCode(err) != 1 || !strings.Contains(err.Error(), "apt-get install -y postgresql") {
		t.Fatalf("dev without postgres: %v (exit %d)", err, exitCode(err))
	}
}

// --batch-window: a duration, the default 1 ms, 0 turning the pause off
// (cdc's "disabled" is negative; its zero would mean the default).
func TestBatchWindow(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  func(string) string
		want time.Duration // what cdc gets
	}{
		{nil, envOf(), time.Millisecond},
		{[]string{"--batch-window=250us"}, envOf(), 250 * time.Microsecond},
		{nil, envOf("PGREALTIME_BATCH_WINDOW", "0"), -1},
	} {
		c, err := parseConfig(cmdServe, "serve", tc.args, tc.env, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if got := batchWindow(c.BatchWindow); got != tc.want {
			t.Errorf("%q: cdc BatchWindow %v, want %v", tc.args, got, tc.want)
		}
	}
}
