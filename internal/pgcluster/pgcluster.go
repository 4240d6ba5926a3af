// Package pgcluster starts throwaway PostgreSQL clusters from the installed
// server binaries: for tests, for `pgrealtime dev` and for the benchmark
// command. A cluster listens on 127.0.0.1 on a free port and keeps its Unix
// socket inside its own data directory's parent, so several can run at once.
//
// initdb refuses to run as root; when the process is root, every server
// command runs through `runuser -u postgres --` and the cluster directory is
// owned by postgres.
package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ErrNoBinaries is returned by FindBinDir when no PostgreSQL server binaries
// are installed.
var ErrNoBinaries = errors.New("postgres server binaries (initdb, pg_ctl) not found: install them with `apt-get install -y postgresql` (Debian/Ubuntu) or put their directory on PATH")

// FindBinDir locates the directory holding initdb and pg_ctl: PATH first,
// then `pg_config --bindir`, then /usr/lib/postgresql/*/bin (newest first).
func FindBinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		dir := filepath.Dir(p)
		if fileExists(filepath.Join(dir, "pg_ctl")) {
			return dir, nil
		}
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if fileExists(filepath.Join(dir, "initdb")) {
			return dir, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Slice(matches, func(i, j int) bool { return versionOf(matches[i]) > versionOf(matches[j]) })
	for _, m := range matches {
		return filepath.Dir(m), nil
	}
	return "", ErrNoBinaries
}

func versionOf(p string) int {
	// /usr/lib/postgresql/15/bin/initdb
	parts := strings.Split(p, string(filepath.Separator))
	for i, s := range parts {
		if s == "postgresql" && i+1 < len(parts) {
			n, _ := strconv.Atoi(parts[i+1])
			return n
		}
	}
	return 0
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Options configure a new cluster.
type Options struct {
	// Dir is where the cluster lives (data in Dir/data, socket in Dir).
	// Empty means a new temporary directory, removed by Close.
	Dir string
	// Port to listen on; 0 picks a free one.
	Port int
	// Fsync keeps fsync on (default off: throwaway clusters).
	Fsync bool
	// Settings are extra postgresql.conf lines, "name = value".
	Settings []string
	// Log, when set, receives postgres's log file path for diagnostics.
	LogFile string
}

// Cluster is one running (or stopped) throwaway PostgreSQL server.
type Cluster struct {
	BinDir  string
	Dir     string
	DataDir string
	Port    int
	LogFile string

	ownsDir bool
	asUser  string // "postgres" when running as root
}

// Start creates and starts a new cluster with wal_level=logical.
func Start(ctx context.Context, opt Options) (*Cluster, error) {
	bin, err := FindBinDir()
	if err != nil {
		return nil, err
	}
	c := &Cluster{BinDir: bin, Dir: opt.Dir, Port: opt.Port}
	if c.Dir == "" {
		d, err := os.MkdirTemp("", "pgrealtime-pg-")
		if err != nil {
			return nil, err
		}
		c.Dir, c.ownsDir = d, true
	} else if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, err
	}
	c.DataDir = filepath.Join(c.Dir, "data")
	c.LogFile = opt.LogFile
	if c.LogFile == "" {
		c.LogFile = filepath.Join(c.Dir, "postgres.log")
	}
	if os.Geteuid() == 0 {
		c.asUser = "postgres"
		if err := chownToPostgres(c.Dir); err != nil {
			c.cleanup()
			return nil, err
		}
	}
	if c.Port == 0 {
		if c.Port, err = FreePort(); err != nil {
			c.cleanup()
			return nil, err
		}
	}
	if out, err := c.run(ctx, filepath.Join(bin, "initdb"), "-D", c.DataDir, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"); err != nil {
		c.cleanup()
		return nil, fmt.Errorf("initdb: %w: %s", err, out)
	}
	conf := []string{
		"listen_addresses = '127.0.0.1'",
		fmt.Sprintf("port = %d", c.Port),
		fmt.Sprintf("unix_socket_directories = '%s'", c.Dir),
		"wal_level = logical",
		"max_wal_senders = 40",
		"max_replication_slots = 40",
		"max_connections = 200",
		"shared_buffers = 128MB",
		"full_page_writes = off",
		"log_min_messages = warning",
		"logging_collector = off",
	}
	if !opt.Fsync {
		conf = append(conf, "fsync = off", "synchronous_commit = off")
	}
	conf = append(conf, opt.Settings...)
	f, err := os.OpenFile(filepath.Join(c.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		c.cleanup()
		return nil, err
	}
	_, err = f.WriteString("\n# pgrealtime throwaway cluster\n" + strings.Join(conf, "\n") + "\n")
	f.Close()
	if err != nil {
		c.cleanup()
		return nil, err
	}
	if err := c.StartServer(ctx); err != nil {
		c.cleanup()
		return nil, err
	}
	return c, nil
}

// StartServer starts the (stopped) server and waits until it accepts
// connections.
func (c *Cluster) StartServer(ctx context.Context) error {
	if c.asUser != "" {
		// The log file may have been created by root earlier.
		_ = chownToPostgres(c.Dir)
	}
	out, err := c.run(ctx, filepath.Join(c.BinDir, "pg_ctl"), "-D", c.DataDir, "-l", c.LogFile, "-w", "-t", "60", "start")
	if err != nil {
		logTail, _ := os.ReadFile(c.LogFile)
		return fmt.Errorf("pg_ctl start: %w: %s\n%s", err, out, tail(string(logTail), 2000))
	}
	return nil
}

// Stop stops the server. mode is "fast" (default), "smart" or "immediate".
func (c *Cluster) Stop(ctx context.Context, mode string) error {
	if mode == "" {
		mode = "fast"
	}
	out, err := c.run(ctx, filepath.Join(c.BinDir, "pg_ctl"), "-D", c.DataDir, "-m", mode, "-w", "-t", "60", "stop")
	if err != nil {
		return fmt.Errorf("pg_ctl stop: %w: %s", err, out)
	}
	return nil
}

// Restart stops (fast) and starts the server on the same port.
func (c *Cluster) Restart(ctx context.Context) error {
	if err := c.Stop(ctx, "fast"); err != nil {
		return err
	}
	return c.StartServer(ctx)
}

// Close stops the server and removes the directory if Start created it.
func (c *Cluster) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := c.Stop(ctx, "immediate")
	c.cleanup()
	return err
}

func (c *Cluster) cleanup() {
	if c.ownsDir {
		os.RemoveAll(c.Dir)
	}
}

// URL returns a connection URL for database db as user postgres over TCP.
func (c *Cluster) URL(db string) string {
	if db == "" {
		db = "postgres"
	}
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.Port, db)
}

// Psql runs a SQL script with psql against database db (ON_ERROR_STOP).
func (c *Cluster) Psql(ctx context.Context, db string, sql string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.BinDir, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", c.URL(db), "-f", "-")
	cmd.Stdin = strings.NewReader(sql)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("psql: %w: %s", err, out)
	}
	return string(out), nil
}

func (c *Cluster) run(ctx context.Context, name string, args ...string) (string, error) {
	var cmd *exec.Cmd
	if c.asUser != "" {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", c.asUser, "--", name}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, name, args...)
	}
	cmd.Dir = c.Dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func chownToPostgres(dir string) error {
	u, err := user.Lookup("postgres")
	if err != nil {
		return fmt.Errorf("running as root needs the postgres user (created by the postgresql package): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	// The parent temp dir must be traversable by postgres.
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// FreePort asks the kernel for a free TCP port on 127.0.0.1.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
