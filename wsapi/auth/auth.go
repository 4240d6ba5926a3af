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
	"sync/atomic"
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

// Identity is who a connection acts as. Treat it as immutable once created:
// a new token gives a new *Identity. Do not copy an Identity by value (it
// carries a cache that belongs to this value).
type Identity struct {
	// Anonymous is true when no token was given.
	Anonymous bool
	Subject   string         // "sub" claim
	Role      string         // "role" claim
	Claims    map[string]any // every claim; empty map when anonymous
	ExpiresAt time.Time      // zero when the token has no "exp"

	// memo holds state other packages derive from this identity (the rules
	// package's CEL value of the claims and per-rule results). It lives and
	// dies with the Identity, so nothing leaks when a connection changes
	// identity or goes away.
	memo sync.Map // key → *memoEntry
	// last is the most recently used entry: a lookup of the same key (the
	// common case: one rule per fan-out) is one atomic load.
	last atomic.Pointer[memoEntry]
}

type memoEntry struct {
	key, val any
}

// Anon returns the anonymous identity.
func Anon() *Identity { return &Identity{Anonymous: true, Claims: map[string]any{}} }

// Memo returns the value stored on id under key, calling compute to create it
// on first use. It lets other packages (rules) cache what they derive from an
// identity for exactly as long as the identity lives. Use a pointer as key so
// that lookups do not allocate; compute must not call Memo on the same id
// with the same key. Concurrent first calls may both run compute; one result
// wins and is returned to both.
func (id *Identity) Memo(key any, compute func() any) any {
	if e := id.last.Load(); e != nil && e.key == key {
		return e.val
	}
	v, ok := id.memo.Load(key)
	if !ok {
		v, _ = id.memo.LoadOrStore(key, &memoEntry{key: key, val: compute()})
	}
	e := v.(*memoEntry)
	id.last.Store(e)
	return e.val
}

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

// Close stops the background refresh of the JWKS URL (a no-op without
// one). Verify keeps working with the keys fetched so far.
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

// keyError is a key selection failure; its message is shown to the client.
type keyError struct{ msg string }

func (e *keyError) Error() string { return e.msg }

// explain turns a jwt error into one wrapping ErrInvalidToken or
// ErrTokenExpired with a human message.
func (v *Verifier) explain(tok *jwt.Token, err error) error {
	var ke *keyError
	switch {
	case errors.As(err, &ke):
		return invalid(ke.msg)
	case errors.Is(err, jwt.ErrTokenMalformed):
		return invalid("malformed token: " + strings.TrimPrefix(err.Error(), jwt.ErrTokenMalformed.Error()+": "))
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		if tok != nil && tok.Method != nil && !contains(v.algs, tok.Method.Alg()) {
			alg := tok.Method.Alg()
			if alg == "none" {
				return invalid(`unsigned tokens ("alg": "none") are not accepted`)
			}
			return invalid(fmt.Sprintf("tokens signed with %s are not accepted (accepted: %s)", alg, strings.Join(v.algs, ", ")))
		}
		return invalid("signature does not match the configured key")
	case errors.Is(err, jwt.ErrTokenExpired):
		msg := "token has expired"
		if tok != nil {
			if exp, e := tok.Claims.GetExpirationTime(); e == nil && exp != nil {
				msg = "token expired at " + exp.UTC().Format(time.RFC3339)
			}
		}
		return fmt.Errorf("%w: %s", ErrTokenExpired, msg)
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		msg := "token is not valid yet"
		if tok != nil {
			if nbf, e := tok.Claims.GetNotBefore(); e == nil && nbf != nil {
				msg = "token is not valid yet: nbf is " + nbf.UTC().Format(time.RFC3339)
			}
		}
		return invalid(msg)
	case errors.Is(err, jwt.ErrTokenInvalidAudience) || errors.Is(err, jwt.ErrTokenInvalidIssuer) ||
		errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && (strings.Contains(err.Error(), "aud claim is required") || strings.Contains(err.Error(), "iss claim is required")):
		return invalid(v.claimMismatch(tok))
	case errors.Is(err, jwt.ErrTokenInvalidClaims):
		return invalid(strings.TrimPrefix(err.Error(), jwt.ErrTokenInvalidClaims.Error()+": "))
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return invalid("token cannot be verified: " + err.Error())
	}
	return invalid(err.Error())
}

// claimMismatch says which of aud and iss is not what Config requires.
func (v *Verifier) claimMismatch(tok *jwt.Token) string {
	var msgs []string
	var claims jwt.Claims = jwt.MapClaims{}
	if tok != nil && tok.Claims != nil {
		claims = tok.Claims
	}
	if len(v.cfg.Audience) > 0 {
		aud, _ := claims.GetAudience()
		switch {
		case len(aud) == 0 || len(aud) == 1 && aud[0] == "":
			msgs = append(msgs, fmt.Sprintf("token has no aud claim; this server requires the audience %s", quoteList(v.cfg.Audience)))
		case !intersects(aud, v.cfg.Audience):
			msgs = append(msgs, fmt.Sprintf("token audience (aud) %s is not the audience this server requires (%s)", quoteList(aud), quoteList(v.cfg.Audience)))
		}
	}
	if v.cfg.Issuer != "" {
		iss, _ := claims.GetIssuer()
		switch {
		case iss == "":
			msgs = append(msgs, fmt.Sprintf("token has no iss claim; this server requires the issuer %q", v.cfg.Issuer))
		case iss != v.cfg.Issuer:
			msgs = append(msgs, fmt.Sprintf("token issuer (iss) %q is not the issuer this server requires (%q)", iss, v.cfg.Issuer))
		}
	}
	if len(msgs) == 0 {
		return "token audience (aud) or issuer (iss) is not the one this server requires"
	}
	return strings.Join(msgs, "; ")
}

func intersects(a, b []string) bool {
	for _, x := range a {
		if contains(b, x) {
			return true
		}
	}
	return false
}

// quoteList renders ["a","b"] as "a" or "b".
func quoteList(list []string) string {
	q := make([]string, len(list))
	for i, s := range list {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, " or ")
}

func invalid(msg string) error { return fmt.Errorf("%w: %s", ErrInvalidToken, msg) }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func identityFrom(claims jwt.MapClaims) (*Identity, error) {
	id := &Identity{Claims: map[string]any(claims)}
	if sub, ok := claims["sub"]; ok {
		s, isStr := sub.(string)
		if !isStr {
			return nil, invalid(fmt.Sprintf("sub claim must be a string, got %s", jsonKind(sub)))
		}
		id.Subject = s
	}
	if role, ok := claims["role"]; ok && role != nil {
		s, isStr := role.(string)
		if !isStr {
			return nil, invalid(fmt.Sprintf("role claim must be a string, got %s", jsonKind(role)))
		}
		id.Role = s
	}
	exp, err := claims.GetExpirationTime()
	if err != nil {
		return nil, invalid("exp claim must be a number")
	}
	if exp != nil {
		id.ExpiresAt = exp.Time
	}
	return id, nil
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case float64:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
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
