package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/pgrealtime/pgrealtime/internal/jwkstest"
)

// TestServeWithJWKSURL runs the binary against an HTTPS identity provider
// whose certificate it trusts through SSL_CERT_FILE (as a private CA would
// be trusted in production). The provider is down at start: serve runs
// anyway, logs why tokens are refused, and accepts the provider's tokens
// once it answers; audience and issuer are checked.
func TestServeWithJWKSURL(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	key := jwkstest.NewECKey("k1")
	idp := jwkstest.NewServer(t, key)
	idp.SetStatus(http.StatusServiceUnavailable)
	ca := filepath.Join(t.TempDir(), "idp-ca.pem")
	if err := os.WriteFile(ca, idp.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	p := startProc(t, []string{
		"SSL_CERT_FILE=" + ca,
		"DATABASE_URL=postgres://postgres@127.0.0.1:1/none?sslmode=disable", // unreachable: serve keeps retrying
		"PGREALTIME_JWKS_URL=" + idp.URL,
		"PGREALTIME_JWT_AUDIENCE=realtime",
		"PGREALTIME_JWT_ISSUER=https://idp.test/",
	}, "serve", "--listen", addr, "--jwks-unknown-kid-refresh", "1s")
	p.waitHTTP(ctx, "http://"+addr+"/healthz", 200)
	if logs := p.stderr.String(); !strings.Contains(logs, "no signing keys from --jwks-url yet") {
		t.Fatalf("no error logged for the unreachable JWKS URL:\n%s", logs)
	}

	claims := func(aud string) jwt.MapClaims {
		return jwt.MapClaims{"sub": "ann", "role": "admin", "aud": aud, "iss": "https://idp.test/", "exp": time.Now().Add(time.Hour).Unix()}
	}
	tok := key.Sign(t, claims("realtime"))
	status, body := upgrade(ctx, t, addr, tok)
	if status != http.StatusUnauthorized || body["error"] != "invalid_token" || !strings.Contains(body["message"].(string), "no keys loaded from the JWKS URL") {
		t.Fatalf("while the provider is down: %d %v", status, body)
	}

	idp.SetStatus(0)
	deadline := time.Now().Add(30 * time.Second)
	for {
		status, body = upgrade(ctx, t, addr, tok)
		if status == http.StatusSwitchingProtocols {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the provider's token is still refused after it recovered: %d %v", status, body)
		}
		time.Sleep(100 * time.Millisecond) // the unknown-kid fetch is limited to one per second
	}
	// The token's identity, through an auth message: a subscribe would wait
	// for the WAL stream (there is no Postgres here) to give its position.
	w := dialWS(ctx, t, addr, tok)
	w.send(ctx, map[string]any{"type": "auth", "id": "a1", "token": tok})
	if r, err := w.read(ctx); err != nil || r.str("type") != "authenticated" || r.str("subject") != "ann" || r.str("role") != "admin" {
		t.Fatalf("admin token from the provider: %v %v", r, err)
	}
	status, body = upgrade(ctx, t, addr, key.Sign(t, claims("other-api")))
	if status != http.StatusUnauthorized || !strings.Contains(body["message"].(string), `token audience (aud) "other-api" is not the audience this server requires ("realtime")`) {
		t.Fatalf("wrong audience: %d %v", status, body)
	}
}

// upgrade tries a WebSocket upgrade with tok and returns the HTTP status
// and, for a refusal, its JSON body.
func upgrade(ctx context.Context, t *testing.T, addr, tok string) (int, map[string]any) {
	t.Helper()
	c, resp, err := websocket.Dial(ctx, "ws://"+addr+"/realtime", &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}})
	if err == nil {
		c.CloseNow()
		return http.StatusSwitchingProtocols, nil
	}
	if resp == nil {
		t.Fatalf("dial: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("HTTP %d body is not JSON: %s", resp.StatusCode, b)
	}
	return resp.StatusCode, m
}
