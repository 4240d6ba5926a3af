package wsapi

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/rs/zerolog"

	"github.com/pgrealtime/pgrealtime/internal/jwkstest"
	"github.com/pgrealtime/pgrealtime/wsapi/auth"
)

const (
	testIssuer   = "https://idp.test/"
	testAudience = "realtime"
)

// jwksEnv is a server whose tokens are verified with the keys of an HTTPS
// JWKS server (the identity provider), with audience and issuer checks.
func jwksEnv(t *testing.T, idp *jwkstest.Server, wait time.Duration) *env {
	t.Helper()
	v, err := auth.NewVerifier(auth.Config{
		JWKSURL: idp.URL, HTTPClient: idp.Client(),
		JWKSRefreshInterval: time.Hour, JWKSUnknownKIDRefresh: time.Millisecond,
		UnknownKIDWait: wait, JWKSFetchTimeout: time.Minute,
		Audience: []string{testAudience}, Issuer: testIssuer,
		Logger: zerolog.New(zerolog.NewTestWriter(t)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return newEnv(t, envOpts{cfg: func(c *Config) { c.Verifier = v }})
}

// idpToken is an admin token of the identity provider signed with k.
func idpToken(t *testing.T, k *jwkstest.Key, sub string, extra ...any) string {
	t.Helper()
	c := jwt.MapClaims{"sub": sub, "role": "admin", "aud": testAudience, "iss": testIssuer, "exp": time.Now().Add(time.Hour).Unix()}
	for i := 0; i+1 < len(extra); i += 2 {
		c[extra[i].(string)] = extra[i+1]
	}
	return k.Sign(t, c)
}

func bearer(tok string) dialOpt {
	return dialOpt{header: http.Header{"Authorization": {"Bearer " + tok}}}
}

// expect401 dials with tok and checks the refusal: 401 invalid_token with
// a message containing msg.
func (e *env) expect401(tok, msg string) {
	e.t.Helper()
	status, body := e.upgradeStatus(bearer(tok))
	m, _ := body["message"].(string)
	if status != http.StatusUnauthorized || body["error"] != "invalid_token" || !strings.Contains(m, msg) {
		e.t.Fatalf("got %d %v, want 401 invalid_token saying %q", status, body, msg)
	}
}

// Real connections against keys that rotate at the provider: the new key
// works as soon as a token uses it, the removed key is refused (also the
// very token that connected before), and aud/iss are checked.
func TestJWKSURLConnections(t *testing.T) {
	a, b := jwkstest.NewECKey("a"), jwkstest.NewECKey("b")
	idp := jwkstest.NewServer(t, a)
	e := jwksEnv(t, idp, time.Second)

	tokA := idpToken(t, a, "ann")
	ca := e.dial(tokA)
	ca.sub("*")
	e.expect401(idpToken(t, a, "ann", "aud", "another-api"), `token audience (aud) "another-api" is not the audience this server requires ("realtime")`)
	e.expect401(idpToken(t, a, "ann", "iss", "https://evil.test/"), `token issuer (iss) "https://evil.test/" is not the issuer this server requires ("https://idp.test/")`)
	ca.expectError(msg{"type": "auth", "token": idpToken(t, a, "ann", "aud", nil)}, "invalid_token")

	idp.SetKeys(b) // rotation: b published, a removed
	e.dial(idpToken(t, b, "bob")).sub("*")
	e.expect401(tokA, `unknown key id (kid) "a"`) // accepted and cached before
	ca.expectError(msg{"type": "auth", "token": tokA}, "invalid_token")
	ca.sync() // the connection opened before the rotation stays open
}

// A hanging JWKS server: an upgrade whose kid is unknown waits at most the
// bound, and other upgrades go through meanwhile.
func TestJWKSURLHangingProvider(t *testing.T) {
	a, b := jwkstest.NewECKey("a"), jwkstest.NewECKey("b")
	idp := jwkstest.NewServer(t, a)
	const wait = 3 * time.Second
	e := jwksEnv(t, idp, wait)
	idp.Hang()
	idp.SetKeys(a, b)

	type outcome struct {
		status int
		body   map[string]any
		took   time.Duration
	}
	slow := make(chan outcome, 1)
	go func() {
		start := time.Now()
		ws, resp, err := e.dialRaw(bearer(idpToken(t, b, "bob")))
		o := outcome{took: time.Since(start)}
		if err == nil {
			ws.CloseNow()
			o.status = http.StatusSwitchingProtocols
		} else if resp != nil {
			o.status = resp.StatusCode
			b, _ := io.ReadAll(resp.Body)
			_ = jsonUnmarshal(b, &o.body)
		}
		slow <- o
	}()
	e.waitFor("the unknown kid's fetch to reach the provider", func() bool { return idp.Fetches() >= 2 })

	// While that upgrade waits on the provider (which hangs until Unhang),
	// others are served at once.
	for i := range 5 {
		start := time.Now()
		c := e.dial(idpToken(t, a, "ann", "n", i))
		c.sub("posts")
		d := time.Since(start)
		t.Logf("upgrade + subscribe with a cached key while the provider hangs: %v", d)
		if d > 2*time.Second {
			t.Fatalf("an upgrade with a cached key took %v while the provider hangs", d)
		}
	}
	o := <-slow
	if o.status != http.StatusUnauthorized || o.body["error"] != "invalid_token" {
		t.Fatalf("unknown kid with a hanging provider: %d %v", o.status, o.body)
	}
	t.Logf("unknown-kid upgrade with a hanging provider: 401 after %v (bound %v)", o.took, wait)
	if o.took > wait+3*time.Second {
		t.Fatalf("the unknown-kid upgrade took %v; bound %v", o.took, wait)
	}
	idp.Unhang()
	e.waitFor("the new key once the provider answers", func() bool {
		status, _ := e.upgradeStatus(bearer(idpToken(t, b, "bob")))
		return status == http.StatusSwitchingProtocols
	})
}
