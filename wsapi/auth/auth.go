// Package auth verifies connection tokens (JWT: HS256 with a shared secret,
// RS256/ES256 with public keys from a JWKS file or a JWKS URL) and turns
// them into an Identity.
//
// Guarantees: a token is accepted only when its algorithm matches the key it
// selects (HS256 → the shared secret; RS256 → an RSA key; ES256 → a P-256
// key), its signature verifies with that key, its exp/nbf hold (within
// Config.Leeway), and its aud/iss are the expected ones when Config.Audience
// or Config.Issuer is set. "alg: none" is never accepted. Refusals wrap
// ErrInvalidToken or ErrTokenExpired and say what is wrong; each one counts
// in metrics.TokensRejected. A Verifier is safe for concurrent use.
//
// Keys from a JWKS URL (keyfunc) are fetched when the Verifier is created,
// again every Config.JWKSRefreshInterval in the background, and when a token
// names an unknown kid (at most once per Config.JWKSUnknownKIDRefresh). A
// token whose key is cached is verified without touching the network; one
// with an unknown kid waits at most Config.UnknownKIDWait for the fetch it
// started. A token signed with a key that a fetch no longer finds is
// refused from then on, including tokens verified (and cached) before.
package auth

import (
	"crypto"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/rs/zerolog"

	"github.com/pgrealtime/pgrealtime/internal/metrics"
)

// Errors returned by Verify; wrap them so callers can branch with errors.Is.
var (
	ErrInvalidToken = errors.New("invalid token")
	ErrTokenExpired = errors.New("token expired")
)

// Config selects the accepted keys.
type Config struct {
	// HS256Secret enables HS256 tokens signed with this secret.
	HS256Secret []byte
	// JWKS is the content of a JWKS file (RS256/ES256 public keys, by kid).
	JWKS []byte
	// JWKSURL is where a provider publishes its JWKS: https://, or
	// http:// to a loopback host. Not together with JWKS. NewVerifier
	// fetches it (waiting at most JWKSFetchTimeout; a failure is logged and
	// retried, tokens are refused until a fetch succeeds), and Close stops
	// the background refresh.
	JWKSURL string
	// HTTPClient fetches JWKSURL; nil: a client trusting the system's CAs.
	HTTPClient *http.Client
	// JWKSRefreshInterval is how often JWKSURL is fetched in the
	// background; 0: DefaultJWKSRefreshInterval.
	JWKSRefreshInterval time.Duration
	// JWKSUnknownKIDRefresh is the least time between fetches caused by
	// tokens with an unknown kid; 0: DefaultJWKSUnknownKIDRefresh.
	JWKSUnknownKIDRefresh time.Duration
	// JWKSFetchTimeout bounds one fetch; 0: DefaultJWKSFetchTimeout.
	JWKSFetchTimeout time.Duration
	// UnknownKIDWait bounds how long Verify waits for the fetch an unknown
	// kid started; 0: DefaultUnknownKIDWait.
	UnknownKIDWait time.Duration
	// Audience, when not empty, requires the aud claim to name at least
	// one of these.
	Audience []string
	// Issuer, when set, requires the iss claim to be exactly this.
	Issuer string
	// Leeway tolerated on exp/nbf.
	Leeway time.Duration
	// Now returns the current time; nil means time.Now. For tests.
	Now func() time.Time
	// Logger receives JWKS fetch failures; the zero value logs nothing.
	Logger zerolog.Logger
}

// Verifier checks tokens. It is safe for concurrent use.
type Verifier struct {
	cfg    Config
	keys   *keySet
	remote *remoteKeys // keys from Config.JWKSURL; nil without one
	parser *jwt.Parser
	algs   []string // accepted algorithms, sorted

	// Tokens verified recently, with their identity: the connections of
	// one token (a user's tabs, a reconnect after a restart) share one
	// *Identity — its claims, and the rules' per-identity results —
	// instead of holding a copy each, and skip the signature check.
	// Bounded by cacheMax; an entry is used only until the token's exp,
	// and one verified with a key from the JWKS URL only while that key is
	// still the one published under its kid (see cache.go).
	mu    sync.Mutex
	cache map[string]*cacheEntry
}

// NewVerifier validates cfg (a malformed JWKS is an error naming the
// problem) and, with a JWKSURL, fetches it and starts refreshing it: call
// Close when done.
func NewVerifier(cfg Config) (*Verifier, error) {
	v := &Verifier{cfg: cfg, keys: &keySet{}}
	hasFile := len(strings.TrimSpace(string(cfg.JWKS))) > 0
	if hasFile && cfg.JWKSURL != "" {
		return nil, errors.New("jwks: give either a JWKS file or a JWKS URL, not both")
	}
	if hasFile {
		ks, err := parseJWKS(cfg.JWKS)
		if err != nil {
			return nil, err
		}
		v.keys = ks
	}
	for _, a := range cfg.Audience {
		if strings.TrimSpace(a) == "" {
			return nil, errors.New("audience: must not contain an empty value")
		}
	}
	if len(cfg.HS256Secret) > 0 {
		v.algs = append(v.algs, jwt.SigningMethodHS256.Alg())
	}
	if len(v.keys.rsa) > 0 || cfg.JWKSURL != "" {
		v.algs = append(v.algs, jwt.SigningMethodRS256.Alg())
	}
	if len(v.keys.ec) > 0 || cfg.JWKSURL != "" {
		v.algs = append(v.algs, jwt.SigningMethodES256.Alg())
	}
	sort.Strings(v.algs)
	opts := []jwt.ParserOption{jwt.WithLeeway(cfg.Leeway)}
	if len(v.algs) > 0 {
		opts = append(opts, jwt.WithValidMethods(v.algs))
	}
	if cfg.Now != nil {
		opts = append(opts, jwt.WithTimeFunc(cfg.Now))
	}
	if len(cfg.Audience) > 0 {
		opts = append(opts, jwt.WithAudience(cfg.Audience...))
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	v.parser = jwt.NewParser(opts...)
	if cfg.JWKSURL != "" {
		r, err := newRemoteKeys(cfg)
		if err != nil {
			return nil, err
		}
		v.remote = r
	}
	return v, nil
}

// Close stops the background refresh of the JWKS URL and cancels a fetch
// in flight (a no-op without one); it returns once the fetches started by
// unknown kids have ended. Verify keeps working with the keys fetched so
// far.
func (v *Verifier) Close() {
	if v != nil && v.remote != nil {
		v.remote.close()
	}
}

// RemoteKeys is the number of keys currently cached from the JWKS URL (0
// without one, or before a fetch succeeded).
func (v *Verifier) RemoteKeys() int {
	if v == nil || v.remote == nil {
		return 0
	}
	return v.remote.count()
}

// Enabled reports whether any key is configured. Without keys every
// connection is anonymous and any presented token is refused.
func (v *Verifier) Enabled() bool {
	return v != nil && len(v.algs) > 0
}

// Algorithms returns the accepted signing algorithms (e.g. ["HS256","RS256"]).
func (v *Verifier) Algorithms() []string {
	if v == nil {
		return nil
	}
	return append([]string(nil), v.algs...)
}

// errNotConfigured is the refusal when no key is configured.
var errNotConfigured = fmt.Errorf("%w: token authentication is not configured: set --jwt-secret, --jwks-file or --jwks-url", ErrInvalidToken)

// Verify checks a token and returns its identity, or an error wrapping
// ErrInvalidToken or ErrTokenExpired with a message saying what is wrong.
func (v *Verifier) Verify(token string) (*Identity, error) {
	id, err := v.verify(token)
	if err != nil {
		reason := "invalid"
		if errors.Is(err, ErrTokenExpired) {
			reason = "expired"
		}
		metrics.TokensRejected.WithLabelValues(reason).Inc()
		return nil, err
	}
	return id, nil
}

func (v *Verifier) verify(token string) (*Identity, error) {
	if !v.Enabled() {
		return nil, errNotConfigured
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return nil, invalid("token is empty")
	}
	if id := v.cached(token); id != nil {
		return id, nil
	}
	claims := jwt.MapClaims{}
	var sel selected
	tok, err := v.parser.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) { return v.keyFor(t, &sel) })
	if err != nil {
		return nil, v.explain(tok, err)
	}
	id, err := identityFrom(claims)
	if err != nil {
		return nil, err
	}
	v.remember(token, id, &sel)
	return id, nil
}

func (v *Verifier) now() time.Time {
	if v.cfg.Now != nil {
		return v.cfg.Now()
	}
	return time.Now()
}

// selected records which key from the JWKS URL verified a token, for the
// cache.
type selected struct {
	remote bool             // the key came from the JWKS URL
	kid    string           // its kid; "" when the token has none
	key    crypto.PublicKey // the key; nil when several were tried
}

// keyFor selects the verification key for a parsed (not yet verified) token
// and records a key from the JWKS URL in sel. The parser has already
// refused algorithms outside v.algs.
func (v *Verifier) keyFor(t *jwt.Token, sel *selected) (any, error) {
	alg := t.Method.Alg()
	kid, _ := t.Header["kid"].(string)
	if alg != jwt.SigningMethodHS256.Alg() && v.remote != nil {
		k, err := v.remote.key(t, kid, alg)
		*sel = selected{remote: true, kid: kid}
		if _, isSet := k.(jwt.VerificationKeySet); !isSet && k != nil && kid != "" {
			sel.key = k
		}
		return k, err
	}
	switch alg {
	case jwt.SigningMethodHS256.Alg():
		// The secret only: never a public key's bytes (alg confusion).
		return v.cfg.HS256Secret, nil
	case jwt.SigningMethodRS256.Alg():
		k, err := v.keys.find(kid, ktyRSA, alg)
		if err != nil {
			return nil, err
		}
		return k.rsa, nil
	case jwt.SigningMethodES256.Alg():
		k, err := v.keys.find(kid, ktyEC, alg)
		if err != nil {
			return nil, err
		}
		return k.ec, nil
	}
	return nil, &keyError{fmt.Sprintf("tokens signed with %s are not accepted (accepted: %s)", alg, strings.Join(v.algs, ", "))}
}

// SignHS256 mints an HS256 token with the given claims (for tests and for
// `pgrealtime dev`). A time.Time value is encoded as Unix seconds.
func SignHS256(secret []byte, claims map[string]any) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("sign token: empty secret")
	}
	mc := make(jwt.MapClaims, len(claims))
	for k, v := range claims {
		if t, ok := v.(time.Time); ok {
			v = t.Unix()
		}
		mc[k] = v
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, mc).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return s, nil
}
