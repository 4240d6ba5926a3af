package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"
)

// Defaults of the JWKS URL settings (Config fields left zero).
const (
	// DefaultJWKSRefreshInterval is how often the key set is fetched again
	// in the background: a key removed by the provider is refused from the
	// next fetch on.
	DefaultJWKSRefreshInterval = 5 * time.Minute
	// DefaultJWKSUnknownKIDRefresh is the least time between two fetches
	// caused by tokens whose kid is not among the cached keys.
	DefaultJWKSUnknownKIDRefresh = 30 * time.Second
	// DefaultJWKSFetchTimeout bounds one fetch, the first one included.
	DefaultJWKSFetchTimeout = 10 * time.Second
	// maxJWKSBytes bounds a JWKS response (real ones are a few KiB).
	maxJWKSBytes = 1 << 20
	// DefaultUnknownKIDWait is the longest a Verify waits for the fetch
	// that its unknown kid started; the fetch goes on in the background.
	DefaultUnknownKIDWait = time.Second
)

// remoteKeys is the key set published at a JWKS URL, kept by keyfunc (on
// jwkset's storage): fetched when it is created, again every refresh
// interval in the background, and when a token names an unknown kid (at
// most once per unknown-kid interval). Lookups of cached keys never touch
// the network; a lookup that has to fetch waits at most wait.
type remoteKeys struct {
	store jwkset.Storage // the cached keys; reads never fetch
	kf    keyfunc.Keyfunc
	ctx   context.Context
	stop  context.CancelFunc
	// fetchTimeout bounds the fetch an unknown kid starts; wait is how
	// long the Verify that started it waits for it.
	fetchTimeout, wait time.Duration
	log                zerolog.Logger
	lookups            sync.WaitGroup // lookups that outlive their Verify
}

// CheckJWKSURL accepts https URLs, and http URLs to a loopback host (a
// provider on the same machine, as in local development): keys fetched
// over plain HTTP from elsewhere could be replaced by anyone on the path.
func CheckJWKSURL(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil || u.Scheme == "" || u.Opaque != "":
		return fmt.Errorf("must be an absolute https:// URL, got %q", raw)
	case !strings.EqualFold(u.Scheme, "https") && !strings.EqualFold(u.Scheme, "http"):
		return fmt.Errorf("must be an https:// URL, got scheme %q", u.Scheme)
	case u.Host == "":
		return fmt.Errorf("must be an absolute https:// URL with a host, got %q", raw)
	}
	if strings.EqualFold(u.Scheme, "https") || isLoopbackHost(u.Hostname()) {
		return nil
	}
	return fmt.Errorf("must be https:// (plain http:// is accepted only for localhost, 127.0.0.1 or ::1: keys fetched over plain HTTP could be replaced on the way), got %q", raw)
}

func isLoopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// newRemoteKeys fetches the key set once (waiting at most the fetch
// timeout) and starts the background refresh. A failed first fetch is
// logged, not returned: the keys are fetched again on the interval and on
// the next token with a kid, and tokens are refused until then.
func newRemoteKeys(cfg Config) (*remoteKeys, error) {
	if err := CheckJWKSURL(cfg.JWKSURL); err != nil {
		return nil, fmt.Errorf("jwks url: %w", err)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"refresh interval", cfg.JWKSRefreshInterval}, {"unknown-kid refresh interval", cfg.JWKSUnknownKIDRefresh}, {"fetch timeout", cfg.JWKSFetchTimeout}, {"unknown-kid wait", cfg.UnknownKIDWait}} {
		if d.v < 0 {
			return nil, fmt.Errorf("jwks url: %s must not be negative, got %v", d.name, d.v)
		}
	}
	r := &remoteKeys{
		fetchTimeout: orDefault(cfg.JWKSFetchTimeout, DefaultJWKSFetchTimeout),
		wait:         orDefault(cfg.UnknownKIDWait, DefaultUnknownKIDWait),
		log:          cfg.Logger.With().Str("component", "auth").Str("jwks_url", cfg.JWKSURL).Logger(),
	}
	r.ctx, r.stop = context.WithCancel(context.Background())
	client := &http.Client{Timeout: r.fetchTimeout}
	if cfg.HTTPClient != nil {
		c := *cfg.HTTPClient
		client = &c
	}
	client.Transport = limitedTransport{base: client.Transport}
	onError := func(_ context.Context, err error) {
		if r.ctx.Err() != nil {
			return // closed: the fetch was cancelled
		}
		ev := r.log.Error().Err(err)
		if hint := tlsHint(err); hint != "" {
			ev = ev.Str("hint", hint)
		}
		ev.Msg("fetching the JWKS failed; keeping the keys fetched before (if any)")
	}
	store, err := jwkset.NewStorageFromHTTP(cfg.JWKSURL, jwkset.HTTPClientStorageOptions{
		Client:                    client,
		Ctx:                       r.ctx,
		HTTPTimeout:               r.fetchTimeout,
		NoErrorReturnFirstHTTPReq: true,
		RefreshErrorHandler:       onError,
		RefreshInterval:           orDefault(cfg.JWKSRefreshInterval, DefaultJWKSRefreshInterval),
	})
	if err != nil {
		r.stop()
		return nil, fmt.Errorf("jwks url: %w", err)
	}
	r.store = store
	// The client consults store and, for an unknown kid, fetches again
	// when the limiter allows (it never waits past the lookup's context).
	client2, err := jwkset.NewHTTPClient(jwkset.HTTPClientOptions{
		HTTPURLs:          map[string]jwkset.Storage{cfg.JWKSURL: store},
		RefreshUnknownKID: rate.NewLimiter(rate.Every(orDefault(cfg.JWKSUnknownKIDRefresh, DefaultJWKSUnknownKIDRefresh)), 1),
	})
	if err == nil {
		r.kf, err = keyfunc.New(keyfunc.Options{Ctx: r.ctx, Storage: client2, UseWhitelist: []jwkset.USE{jwkset.UseSig, ""}})
	}
	if err != nil {
		r.stop()
		return nil, fmt.Errorf("jwks url: %w", err)
	}
	return r, nil
}

// tlsHint says what to change when the provider's certificate was not
// trusted: the x509 error alone does not tell an operator about
// SSL_CERT_FILE.
func tlsHint(err error) string {
	var unknownCA x509.UnknownAuthorityError
	var verify *tls.CertificateVerificationError
	if errors.As(err, &unknownCA) || errors.As(err, &verify) {
		return "the provider's certificate is not signed by a CA this system trusts: for a private CA set SSL_CERT_FILE=/path/ca.pem (or SSL_CERT_DIR)"
	}
	return ""
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// count is the number of cached keys (0 before the first successful fetch).
func (r *remoteKeys) count() int {
	all, err := r.store.KeyReadAll(r.ctx)
	if err != nil {
		return 0
	}
	return len(all)
}

// current returns the cached key with this kid, or nil; it never fetches.
func (r *remoteKeys) current(kid string) crypto.PublicKey {
	jwk, err := r.store.KeyRead(r.ctx, kid)
	if err != nil {
		return nil
	}
	k := jwk.Key()
	if pk, ok := k.(interface{ Public() crypto.PublicKey }); ok {
		return pk.Public()
	}
	return k
}

// key selects the verification key of token t (signed with alg, RS256 or
// ES256). A kid among the cached keys is answered at once. An unknown kid
// starts a fetch (when the rate limit allows) and waits for it at most
// r.wait: a slow provider delays this one token by that much, no more, and
// never delays tokens whose key is cached.
func (r *remoteKeys) key(t *jwt.Token, kid, alg string) (any, error) {
	if kid == "" {
		return r.keySet(t, alg)
	}
	if r.current(kid) != nil {
		// Cached: no fetch, unless a refresh removed it just now; then
		// the fetch keyfunc starts is bounded by r.wait as well.
		return r.lookup(t, kid, alg, r.wait)
	}
	type result struct {
		key any
		err error
	}
	done := make(chan result, 1)
	// The lookup may outlive this call: give it its own copy of the token.
	tc := &jwt.Token{Header: maps.Clone(t.Header), Method: t.Method}
	r.lookups.Add(1)
	go func() {
		defer r.lookups.Done()
		k, err := r.lookup(tc, kid, alg, r.fetchTimeout)
		done <- result{k, err}
	}()
	timer := time.NewTimer(r.wait)
	defer timer.Stop()
	select {
	case res := <-done:
		return res.key, res.err
	case <-timer.C:
		return nil, &keyError{fmt.Sprintf("unknown key id (kid) %q: the key set is being fetched again from the JWKS URL, which has not answered within %v; try again shortly", kid, r.wait)}
	}
}

// lookup runs keyfunc for t, which fetches the key set again (within
// timeout) when kid is unknown and the unknown-kid limiter allows.
func (r *remoteKeys) lookup(t *jwt.Token, kid, alg string, timeout time.Duration) (any, error) {
	ctx, cancel := context.WithTimeout(r.ctx, timeout)
	defer cancel()
	k, err := r.kf.KeyfuncCtx(ctx)(t)
	if err != nil {
		switch {
		case r.current(kid) == nil && r.count() == 0:
			return nil, &keyError{fmt.Sprintf("unknown key id (kid) %q: no keys loaded from the JWKS URL (not fetched yet, or it publishes none; the server log says why); try again shortly", kid)}
		case r.current(kid) == nil:
			// Not found after a fetch, or no fetch allowed yet (the
			// limiter's refusal is not an ErrKeyNotFound).
			return nil, &keyError{fmt.Sprintf("unknown key id (kid) %q: not among the keys fetched from the JWKS URL", kid)}
		case strings.Contains(err.Error(), `"alg" parameter value`):
			return nil, &keyError{fmt.Sprintf("token is signed with %s but key %q is published for another algorithm", alg, kid)}
		}
		return nil, &keyError{fmt.Sprintf("key %q cannot be used: %v", kid, err)}
	}
	if err := usable(k, alg, fmt.Sprintf("key %q", kid)); err != nil {
		return nil, err
	}
	return k, nil
}

// keySet is every cached key fit for alg, for a token without kid (jwt
// tries each).
func (r *remoteKeys) keySet(t *jwt.Token, alg string) (any, error) {
	// Without a kid header keyfunc reads the cache only; an empty or
	// non-string kid would make it look the kid up (and fetch): drop it.
	tc := &jwt.Token{Header: maps.Clone(t.Header), Method: t.Method}
	delete(tc.Header, "kid")
	all, err := r.kf.KeyfuncCtx(r.ctx)(tc)
	if err != nil {
		return nil, &keyError{fmt.Sprintf("cannot read the keys from the JWKS URL: %v", err)}
	}
	var fit jwt.VerificationKeySet
	if set, ok := all.(jwt.VerificationKeySet); ok {
		for _, k := range set.Keys {
			if usable(k, alg, "") == nil {
				fit.Keys = append(fit.Keys, k)
			}
		}
	}
	if len(fit.Keys) == 0 {
		return nil, &keyError{fmt.Sprintf("token has no key id (kid) and the JWKS URL publishes no %s key", alg)}
	}
	return fit, nil
}

// usable checks that k is a key for alg and strong enough: an RSA key of at
// least minRSABits for RS256, a P-256 key for ES256.
func usable(k any, alg, name string) error {
	switch alg {
	case jwt.SigningMethodRS256.Alg():
		pk, ok := k.(*rsa.PublicKey)
		if !ok {
			return &keyError{fmt.Sprintf("token is signed with RS256 but %s is not an RSA key", name)}
		}
		if pk.N.BitLen() < minRSABits {
			return &keyError{fmt.Sprintf("%s is a %d-bit RSA key; at least %d bits are required", name, pk.N.BitLen(), minRSABits)}
		}
	case jwt.SigningMethodES256.Alg():
		pk, ok := k.(*ecdsa.PublicKey)
		if !ok || pk.Curve != elliptic.P256() {
			return &keyError{fmt.Sprintf("token is signed with ES256 but %s is not a P-256 key", name)}
		}
	default:
		return &keyError{fmt.Sprintf("tokens signed with %s are not accepted", alg)}
	}
	return nil
}

// close cancels the background refresh and any fetch in flight, and waits
// for the lookups that outlived their Verify.
func (r *remoteKeys) close() {
	r.stop()
	r.lookups.Wait()
}

// limitedTransport ends a response body after maxJWKSBytes with an error,
// so that a provider answering with an endless body cannot exhaust memory.
type limitedTransport struct{ base http.RoundTripper }

func (t limitedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.base
	if base == nil {
		base = http.DefaultTransport
	}
	resp, err := base.RoundTrip(req)
	if err == nil {
		resp.Body = &limitedBody{ReadCloser: resp.Body, left: maxJWKSBytes}
	}
	return resp, err
}

type limitedBody struct {
	io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, fmt.Errorf("the JWKS response is larger than %d bytes", maxJWKSBytes)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}
