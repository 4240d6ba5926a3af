package auth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/rs/zerolog"

	"github.com/pgrealtime/pgrealtime/internal/jwkstest"
)

// remoteVerifier is a Verifier on srv's JWKS URL, trusting its certificate.
func remoteVerifier(t *testing.T, srv *jwkstest.Server, cfg Config) *Verifier {
	t.Helper()
	cfg.JWKSURL = srv.URL
	cfg.HTTPClient = srv.Client()
	cfg.Logger = zerolog.New(zerolog.NewTestWriter(t))
	v, err := NewVerifier(cfg)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	t.Cleanup(v.Close)
	return v
}

func claimsFor(sub string) jwt.MapClaims {
	return jwt.MapClaims{"sub": sub, "role": "user", "exp": time.Now().Add(time.Hour).Unix()}
}

// expectRefused checks that Verify refuses tok with ErrInvalidToken and a
// message containing msg.
func expectRefused(t *testing.T, v *Verifier, tok, msg string) {
	t.Helper()
	id, err := v.Verify(tok)
	if err == nil {
		t.Fatalf("token accepted (identity %+v); want it refused with %q", id, msg)
	}
	if !errors.Is(err, ErrInvalidToken) || !strings.Contains(err.Error(), msg) {
		t.Fatalf("error %q: want ErrInvalidToken saying %q", err, msg)
	}
}

// eventually polls cond until it holds or 20 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20 s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Rotation through the unknown-kid fetch: the new key is accepted as soon
// as a token names it, and a token of the removed key is refused from then
// on, even though it was accepted and cached before.
func TestJWKSURLRotation(t *testing.T) {
	a, b := jwkstest.NewECKey("a"), jwkstest.NewECKey("b")
	srv := jwkstest.NewServer(t, a)
	v := remoteVerifier(t, srv, Config{JWKSRefreshInterval: time.Hour, JWKSUnknownKIDRefresh: time.Millisecond})
	if n := v.RemoteKeys(); n != 1 || srv.Fetches() != 1 {
		t.Fatalf("after start: %d keys cached, %d fetches; want 1 and 1", n, srv.Fetches())
	}
	if got := v.Algorithms(); strings.Join(got, ",") != "ES256,RS256" {
		t.Fatalf("Algorithms() = %v", got)
	}
	tokA, tokB := a.Sign(t, claimsFor("ann")), b.Sign(t, claimsFor("bob"))
	idA, err := v.Verify(tokA)
	if err != nil || idA.Subject != "ann" {
		t.Fatalf("token of key a: %+v, %v", idA, err)
	}
	if again, err := v.Verify(tokA); err != nil || again != idA {
		t.Fatalf("second Verify of the same token: %p %v, want the cached %p", again, err, idA)
	}
	expectRefused(t, v, tokB, `unknown key id (kid) "b": not among the keys fetched from the JWKS URL`)
	if srv.Fetches() != 2 {
		t.Fatalf("%d fetches; the unknown kid should have caused one", srv.Fetches())
	}

	srv.SetKeys(b) // rotate: b is published, a is removed
	idB, err := v.Verify(tokB)
	if err != nil || idB.Subject != "bob" {
		t.Fatalf("token of the new key after rotation: %+v, %v", idB, err)
	}
	expectRefused(t, v, tokA, `unknown key id (kid) "a"`)
	expectRefused(t, v, a.Sign(t, claimsFor("ann2")), `unknown key id (kid) "a"`)
	if id, err := v.Verify(tokB); err != nil || id != idB {
		t.Fatalf("token of the new key, again: %v", err)
	}
}

// Rotation through the interval refresh alone: no token triggers a fetch
// (the unknown-kid limiter allows one per hour and it is spent).
func TestJWKSURLIntervalRefresh(t *testing.T) {
	a, b := jwkstest.NewECKey("a"), jwkstest.NewECKey("b")
	srv := jwkstest.NewServer(t, a)
	v := remoteVerifier(t, srv, Config{JWKSRefreshInterval: 50 * time.Millisecond, JWKSUnknownKIDRefresh: time.Hour})
	tokA, tokB := a.Sign(t, claimsFor("ann")), b.Sign(t, claimsFor("bob"))
	if _, err := v.Verify(tokA); err != nil {
		t.Fatal(err)
	}
	expectRefused(t, v, tokB, `unknown key id (kid) "b"`) // spends the limiter
	srv.SetKeys(b)
	eventually(t, "removed key refused after an interval refresh", func() bool {
		_, err := v.Verify(tokA)
		return errors.Is(err, ErrInvalidToken)
	})
	eventually(t, "new key accepted after an interval refresh", func() bool {
		_, err := v.Verify(tokB)
		return err == nil
	})
}

// Tokens with unknown kids cause at most one fetch per unknown-kid interval,
// however many arrive.
func TestJWKSURLUnknownKIDRateLimit(t *testing.T) {
	a := jwkstest.NewECKey("a")
	srv := jwkstest.NewServer(t, a)
	v := remoteVerifier(t, srv, Config{JWKSRefreshInterval: time.Hour, JWKSUnknownKIDRefresh: time.Hour, UnknownKIDWait: 5 * time.Second})
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := jwkstest.NewECKey(fmt.Sprintf("unknown-%d", i))
			expectRefused(t, v, k.Sign(t, claimsFor("x")), "unknown key id (kid)")
		}()
	}
	wg.Wait()
	if n := srv.Fetches(); n != 2 {
		t.Fatalf("%d fetches for 40 unknown kids; want 2 (start + one refresh)", n)
	}
	if _, err := v.Verify(a.Sign(t, claimsFor("ann"))); err != nil {
		t.Fatal(err)
	}
}

// A JWKS server that hangs delays a token with an unknown kid by
// UnknownKIDWait at most, and never delays a token whose key is cached.
func TestJWKSURLHangingServer(t *testing.T) {
	a, b := jwkstest.NewECKey("a"), jwkstest.NewECKey("b")
	srv := jwkstest.NewServer(t, a)
	const wait = 300 * time.Millisecond
	v := remoteVerifier(t, srv, Config{JWKSRefreshInterval: time.Hour, JWKSUnknownKIDRefresh: time.Millisecond,
		UnknownKIDWait: wait, JWKSFetchTimeout: time.Minute})
	srv.Hang()
	srv.SetKeys(a, b)

	start := time.Now()
	expectRefused(t, v, b.Sign(t, claimsFor("bob")), `unknown key id (kid) "b": the key set is being fetched again from the JWKS URL, which has not answered within 300ms`)
	if d := time.Since(start); d > wait+2*time.Second {
		t.Fatalf("Verify of an unknown kid took %v with a hanging JWKS server; bound %v", d, wait)
	}
	eventually(t, "the fetch reached the hanging server", func() bool { return srv.Fetches() >= 2 })
	// While that fetch hangs, tokens of the cached key are verified at
	// once (fresh tokens: a full signature check, not the cache).
	for i := range 20 {
		start := time.Now()
		if _, err := v.Verify(a.Sign(t, claimsFor(fmt.Sprint("ann", i)))); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("Verify of a cached key took %v while the JWKS server hangs", d)
		}
	}
	// Odd kid headers are not unknown kids: no fetch, no wait.
	for _, kid := range []any{"", 42} {
		start := time.Now()
		if _, err := v.Verify(a.SignKid(t, kid, claimsFor("odd"))); err != nil {
			t.Fatalf("kid %#v: %v", kid, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("Verify with kid %#v took %v while the JWKS server hangs", kid, d)
		}
	}
	srv.Unhang()
	eventually(t, "new key accepted once the server answers", func() bool {
		_, err := v.Verify(b.Sign(t, claimsFor("bob")))
		return err == nil
	})
}

// A JWKS URL that fails at start does not stop the Verifier: tokens are
// refused with a clear message until a fetch succeeds.
func TestJWKSURLUnavailableAtStart(t *testing.T) {
	a := jwkstest.NewECKey("a")
	srv := jwkstest.NewServer(t, a)
	srv.SetStatus(http.StatusServiceUnavailable)
	v := remoteVerifier(t, srv, Config{JWKSRefreshInterval: time.Hour, JWKSUnknownKIDRefresh: time.Millisecond})
	if v.RemoteKeys() != 0 || !v.Enabled() {
		t.Fatalf("RemoteKeys %d, Enabled %v", v.RemoteKeys(), v.Enabled())
	}
	tok := a.Sign(t, claimsFor("ann"))
	expectRefused(t, v, tok, `unknown key id (kid) "a": no keys loaded from the JWKS URL`)
	srv.SetStatus(0)
	if _, err := v.Verify(tok); err != nil {
		t.Fatalf("after the JWKS URL recovered: %v", err)
	}

	// Nothing listening: NewVerifier returns at once, without error.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	start := time.Now()
	v2, err := NewVerifier(Config{JWKSURL: "http://" + addr + "/jwks.json", Logger: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	defer v2.Close()
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("NewVerifier took %v on a refused connection", d)
	}
	expectRefused(t, v2, tok, "no keys loaded from the JWKS URL")
}

// Keys of both types, a token without kid, a key of the wrong type, and the
// cache honouring exp for tokens of remote keys.
func TestJWKSURLKeys(t *testing.T) {
	k := getKeys(t)
	ec := jwkstest.NewECKey("")
	srv := jwkstest.NewServer(t, ec, jwkstest.KeyFromRSA("r1", k.rsa1)) // an EC key without kid, an RSA key
	now := time.Now()
	clock := now
	var mu sync.Mutex
	v := remoteVerifier(t, srv, Config{Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }})
	if _, err := v.Verify(sign(t, jwt.SigningMethodRS256, "r1", k.rsa1, claimsFor("rs"))); err != nil {
		t.Fatalf("RS256: %v", err)
	}
	if id, err := v.Verify(ec.Sign(t, claimsFor("es"))); err != nil || id.Subject != "es" {
		t.Fatalf("ES256 without kid: %v", err)
	}
	expectRefused(t, v, sign(t, jwt.SigningMethodES256, "r1", k.ec1, claimsFor("x")), `token is signed with ES256 but key "r1" is published for another algorithm`)
	expectRefused(t, v, sign(t, jwt.SigningMethodRS256, "r1", k.rsa2, claimsFor("x")), "signature does not match")
	expectRefused(t, v, sign(t, jwt.SigningMethodHS256, "r1", []byte("0123456789abcdef0123456789abcdef"), claimsFor("x")), "HS256 are not accepted")

	short := sign(t, jwt.SigningMethodRS256, "r1", k.rsa1, jwt.MapClaims{"sub": "s", "exp": now.Add(time.Minute).Unix()})
	if _, err := v.Verify(short); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	clock = now.Add(2 * time.Minute)
	mu.Unlock()
	if _, err := v.Verify(short); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("cached token past exp: %v", err)
	}
}

func TestAudienceAndIssuer(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	v, err := NewVerifier(Config{HS256Secret: secret, Audience: []string{"api", "realtime"}, Issuer: "https://idp.example/"})
	if err != nil {
		t.Fatal(err)
	}
	tok := func(extra jwt.MapClaims) string {
		c := jwt.MapClaims{"sub": "u", "aud": "api", "iss": "https://idp.example/", "exp": time.Now().Add(time.Hour).Unix()}
		for key, val := range extra {
			if val == nil {
				delete(c, key)
			} else {
				c[key] = val
			}
		}
		return sign(t, jwt.SigningMethodHS256, "", secret, c)
	}
	for _, ok := range []jwt.MapClaims{{}, {"aud": "realtime"}, {"aud": []string{"other", "realtime"}}} {
		if _, err := v.Verify(tok(ok)); err != nil {
			t.Fatalf("claims %v: %v", ok, err)
		}
	}
	for _, tc := range []struct {
		extra jwt.MapClaims
		msg   string
	}{
		{jwt.MapClaims{"aud": "other"}, `token audience (aud) "other" is not the audience this server requires ("api" or "realtime")`},
		{jwt.MapClaims{"aud": []string{"a", "b"}}, `token audience (aud) "a" or "b" is not the audience`},
		{jwt.MapClaims{"aud": nil}, `token has no aud claim; this server requires the audience "api" or "realtime"`},
		{jwt.MapClaims{"iss": "https://evil.example/"}, `token issuer (iss) "https://evil.example/" is not the issuer this server requires ("https://idp.example/")`},
		{jwt.MapClaims{"iss": nil}, `token has no iss claim; this server requires the issuer "https://idp.example/"`},
		{jwt.MapClaims{"iss": nil, "aud": "x"}, `token audience (aud) "x" is not the audience this server requires ("api" or "realtime"); token has no iss claim`},
	} {
		expectRefused(t, v, tok(tc.extra), tc.msg)
	}
	if _, err := NewVerifier(Config{HS256Secret: secret, Audience: []string{""}}); err == nil {
		t.Fatal("an empty audience was accepted")
	}
}

func TestJWKSURLConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg Config
		msg string
	}{
		{Config{JWKSURL: "http://idp.example/jwks.json"}, "plain http:// is accepted only for localhost"},
		{Config{JWKSURL: "ftp://idp.example/jwks.json"}, `got scheme "ftp"`},
		{Config{JWKSURL: "idp.example/jwks.json"}, "must be an absolute https:// URL"},
		{Config{JWKSURL: "https://idp.example/jwks.json", JWKS: []byte(`{"keys":[]}`)}, "either a JWKS file or a JWKS URL, not both"},
		{Config{JWKSURL: "https://idp.example/jwks.json", JWKSRefreshInterval: -time.Second}, "refresh interval must not be negative"},
	} {
		if _, err := NewVerifier(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%+v: error %v, want %q", tc.cfg, err, tc.msg)
		}
	}
	for _, ok := range []string{"http://127.0.0.1:1/jwks.json", "http://localhost:1/jwks", "http://[::1]:1/jwks"} {
		if err := CheckJWKSURL(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
}

// Close ends the background refresh: no fetch after it.
func TestJWKSURLClose(t *testing.T) {
	srv := jwkstest.NewServer(t, jwkstest.NewECKey("a"))
	v := remoteVerifier(t, srv, Config{JWKSRefreshInterval: 20 * time.Millisecond})
	eventually(t, "an interval refresh", func() bool { return srv.Fetches() >= 2 })
	v.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	n := srv.Fetches()
	<-ctx.Done()
	if srv.Fetches() > n+1 { // one may have been in flight
		t.Fatalf("%d fetches after Close", srv.Fetches()-n)
	}
}

// A JWKS response past the size bound fails the fetch (the keys fetched
// before stay) instead of being read into memory whole.
func TestJWKSURLResponseTooLarge(t *testing.T) {
	a := jwkstest.NewECKey("a")
	srv := jwkstest.NewServer(t, a)
	v := remoteVerifier(t, srv, Config{JWKSRefreshInterval: time.Hour, JWKSUnknownKIDRefresh: time.Millisecond})
	// Valid JSON with no keys: read whole, it would empty the key set.
	srv.SetBody([]byte(`{"keys":[],"padding":"` + strings.Repeat("x", 2<<20) + `"}`))
	expectRefused(t, v, jwkstest.NewECKey("b").Sign(t, claimsFor("b")), `unknown key id (kid) "b"`)
	if srv.Fetches() != 2 {
		t.Fatalf("%d fetches, want 2", srv.Fetches())
	}
	if _, err := v.Verify(a.Sign(t, claimsFor("ann"))); err != nil {
		t.Fatalf("key fetched before the oversized response: %v", err)
	}
}

// syncBuffer is a log sink safe for the background fetch's goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A provider whose certificate the system's CAs do not know (a private CA,
// a local provider): the log says what to do about it, not only the x509
// error.
func TestJWKSURLUnknownCAHint(t *testing.T) {
	a := jwkstest.NewECKey("a")
	srv := jwkstest.NewServer(t, a)
	var logs syncBuffer
	v, err := NewVerifier(Config{JWKSURL: srv.URL, JWKSRefreshInterval: time.Hour, JWKSUnknownKIDRefresh: time.Millisecond, Logger: zerolog.New(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	expectRefused(t, v, a.Sign(t, claimsFor("ann")), "no keys loaded from the JWKS URL")
	eventually(t, "a log line naming SSL_CERT_FILE", func() bool {
		return strings.Contains(logs.String(), "SSL_CERT_FILE")
	})
}
