package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"

	"github.com/pgrealtime/pgrealtime/wsapi/auth"
	"github.com/pgrealtime/pgrealtime/wsapi/rules"
)

// ConfigError is a bad setting: the process exits with code 2 and prints
// "pgrealtime: <Setting>: <Msg>".
type ConfigError struct {
	// Setting names what the user set: "--max-connections",
	// "PGREALTIME_MAX_CONNECTIONS", "DATABASE_URL", or a file and line.
	Setting string
	Msg     string
}

func (e *ConfigError) Error() string {
	if e.Setting == "" {
		return e.Msg
	}
	return e.Setting + ": " + e.Msg
}

func configErr(setting, format string, args ...any) *ConfigError {
	return &ConfigError{Setting: setting, Msg: fmt.Sprintf(format, args...)}
}

// command is a bit set of the subcommands an option applies to.
type command uint8

const (
	cmdServe command = 1 << iota
	cmdDev
	cmdTeardown
	cmdHealthcheck
	cmdToken
	cmdClusterReset
)

var commandNames = []struct {
	c    command
	name string
}{{cmdServe, "serve"}, {cmdDev, "dev"}, {cmdTeardown, "teardown"}, {cmdHealthcheck, "healthcheck"}, {cmdToken, "token"}, {cmdClusterReset, "cluster reset"}}

func (c command) String() string {
	var names []string
	for _, n := range commandNames {
		if c&n.c != 0 {
			names = append(names, n.name)
		}
	}
	return strings.Join(names, ", ")
}

// Config is every setting of every subcommand after flags, environment and
// defaults have been applied and validated.
type Config struct {
	DatabaseURL      string
	Listen           string
	Publication      string
	Slot             string
	NotifyChannel    string
	ConfigFile       string
	JWTSecret        string
	JWKSFile         string
	JWKSURL          string
	JWKSRefresh      time.Duration // --jwks-refresh-interval
	JWKSUnknownKID   time.Duration // --jwks-unknown-kid-refresh
	JWTAudience      []string
	JWTIssuer        string
	AdminRole        string
	MaxConnections   int
	MaxSubscriptions int
	SubscribeRate    float64
	MaxMessageBytes  int64
	SendQueue        int
	HistorySize      int
	ResumeWALMB      int
	BatchWindow      time.Duration
	AllowedOrigins   []string
	LogLevel         zerolog.Level
	LogFormat        string
	RedisURL         string        // cluster mode (config_cluster.go)
	NodeID           string        // cluster mode; default <host name>-<pid>
	DataDir          string        // dev
	Yes              bool          // teardown, cluster reset
	Subject          string        // token
	Role             string        // token
	TTL              time.Duration // token

	// source records where each option's value came from ("--listen",
	// "PGREALTIME_LISTEN", "DATABASE_URL" or "default"), for messages.
	source map[string]string
}

// Source returns the setting name to quote in a message about option name.
func (c *Config) Source(name string) string {
	if s, ok := c.source[name]; ok && s != "default" {
		return s
	}
	return "--" + name
}

// option is one row of the flag table: flag parsing, the environment, the
// usage text and the README table all come from it.
type option struct {
	name string
	def  string // default as text; "" means none
	// devDef, when set, replaces def under `pgrealtime dev`; in
	// parentheses it is only shown, not parsed.
	devDef string
	// docDef, when set, is shown instead of def in usage and the README.
	docDef string
	help   string
	cmds   command
	isBool bool
	// set parses and validates v into c; its error is the message after
	// the setting name.
	set func(c *Config, v string) error
}

// envName is the environment variable for option name.
func envName(name string) string {
	return "PGREALTIME_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

func positiveInt(dst func(*Config) *int) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n <= 0 {
			return fmt.Errorf("must be a positive integer, got %q", v)
		}
		*dst(c) = n
		return nil
	}
}

func nonEmpty(dst func(*Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error {
		if strings.TrimSpace(v) == "" {
			return errors.New("must not be empty")
		}
		*dst(c) = v
		return nil
	}
}

func identifier(maxLen int, dst func(*Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error {
		if v == "" {
			return errors.New("must not be empty")
		}
		for _, r := range v {
			if !(r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
				return fmt.Errorf("must contain only lower-case letters, digits and _, got %q", v)
			}
		}
		if len(v) > maxLen {
			return fmt.Errorf("must be at most %d characters, got %d", maxLen, len(v))
		}
		*dst(c) = v
		return nil
	}
}

func atLeastSecond(dst func(*Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d < time.Second {
			return fmt.Errorf("must be a duration of at least 1s (e.g. 30s, 5m, 1h), got %q", v)
		}
		*dst(c) = d
		return nil
	}
}

func anyString(dst func(*Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error { *dst(c) = v; return nil }
}

// maxPublicationLen leaves room for the "_insert_only" companion
// publication within Postgres's 63-byte names.
const maxPublicationLen = 63 - len("_insert_only")

// options is the flag table. Keep it in the order the README shows.
var options = []option{
	{name: "database-url", docDef: "(required for serve)", help: "Postgres connection URL or DSN (libpq syntax); `DATABASE_URL` is read when neither the flag nor `PGREALTIME_DATABASE_URL` is set", cmds: cmdServe | cmdTeardown,
		set: anyString(func(c *Config) *string { return &c.DatabaseURL })},
	{name: "listen", def: ":8080", help: "HTTP address (WebSocket, health, metrics, inspector)", cmds: cmdServe | cmdDev | cmdHealthcheck,
		set: func(c *Config, v string) error {
			_, port, err := net.SplitHostPort(v)
			if err != nil {
				return fmt.Errorf("must be host:port or :port, got %q", v)
			}
			if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
				return fmt.Errorf("port must be a number from 0 to 65535, got %q", v)
			}
			c.Listen = v
			return nil
		}},
	{name: "publication", def: "pgrealtime", help: "publication name (created if missing)", cmds: cmdServe | cmdDev | cmdTeardown,
		set: identifier(maxPublicationLen, func(c *Config) *string { return &c.Publication })},
	{name: "slot", def: "pgrealtime", help: "logical replication slot (permanent; created if missing); with --redis-url also the name of the cluster in Redis", cmds: cmdServe | cmdDev | cmdTeardown | cmdClusterReset,
		set: identifier(63, func(c *Config) *string { return &c.Slot })},
	{name: "notify-channel", def: "pgrealtime", help: "LISTEN channel for custom events", cmds: cmdServe | cmdDev,
		set: nonEmpty(func(c *Config) *string { return &c.NotifyChannel })},
	{name: "config", devDef: "(built-in demo rules)", help: "rules file (YAML); without one only the admin role may subscribe", cmds: cmdServe | cmdDev,
		set: anyString(func(c *Config) *string { return &c.ConfigFile })},
	{name: "jwt-secret", devDef: "(random, printed)", help: "HS256 secret; without it, --jwks-file and --jwks-url every connection is anonymous", cmds: cmdServe | cmdDev | cmdToken,
		set: anyString(func(c *Config) *string { return &c.JWTSecret })},
	{name: "jwks-file", help: "JWKS file with RS256/ES256 public keys", cmds: cmdServe | cmdDev,
		set: anyString(func(c *Config) *string { return &c.JWKSFile })},
	{name: "jwks-url", help: "JWKS URL of an identity provider (RS256/ES256 keys): fetched at start, cached, fetched again in the background; `https://`, or `http://` to localhost only; not with --jwks-file", cmds: cmdServe | cmdDev,
		set: func(c *Config, v string) error {
			v = strings.TrimSpace(v)
			if err := auth.CheckJWKSURL(v); err != nil {
				return err
			}
			c.JWKSURL = v
			return nil
		}},
	{name: "jwks-refresh-interval", def: "5m", help: "how often --jwks-url is fetched again; a key the provider removed is refused from the next fetch on", cmds: cmdServe | cmdDev,
		set: atLeastSecond(func(c *Config) *time.Duration { return &c.JWKSRefresh })},
	{name: "jwks-unknown-kid-refresh", def: "30s", help: "a token whose `kid` is not among the cached keys makes the server fetch --jwks-url again, at most once per this duration; its upgrade waits at most 1 s for that fetch", cmds: cmdServe | cmdDev,
		set: atLeastSecond(func(c *Config) *time.Duration { return &c.JWKSUnknownKID })},
	{name: "jwt-audience", help: "comma list; when set, a token's `aud` must name one of them (tokens minted by `token` and `dev` carry the first)", cmds: cmdServe | cmdDev | cmdToken,
		set: func(c *Config, v string) error {
			c.JWTAudience = nil
			for _, a := range strings.Split(v, ",") {
				if a = strings.TrimSpace(a); a != "" {
					c.JWTAudience = append(c.JWTAudience, a)
				}
			}
			if len(c.JWTAudience) == 0 && strings.TrimSpace(v) != "" {
				// "," would otherwise turn the audience check off silently.
				return fmt.Errorf("must name at least one audience (a comma list such as authenticated,api), got %q", v)
			}
			return nil
		}},
	{name: "jwt-issuer", help: "when set, a token's `iss` must be exactly this (tokens minted by `token` and `dev` carry it)", cmds: cmdServe | cmdDev | cmdToken,
		set: func(c *Config, v string) error { c.JWTIssuer = strings.TrimSpace(v); return nil }},
	{name: "admin-role", def: "admin", help: "`role` claim that may subscribe to `*` and bypasses `read` rules", cmds: cmdServe | cmdDev,
		set: nonEmpty(func(c *Config) *string { return &c.AdminRole })},
	{name: "max-connections", def: "10000", help: "open WebSockets; further upgrades get HTTP 503", cmds: cmdServe | cmdDev,
		set: positiveInt(func(c *Config) *int { return &c.MaxConnections })},
	{name: "max-subscriptions", def: "100", help: "subscriptions per connection", cmds: cmdServe | cmdDev,
		set: positiveInt(func(c *Config) *int { return &c.MaxSubscriptions })},
	{name: "subscribe-rate", def: "10", help: "subscribe/unsubscribe requests per second per connection (burst the same)", cmds: cmdServe | cmdDev,
		set: func(c *Config, v string) error {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil || !(f > 0) || f > 1e9 {
				return fmt.Errorf("must be a positive number, got %q", v)
			}
			c.SubscribeRate = f
			return nil
		}},
	{name: "max-message-bytes", def: "65536", help: "largest client frame; larger closes with 1009", cmds: cmdServe | cmdDev,
		set: func(c *Config, v string) error {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil || n <= 0 {
				return fmt.Errorf("must be a positive integer, got %q", v)
			}
			if n < 256 {
				return fmt.Errorf("must be at least 256 (a subscribe message must fit), got %d", n)
			}
			c.MaxMessageBytes = n
			return nil
		}},
	{name: "send-queue", def: "1024", help: "per-connection outbound queue (messages); overflow closes with 4008: more than this many messages behind for 1 s while the client is not reading, or more than 64 times this (at least 65536) at all", cmds: cmdServe | cmdDev,
		set: positiveInt(func(c *Config) *int { return &c.SendQueue })},
	{name: "history-size", def: "10000", help: "events kept in memory for resume with `since`", cmds: cmdServe | cmdDev,
		set: positiveInt(func(c *Config) *int { return &c.HistorySize })},
	{name: "resume-wal-mb", def: "64", help: "WAL (MiB) the slot may hold back so that a restart can rebuild the resume history; past it, resume across a restart works only from the last event; 0: never hold back", cmds: cmdServe | cmdDev,
		set: func(c *Config, v string) error {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || n < 0 || n > 1<<20 {
				return fmt.Errorf("must be a whole number of MiB from 0 to 1048576, got %q", v)
			}
			c.ResumeWALMB = n
			return nil
		}},
	{name: "batch-window", def: "1ms", help: "under dense traffic (transactions less than a quarter of this apart) the WAL reader pauses this long after a transaction, so that the next ones are read and sent together: less CPU per change, at most this much added latency; 0: never pause", cmds: cmdServe | cmdDev,
		set: func(c *Config, v string) error {
			d, err := time.ParseDuration(strings.TrimSpace(v))
			if err != nil || d < 0 || d > time.Second {
				return fmt.Errorf("must be a duration from 0 to 1s (e.g. 1ms, 500us, 0), got %q", v)
			}
			c.BatchWindow = d
			return nil
		}},
	{name: "allowed-origins", docDef: "(same host only)", help: "comma list of origins allowed to open a WebSocket (`https://app.example.com`, `*.example.com`, `*`); default: same host only; requests without Origin are allowed", cmds: cmdServe | cmdDev,
		set: func(c *Config, v string) error {
			c.AllowedOrigins = nil
			for _, o := range strings.Split(v, ",") {
				o = strings.TrimSpace(o)
				if o == "" {
					continue
				}
				if strings.ContainsAny(o, " \t") {
					return fmt.Errorf("origin %q contains whitespace", o)
				}
				c.AllowedOrigins = append(c.AllowedOrigins, o)
			}
			return nil
		}},
	{name: "log-level", def: "info", help: "trace, debug, info, warn, error or disabled", cmds: cmdServe | cmdDev,
		set: func(c *Config, v string) error {
			switch strings.ToLower(strings.TrimSpace(v)) {
			case "trace", "debug", "info", "warn", "error", "fatal", "panic", "disabled":
			default:
				return fmt.Errorf("must be one of trace, debug, info, warn, error, disabled; got %q", v)
			}
			l, err := zerolog.ParseLevel(strings.ToLower(strings.TrimSpace(v)))
			if err != nil {
				return err
			}
			c.LogLevel = l
			return nil
		}},
	{name: "log-format", def: "json", devDef: "console", help: "`json` or `console` (human-readable)", cmds: cmdServe | cmdDev,
		set: func(c *Config, v string) error {
			switch v {
			case "json", "console":
				c.LogFormat = v
				return nil
			}
			return fmt.Errorf(`must be "json" or "console", got %q`, v)
		}},
	{name: "redis-url", help: "Redis URL (`redis://host:6379/0`, `rediss://` for TLS, `unix:///path`): joins the cluster of every node with the same Redis and --slot (PROTOCOL section 8); without it one node, history in memory; required by `cluster reset`", cmds: cmdServe | cmdClusterReset,
		set: setRedisURL},
	{name: "node-id", docDef: "(host name-pid)", help: "this node's name in cluster mode (`/readyz`, `/api/cluster`, logs): at most 64 bytes of letters, digits and `._:-`", cmds: cmdServe,
		set: setNodeID},
	{name: "data-dir", devDef: "(temporary, removed on exit)", help: "directory for the throwaway cluster; must be empty or absent; kept on exit when given", cmds: cmdDev,
		set: anyString(func(c *Config) *string { return &c.DataDir })},
	{name: "sub", def: "admin", help: "`sub` claim of the token to mint", cmds: cmdToken,
		set: nonEmpty(func(c *Config) *string { return &c.Subject })},
	{name: "role", def: "admin", help: "`role` claim of the token to mint", cmds: cmdToken,
		set: anyString(func(c *Config) *string { return &c.Role })},
	{name: "ttl", def: "1h", help: "lifetime of the token to mint (Go duration: 30m, 24h)", cmds: cmdToken,
		set: func(c *Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return fmt.Errorf("must be a positive duration such as 30m or 24h, got %q", v)
			}
			c.TTL = d
			return nil
		}},
	{name: "yes", def: "false", isBool: true, help: "confirm: teardown drops the slot and the publication, cluster reset deletes the cluster's Redis keys", cmds: cmdTeardown | cmdClusterReset,
		set: func(c *Config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("must be true or false, got %q", v)
			}
			c.Yes = b
			return nil
		}},
}

// parseConfig parses args (after the subcommand name) and the environment for
// subcommand cmd. It returns flag.ErrHelp after printing usage for -h.
func parseConfig(cmd command, cmdName string, args []string, getenv func(string) string, usageOut io.Writer) (*Config, error) {
	fs := flag.NewFlagSet("pgrealtime "+cmdName, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	given := map[string]string{}
	for i := range options {
		o := &options[i]
		if o.cmds&cmd == 0 {
			continue
		}
		name := o.name
		if o.isBool {
			fs.BoolFunc(name, o.help, func(v string) error { given[name] = v; return nil })
		} else {
			fs.Func(name, o.help, func(v string) error { given[name] = v; return nil })
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(usageOut, cmd, cmdName)
			return nil, flag.ErrHelp
		}
		return nil, flagParseError(err, cmdName)
	}
	if fs.NArg() > 0 {
		return nil, configErr(fs.Arg(0), "unexpected argument (flags look like --name=value; see `pgrealtime %s --help`)", cmdName)
	}

	c := &Config{source: map[string]string{}}
	for i := range options {
		o := &options[i]
		if o.cmds&cmd == 0 {
			continue
		}
		val, src := "", "default"
		if v, ok := given[o.name]; ok {
			val, src = v, "--"+o.name
		} else if v := getenv(envName(o.name)); v != "" {
			val, src = v, envName(o.name)
		} else if o.name == "database-url" && getenv("DATABASE_URL") != "" {
			val, src = getenv("DATABASE_URL"), "DATABASE_URL"
		} else {
			val = o.def
			if cmd == cmdDev && o.devDef != "" && !strings.HasPrefix(o.devDef, "(") {
				val = o.devDef
			}
		}
		c.source[o.name] = src
		if src == "default" && val == "" {
			continue
		}
		if err := o.set(c, val); err != nil {
			return nil, &ConfigError{Setting: src2setting(src, o.name), Msg: err.Error()}
		}
	}
	return c, nil
}

func src2setting(src, name string) string {
	if src == "default" {
		return "--" + name
	}
	return src
}

// flagParseError turns the flag package's messages into ConfigErrors that
// name the flag.
func flagParseError(err error, cmdName string) error {
	msg := err.Error()
	for _, p := range []string{"flag provided but not defined: ", "flag needs an argument: ", "bad flag syntax: "} {
		if rest, ok := strings.CutPrefix(msg, p); ok {
			name := "--" + strings.TrimLeft(rest, "-")
			switch p {
			case "flag provided but not defined: ":
				return configErr(name, "unknown flag for `pgrealtime %s` (see `pgrealtime %s --help`)", cmdName, cmdName)
			case "flag needs an argument: ":
				return configErr(name, "needs a value (--name=value)")
			}
			return configErr(rest, "bad flag syntax")
		}
	}
	return configErr("", "%s", msg)
}

func printUsage(w io.Writer, cmd command, cmdName string) {
	fmt.Fprintf(w, "Usage: pgrealtime %s [flags]\n\nFlags (each also read from the environment variable shown; the flag wins):\n", cmdName)
	for _, o := range options {
		if o.cmds&cmd == 0 {
			continue
		}
		def := o.def
		if o.docDef != "" {
			def = o.docDef
		}
		if cmd == cmdDev && o.devDef != "" {
			def = o.devDef
		}
		if def != "" {
			def = " (default " + def + ")"
		}
		fmt.Fprintf(w, "  --%s  [%s]%s\n      %s\n", o.name, envName(o.name), def, strings.ReplaceAll(o.help, "`", ""))
	}
}

// flagsMarkdown renders the flag table for the README.
func flagsMarkdown() string {
	var b strings.Builder
	b.WriteString("| flag | environment | default | commands | meaning |\n|---|---|---|---|---|\n")
	for _, o := range options {
		def := "—"
		switch {
		case o.docDef != "":
			def = strings.Trim(o.docDef, "()")
		case o.def != "":
			def = "`" + o.def + "`"
		}
		if o.devDef != "" {
			def += " (dev: " + strings.Trim(o.devDef, "()") + ")"
		}
		fmt.Fprintf(&b, "| `--%s` | `%s` | %s | %s | %s |\n", o.name, envName(o.name), def, o.cmds, strings.ReplaceAll(o.help, "|", "\\|"))
	}
	return b.String()
}

// knownEnv lists every environment variable the binary reads.
func knownEnv() []string {
	out := []string{"DATABASE_URL"}
	for _, o := range options {
		out = append(out, envName(o.name))
	}
	sort.Strings(out)
	return out
}

// loadRules reads and decodes a rules file. Unknown keys are errors; YAML
// errors carry the line.
func loadRules(path, setting string) (*rules.Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, configErr(setting, "cannot read rules file: %v", unwrapPathError(err))
	}
	return decodeRules(data, path, setting)
}

func decodeRules(data []byte, name, setting string) (*rules.Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var rc rules.Config
	if err := dec.Decode(&rc); err != nil {
		if errors.Is(err, io.EOF) {
			return &rc, nil // empty file: nothing configured
		}
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return nil, configErr(setting, "%s: %s", name, strings.Join(te.Errors, "; "))
		}
		return nil, configErr(setting, "%s: %v", name, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	return &rc, nil
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Path, pe.Err)
	}
	return err
}

// readJWKS reads the --jwks-file.
func readJWKS(c *Config) ([]byte, error) {
	if c.JWKSFile == "" {
		return nil, nil
	}
	data, err := os.ReadFile(c.JWKSFile)
	if err != nil {
		return nil, configErr(c.Source("jwks-file"), "cannot read JWKS file: %v", unwrapPathError(err))
	}
	return data, nil
}

// newLogger builds the process logger from --log-level and --log-format.
func newLogger(c *Config, w io.Writer) zerolog.Logger {
	if c.LogFormat == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000", NoColor: !isTerminal(w)}
	}
	zerolog.TimeFieldFormat = "2006-01-02T15:04:05.000Z07:00" // milliseconds
	return zerolog.New(w).Level(c.LogLevel).With().Timestamp().Logger()
}

// isTerminal reports whether w is a character device (colours for humans,
// plain text for files and pipes).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
