package wsapi

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/wsapi/rules"
)

// upgradeStatus dials and returns the HTTP status and JSON error body of a
// refused upgrade.
func (e *env) upgradeStatus(o dialOpt) (int, map[string]any) {
	e.t.Helper()
	ws, resp, err := e.dialRaw(o)
	if err == nil {
		e.wrap(ws)
		return 101, nil
	}
	if resp == nil {
		e.t.Fatalf("dial: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		e.t.Fatalf("HTTP %d body is not JSON: %s", resp.StatusCode, b)
	}
	return resp.StatusCode, m
}

func TestTokenAtUpgrade(t *testing.T) {
	e := newEnv(t, envOpts{})
	admin := adminToken(t)
	bearer := func(tok string) dialOpt { return dialOpt{header: http.Header{"Authorization": {"Bearer " + tok}}} }

	t.Run("header", func(t *testing.T) {
		c := e.dial(admin)
		c.sub("*")
	})
	t.Run("query", func(t *testing.T) {
		ws, _, err := e.dialRaw(dialOpt{query: "access_token=" + url.QueryEscape(admin)})
		if err != nil {
			t.Fatal(err)
		}
		e.wrap(ws).sub("*")
	})
	t.Run("anonymous", func(t *testing.T) {
		e.dial("").expectError(msg{"type": "subscribe", "topics": []string{"*"}}, "forbidden")
	})
	for name, tc := range map[string]struct {
		o    dialOpt
		code string
	}{
		"garbage header": {bearer("not.a.jwt"), "invalid_token"},
		"wrong key":      {bearer(signWith(t, []byte("other-secret-0123456789abcdefghij"), "u", "admin")), "invalid_token"},
		"expired header": {bearer(token(t, "u", "admin", -time.Minute)), "token_expired"},
		"expired query":  {dialOpt{query: "access_token=" + token(t, "u", "admin", -time.Minute)}, "token_expired"},
		"garbage query":  {dialOpt{query: "access_token=xyz"}, "invalid_token"},
		"alg none":       {bearer("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1Iiwicm9sZSI6ImFkbWluIn0."), "invalid_token"},
	} {
		t.Run(name, func(t *testing.T) {
			status, body := e.upgradeStatus(tc.o)
			if status != http.StatusUnauthorized || body["error"] != tc.code || body["message"] == "" {
				t.Fatalf("got %d %v, want 401 %s", status, body, tc.code)
			}
		})
	}
}

func TestTokenRefusedWithoutVerifier(t *testing.T) {
	e := newEnv(t, envOpts{noAuth: true})
	status, body := e.upgradeStatus(dialOpt{header: http.Header{"Authorization": {"Bearer " + adminToken(t)}}})
	if status != http.StatusUnauthorized || body["error"] != "invalid_token" {
		t.Fatalf("got %d %v", status, body)
	}
	c := e.dial("")
	c.expectError(msg{"type": "auth", "token": adminToken(t)}, "invalid_token")
	c.expectError(msg{"type": "subscribe", "topics": []string{"posts"}}, "forbidden")
}

func TestAuthMessage(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := e.dial("")
	c.expectError(msg{"type": "subscribe", "topics": []string{"*"}}, "forbidden")
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	r, _ := c.request(msg{"type": "auth", "token": token(t, "root", "admin", time.Until(exp)+500*time.Millisecond)})
	if r.str("type") != "authenticated" || r.str("subject") != "root" || r.str("role") != "admin" || r.str("expires_at") == "" {
		t.Fatalf("got %v", r)
	}
	if _, err := time.Parse(time.RFC3339, r.str("expires_at")); err != nil {
		t.Fatalf("expires_at %q: %v", r.str("expires_at"), err)
	}
	if rv, ok := r["revoked"].([]any); !ok || len(rv) != 0 {
		t.Fatalf("revoked = %v", r["revoked"])
	}
	c.sub("*")
	// A bad token keeps the connection and the old identity.
	c.expectError(msg{"type": "auth", "token": "garbage"}, "invalid_token")
	c.expectError(msg{"type": "auth", "token": token(t, "u", "user", -time.Minute)}, "token_expired")
	c.expectError(msg{"type": "auth", "token": ""}, "invalid_token")
	e.publish(rec("posts", "create", "1"))
	if got := c.sync(); len(got) != 1 {
		t.Fatalf("after refused auth got %d events, want 1", len(got))
	}
	// A token without exp: no expires_at.
	r, _ = c.request(msg{"type": "auth", "token": token(t, "root", "admin", 0)})
	if _, has := r["expires_at"]; r.str("type") != "authenticated" || has {
		t.Fatalf("got %v", r)
	}
}

func TestDowngradeRevokes(t *testing.T) {
	e := newEnv(t, envOpts{}) // no rules: only the admin reads
	c := e.dial(adminToken(t))
	c.sub("*", "posts", "comments.1")
	r, _ := c.request(msg{"type": "auth", "token": token(t, "u1", "user", time.Hour)})
	if r.str("type") != "authenticated" || r.str("role") != "user" {
		t.Fatalf("got %v", r)
	}
	if got := r.strs("revoked"); len(got) != 3 || got[0] != "*" || got[1] != "comments.1" || got[2] != "posts" {
		t.Fatalf("revoked = %v", got)
	}
	e.publish(rec("posts", "create", "1"), rec("comments", "create", "1"))
	if got := c.sync(); len(got) != 0 {
		t.Fatalf("after downgrade got %v", got)
	}
	c.expectError(msg{"type": "subscribe", "topics": []string{"*"}}, "forbidden")
}

// signWith signs an admin-looking token with another secret.
func signWith(t *testing.T, secret []byte, sub, role string) string {
	t.Helper()
	saved := testSecret
	testSecret = secret
	defer func() { testSecret = saved }()
	return token(t, sub, role, time.Hour)
}

// With rules, a downgrade revokes only what the new identity may not read,
// and an upgrade revokes nothing.
func TestDowngradeRevokesWithRules(t *testing.T) {
	pub, signed := "true", "auth.sub != ''"
	e := newEnv(t, envOpts{rules: &rules.Config{Collections: map[string]rules.Collection{
		"posts": {Read: &pub}, "chat": {Read: &signed},
	}}})
	c := e.dial(token(t, "ann", "user", time.Hour))
	c.sub("posts", "chat.room1", "chat")
	c.expectError(msg{"type": "subscribe", "topics": []string{"secret"}}, "forbidden")
	r, _ := c.request(msg{"type": "auth", "token": token(t, "", "user", time.Hour)}) // no subject
	if got := r.strs("revoked"); r.str("type") != "authenticated" || len(got) != 2 || got[0] != "chat" || got[1] != "chat.room1" {
		t.Fatalf("got %v", r)
	}
	e.publish(rec("posts", "create", "1"), rec("chat", "create", "room1"))
	if got := c.sync(); len(got) != 1 || got[0].str("collection") != "posts" {
		t.Fatalf("after downgrade got %v", got)
	}
	r, _ = c.request(msg{"type": "auth", "token": adminToken(t)})
	if got := r.strs("revoked"); r.str("type") != "authenticated" || len(got) != 0 {
		t.Fatalf("upgrade: %v", r)
	}
	c.sub("secret", "*")
}
