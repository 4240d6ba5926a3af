// Package jwkstest is an identity provider for tests: an HTTPS server that
// publishes a JWKS whose keys can be rotated while it runs, counts the
// fetches, and can be made to fail or to hang; and keys that sign tokens.
// Only tests import it.
package jwkstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// Key is a signing key with its kid.
type Key struct {
	Kid string
	rsa *rsa.PrivateKey
	ec  *ecdsa.PrivateKey
}

// NewECKey returns a new P-256 key (ES256).
func NewECKey(kid string) *Key {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return &Key{Kid: kid, ec: k}
}

// NewRSAKey returns a new 2048-bit RSA key (RS256).
func NewRSAKey(kid string) *Key {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return &Key{Kid: kid, rsa: k}
}

// KeyFromRSA wraps an existing RSA key (generating one is slow under -race).
func KeyFromRSA(kid string, k *rsa.PrivateKey) *Key { return &Key{Kid: kid, rsa: k} }

// Sign returns a token with these claims, signed with k and carrying its
// kid (when not empty).
func (k *Key) Sign(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	var kid any
	if k.Kid != "" {
		kid = k.Kid
	}
	return k.SignKid(t, kid, claims)
}

// SignKid signs with k but puts kid in the header as it is (nil: no kid
// header), for tokens with an odd kid.
func (k *Key) SignKid(t testing.TB, kid any, claims jwt.MapClaims) string {
	t.Helper()
	method, key := jwt.SigningMethod(jwt.SigningMethodES256), any(k.ec)
	if k.rsa != nil {
		method, key = jwt.SigningMethodRS256, k.rsa
	}
	tok := jwt.NewWithClaims(method, claims)
	if kid != nil {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return s
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// JWK is the public key as a JWKS entry.
func (k *Key) JWK() map[string]any {
	var m map[string]any
	if k.rsa != nil {
		m = map[string]any{"kty": "RSA", "use": "sig", "alg": "RS256",
			"n": b64(k.rsa.N.Bytes()), "e": b64(big.NewInt(int64(k.rsa.E)).Bytes())}
	} else {
		raw, err := k.ec.PublicKey.Bytes() // 0x04 || X || Y
		if err != nil {
			panic(err)
		}
		m = map[string]any{"kty": "EC", "use": "sig", "alg": "ES256", "crv": "P-256", "x": b64(raw[1:33]), "y": b64(raw[33:65])}
	}
	if k.Kid != "" {
		m["kid"] = k.Kid
	}
	return m
}

// Server publishes a JWKS over HTTPS at URL.
type Server struct {
	ts      *httptest.Server
	URL     string // the JWKS URL
	mu      sync.Mutex
	body    []byte
	status  int           // answer with this status instead of the JWKS (0: 200)
	hang    chan struct{} // non-nil: requests block until it is closed
	fetches atomic.Int64
	done    chan struct{} // closed at cleanup: releases hung requests
}

// NewServer starts an HTTPS JWKS server publishing keys; it stops at the
// end of the test.
func NewServer(t testing.TB, keys ...*Key) *Server {
	s := &Server{done: make(chan struct{})}
	s.SetKeys(keys...)
	s.ts = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	s.URL = s.ts.URL + "/.well-known/jwks.json"
	t.Cleanup(s.ts.Close)
	t.Cleanup(func() { close(s.done) }) // runs first: hung requests end
	return s
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.fetches.Add(1)
	s.mu.Lock()
	body, status, hang := s.body, s.status, s.hang
	s.mu.Unlock()
	if hang != nil {
		select {
		case <-hang:
		case <-s.done:
			return
		case <-r.Context().Done():
			return
		}
	}
	if status != 0 {
		http.Error(w, http.StatusText(status), status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(body)
}

// SetKeys replaces the published keys (a rotation).
func (s *Server) SetKeys(keys ...*Key) {
	jwks := make([]map[string]any, len(keys))
	for i, k := range keys {
		jwks[i] = k.JWK()
	}
	b, err := json.Marshal(map[string]any{"keys": jwks})
	if err != nil {
		panic(err)
	}
	s.mu.Lock()
	s.body = b
	s.mu.Unlock()
}

// SetBody publishes raw bytes instead of a key set.
func (s *Server) SetBody(raw []byte) {
	s.mu.Lock()
	s.body = raw
	s.mu.Unlock()
}

// SetStatus makes the server answer every request with this HTTP status
// (0: serve the JWKS again).
func (s *Server) SetStatus(code int) {
	s.mu.Lock()
	s.status = code
	s.mu.Unlock()
}

// Hang makes requests block until Unhang (or the end of the test).
func (s *Server) Hang() {
	s.mu.Lock()
	if s.hang == nil {
		s.hang = make(chan struct{})
	}
	s.mu.Unlock()
}

// Unhang releases hung requests and stops hanging.
func (s *Server) Unhang() {
	s.mu.Lock()
	if s.hang != nil {
		close(s.hang)
		s.hang = nil
	}
	s.mu.Unlock()
}

// Fetches is the number of requests received so far.
func (s *Server) Fetches() int64 { return s.fetches.Load() }

// Client is an HTTP client that trusts the server's certificate.
func (s *Server) Client() *http.Client { return s.ts.Client() }

// CertPEM is the server's certificate (a self-signed CA), for
// SSL_CERT_FILE in a child process.
func (s *Server) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.ts.Certificate().Raw})
}
