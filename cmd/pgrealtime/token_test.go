package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/wsapi/auth"
)

func TestTokenIsAcceptedByTheVerifier(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"token", "--sub", "ann", "--role", "user", "--ttl", "5m"}, envOf("PGREALTIME_JWT_SECRET", "s3cret"), &out, &out)
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(auth.Config{HS256Secret: []byte("s3cret")})
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Verify(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatal(err)
	}
	if id.Subject != "ann" || id.Role != "user" || time.Until(id.ExpiresAt) > 5*time.Minute || time.Until(id.ExpiresAt) < 4*time.Minute {
		t.Fatalf("identity %+v", id)
	}
	other, _ := auth.NewVerifier(auth.Config{HS256Secret: []byte("other")})
	if _, err := other.Verify(strings.TrimSpace(out.String())); err == nil {
		t.Fatal("a token signed with another secret was accepted")
	}
}

// With --jwt-audience/--jwt-issuer, minted tokens carry them and pass a
// verifier that requires them.
func TestTokenCarriesAudienceAndIssuer(t *testing.T) {
	var out bytes.Buffer
	env := envOf("PGREALTIME_JWT_SECRET", "s3cret", "PGREALTIME_JWT_AUDIENCE", "realtime, api", "PGREALTIME_JWT_ISSUER", "https://idp.test/")
	if err := run(context.Background(), []string{"token", "--sub", "ann"}, env, &out, &out); err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(auth.Config{HS256Secret: []byte("s3cret"), Audience: []string{"realtime"}, Issuer: "https://idp.test/"})
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Verify(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatal(err)
	}
	if id.Claims["aud"] != "realtime" || id.Claims["iss"] != "https://idp.test/" {
		t.Fatalf("claims %v", id.Claims)
	}
}

func TestTokenBadSettings(t *testing.T) {
	runExpectConfigError(t, []string{"token"}, envOf(), "--jwt-secret")
	runExpectConfigError(t, []string{"token", "--jwt-secret=x", "--ttl=forever"}, envOf(), "--ttl", `"forever"`)
	runExpectConfigError(t, []string{"token", "--jwt-secret=x", "--ttl=-1h"}, envOf(), "--ttl")
	runExpectConfigError(t, []string{"token", "--jwt-secret=x", "--sub="}, envOf(), "--sub")
}
