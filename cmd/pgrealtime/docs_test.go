package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"
)

func repoFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestComposeUsesRealSettings checks docker-compose.yml against the flag
// table: every PGREALTIME_* variable it sets must be one the binary reads.
func TestComposeUsesRealSettings(t *testing.T) {
	var compose struct {
		Services map[string]struct {
			Image       string            `yaml:"image"`
			Build       any               `yaml:"build"`
			Command     []string          `yaml:"command"`
			Environment map[string]string `yaml:"environment"`
			Volumes     []string          `yaml:"volumes"`
			Ports       []string          `yaml:"ports"`
			DependsOn   map[string]struct {
				Condition string `yaml:"condition"`
			} `yaml:"depends_on"`
			Healthcheck struct {
				Test []string `yaml:"test"`
			} `yaml:"healthcheck"`
		} `yaml:"services"`
		Volumes map[string]any `yaml:"volumes"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(repoFile(t, "docker-compose.yml")))
	dec.KnownFields(false)
	if err := dec.Decode(&compose); err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, e := range knownEnv() {
		known[e] = true
	}
	pg, ok := compose.Services["postgres"]
	if !ok {
		t.Fatal("no postgres service")
	}
	cmd := strings.Join(pg.Command, " ")
	for _, want := range []string{"wal_level=logical", "max_slot_wal_keep_size="} {
		if !strings.Contains(cmd, want) {
			t.Errorf("postgres command %q lacks %s", cmd, want)
		}
	}
	if len(pg.Healthcheck.Test) == 0 || !strings.Contains(strings.Join(pg.Healthcheck.Test, " "), "pg_isready") {
		t.Errorf("postgres healthcheck: %q", pg.Healthcheck.Test)
	}
	app, ok := compose.Services["pgrealtime"]
	if !ok {
		t.Fatal("no pgrealtime service")
	}
	if app.Build == nil {
		t.Error("pgrealtime is not built from the Dockerfile")
	}
	if app.DependsOn["postgres"].Condition != "service_healthy" {
		t.Errorf("depends_on postgres: %+v", app.DependsOn)
	}
	if strings.Join(app.Healthcheck.Test, " ") != "CMD /pgrealtime healthcheck" {
		t.Errorf("pgrealtime healthcheck %q", app.Healthcheck.Test)
	}
	if len(app.Environment) == 0 {
		t.Fatal("pgrealtime has no environment")
	}
	env := map[string]string{}
	for k, v := range app.Environment {
		if !known[k] {
			t.Errorf("docker-compose.yml sets %s, which pgrealtime does not read", k)
		}
		env[k] = v
	}
	if env["DATABASE_URL"] == "" && env["PGREALTIME_DATABASE_URL"] == "" {
		t.Error("no database URL in the compose environment")
	}
	// The configuration it describes must be valid: parse it like serve does.
	cfg, err := parseConfig(cmdServe, "serve", nil, func(k string) string { return env[k] }, &bytes.Buffer{})
	if err != nil {
		t.Fatalf("compose environment is not a valid configuration: %v", err)
	}
	if err := checkDatabaseURL(cfg); err != nil {
		t.Fatal(err)
	}
	// The mounted rules file exists and compiles.
	for _, v := range app.Volumes {
		src, dst, _ := strings.Cut(v, ":")
		dst, _, _ = strings.Cut(dst, ":")
		if dst == cfg.ConfigFile {
			rc, err := loadRules(filepath.Join("..", "..", src), "--config")
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := compileAccess(cfg, rc, zerolog.Nop()); err != nil {
				t.Fatalf("%s: %v", src, err)
			}
			cfg.ConfigFile = ""
		}
	}
	if cfg.ConfigFile != "" {
		t.Errorf("PGREALTIME_CONFIG=%s is not mounted", cfg.ConfigFile)
	}
	if !strings.Contains(strings.Join(app.Ports, " "), "8080") {
		t.Errorf("ports %q", app.Ports)
	}
}

func TestDockerfile(t *testing.T) {
	df := string(repoFile(t, "Dockerfile"))
	for _, want := range []string{"CGO_ENABLED=0", "./cmd/pgrealtime", "USER 65532", "EXPOSE 8080", `HEALTHCHECK`, `"/pgrealtime", "healthcheck"`} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	// The subcommand the HEALTHCHECK runs exists.
	var out bytes.Buffer
	if err := run(context.Background(), []string{"healthcheck", "--help"}, envOf(), &out, &out); err != nil {
		t.Fatal(err)
	}
}

// TestReadmeFlagTable fails when the README's flag table is not what
// `pgrealtime flags-markdown` prints.
func TestReadmeFlagTable(t *testing.T) {
	readme := string(repoFile(t, "README.md"))
	re := regexp.MustCompile(`(?s)<!-- flags:begin -->\n(.*?)<!-- flags:end -->`)
	m := re.FindStringSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no <!-- flags:begin --> … <!-- flags:end --> section")
	}
	if m[1] != flagsMarkdown() {
		t.Errorf("README flag table is stale; replace it with the output of `go run ./cmd/pgrealtime flags-markdown`.\nREADME:\n%s\nflags:\n%s", m[1], flagsMarkdown())
	}
}

// TestReadmeStartsWithTheTwoCommands keeps the README's first section true.
func TestReadmeStartsWithTheTwoCommands(t *testing.T) {
	readme := string(repoFile(t, "README.md"))
	head := readme
	if i := strings.Index(readme, "\n## "); i > 0 {
		head = readme[:i]
	}
	if !strings.HasPrefix(readme, "# pgrealtime\n") {
		t.Error("README does not start with the title")
	}
	for _, want := range []string{"make dev", "make test"} {
		if !strings.Contains(head, want) {
			t.Errorf("README's first section lacks %q", want)
		}
	}
	mk := string(repoFile(t, "Makefile"))
	for _, target := range []string{"\ndev:", "\ntest:", "\nbuild:", "\ntest-browser:"} {
		if !strings.Contains(mk, target) {
			t.Errorf("Makefile lacks target %q", strings.TrimSpace(target))
		}
	}
	ci := string(repoFile(t, ".ci/run"))
	if !strings.HasSuffix(strings.TrimSpace(ci), "\nmake test") {
		t.Error(".ci/run must end with exactly `make test`")
	}
}

// TestReadmeLinks: every relative link of the README points at a file of
// the repository.
func TestReadmeLinks(t *testing.T) {
	readme := string(repoFile(t, "README.md"))
	for _, m := range regexp.MustCompile(`\]\(([^)#\s]+)(#[^)]*)?\)`).FindAllStringSubmatch(readme, -1) {
		target := m[1]
		if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
			continue
		}
		if _, err := os.Stat(filepath.Join("..", "..", target)); err != nil {
			t.Errorf("README links to %s, which does not exist", target)
		}
	}
}

// TestReadmeListsEveryMetric: every metric defined in internal/metrics is
// documented in the README, with its help text as its meaning.
func TestReadmeListsEveryMetric(t *testing.T) {
	readme := string(repoFile(t, "README.md"))
	// Every file of internal/metrics that defines metrics (metrics.go,
	// redis.go, …).
	files, err := filepath.Glob(filepath.Join("..", "..", "internal", "metrics", "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("internal/metrics: %v", err)
	}
	var src string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src += string(repoFile(t, filepath.Join("internal", "metrics", filepath.Base(f))))
	}
	names := regexp.MustCompile(`Name: "([a-z_]+)", Help: "([^"]+)"`).FindAllStringSubmatch(src, -1)
	if len(names) < 10 || len(names) != strings.Count(src, "Name: ") {
		t.Fatalf("found %d metric names with a help text in internal/metrics, of %d", len(names), strings.Count(src, "Name: "))
	}
	for _, n := range names {
		if !strings.Contains(readme, "`pgrealtime_"+n[1]+"`") {
			t.Errorf("README does not document pgrealtime_%s", n[1])
		} else if row := "| `pgrealtime_" + n[1] + "` | " + n[2] + " |"; !strings.Contains(readme, row) {
			t.Errorf("README's row of pgrealtime_%s differs from its help text; want\n%s", n[1], row)
		}
	}
}
