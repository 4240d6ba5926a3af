// Package auth verifies connection tokens (JWT: HS256 with a shared secret,
// RS256/ES256 with public keys from a JWKS file) and turns them into an
// Identity.
package auth

import (
	"errors"
	"time"
)

// Errors returned by Verify; wrap them so callers can branch with errors.Is.
var (
	ErrInvalidToken = errors.New("invalid token")
	ErrTokenExpired = errors.New("token expired")
)

// Identity is who a connection acts as.
type Identity struct {
	// Anonymous is true when no token was given.
	Anonymous bool
	Subject   string         // "sub" claim
	Role      string         // "role" claim
	Claims    map[string]any // every claim; empty map when anonymous
	ExpiresAt time.Time      // zero when the token has no "exp"
}

// Anon returns the anonymous identity.
func Anon() *Identity { return &Identity{Anonymous: true, Claims: map[string]any{}} }

// Config selects the accepted keys.
type Config struct {
	// HS256Secret enables HS256 tokens signed with this secret.
	HS256Secret []byte
	// JWKS is the content of a JWKS file (RS256/ES256 public keys, by kid).
	JWKS []byte
	// Leeway tolerated on exp/nbf.
	Leeway time.Duration
}

// Verifier checks tokens. It is safe for concurrent use.
type Verifier struct {
	cfg Config
}

// NewVerifier validates cfg (a malformed JWKS is an error naming the problem).
func NewVerifier(cfg Config) (*Verifier, error) {
	return &Verifier{cfg: cfg}, nil
}

// Enabled reports whether any key is configured. Without keys every
// connection is anonymous and any presented token is refused.
func (v *Verifier) Enabled() bool {
	return v != nil && (len(v.cfg.HS256Secret) > 0 || len(v.cfg.JWKS) > 0)
}

// Verify checks a token and returns its identity, or an error wrapping
// ErrInvalidToken or ErrTokenExpired with a message saying what is wrong.
func (v *Verifier) Verify(token string) (*Identity, error) {
	return nil, ErrInvalidToken // filled in by the identity work (issue 4)
}
