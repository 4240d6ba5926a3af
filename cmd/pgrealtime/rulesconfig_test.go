package main

import (
	"testing"
)

// TestRuleCompileErrorExit2 needs the real rules compiler (wsapi/rules).
func TestRuleCompileErrorExit2(t *testing.T) {
	db := []string{"--database-url", "postgres://postgres@127.0.0.1:1/none?sslmode=disable"}
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"syntax", "collections:\n  posts:\n    read: \"true\"\n  audit:logins:\n    read: \"auth.sub ==\"\n", []string{"--config", `"audit:logins"`}},
		{"not boolean", "collections:\n  posts:\n    read: \"1 + 1\"\n", []string{"--config", `"posts"`, "boolean"}},
		{"default", "default:\n  read: \"nope(\"\n", []string{"--config", "default"}},
		{"broadcast", "collections:\n  chat:\n    broadcast: \"record.x == 1\"\n", []string{"--config", `"chat"`, "broadcast rule"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := writeFile(t, "rules.yaml", tc.yaml)
			runExpectConfigError(t, append(append([]string{"serve"}, db...), "--config", f), envOf(), append(tc.want, f)...)
		})
	}
}
