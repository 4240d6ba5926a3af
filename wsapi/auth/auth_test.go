package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/pgrealtime/pgrealtime/internal/metrics"
)

// testKeys are generated once per test binary (RSA generation is slow under -race).
type testKeys struct {
	rsa1, rsa2, rsaOther *rsa.PrivateKey
	ec1, ecOther         *ecdsa.PrivateKey
}

var (
	keysOnce sync.Once
	keys     testKeys
)

func getKeys(t *testing.T) testKeys {
	t.Helper()
	keysOnce.Do(func() {
		gen := func() *rsa.PrivateKey {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			return k
		}
		genEC := func() *ecdsa.PrivateKey {
			k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				panic(err)
			}
			return k
		}
		keys = testKeys{rsa1: gen(), rsa2: gen(), rsaOther: gen(), ec1: genEC(), ecOther: genEC()}
	})
	return keys
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func rsaJWK(kid string, k *rsa.PublicKey) map[string]any {
	m := map[string]any{"kty": "RSA", "use": "sig", "alg": "RS256",
		"n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())}
	if kid != "" {
		m["kid"] = kid
	}
	return m
}

func ecJWK(kid string, k *ecdsa.PublicKey) map[string]any {
	raw, err := k.Bytes() // uncompressed point 0x04 || X || Y
	if err != nil {
		panic(err)
	}
	m := map[string]any{"kty": "EC", "crv": "P-256", "x": b64(raw[1:33]), "y": b64(raw[33:65])}
	if kid != "" {
		m["kid"] = kid
	}
	return m
}

func jwks(keys ...map[string]any) []byte {
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		panic(err)
	}
	return b
}

func sign(t *testing.T, method jwt.SigningMethod, kid string, key any, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", method.Alg(), err)
	}
	return s
}

func counter(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func TestVerify(t *testing.T) {
	k := getKeys(t)
	secret := []byte("0123456789abcdef0123456789abcdef")
	now := time.Now()
	valid := func() jwt.MapClaims {
		return jwt.MapClaims{"sub": "u1", "role": "user", "exp": now.Add(time.Hour).Unix(), "tenant": "t1"}
	}
	with := func(extra jwt.MapClaims) jwt.MapClaims {
		c := valid()
		for key, v := range extra {
			if v == nil {
				delete(c, key)
				continue
			}
			c[key] = v
		}
		return c
	}
	rsaPubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: must(x509.MarshalPKIXPublicKey(&k.rsa1.PublicKey))})

	all := Config{HS256Secret: secret, JWKS: jwks(
		rsaJWK("r1", &k.rsa1.PublicKey), rsaJWK("r2", &k.rsa2.PublicKey), ecJWK("e1", &k.ec1.PublicKey))}
	rsaOnly := Config{JWKS: jwks(rsaJWK("r1", &k.rsa1.PublicKey))}
	noKid := Config{JWKS: jwks(rsaJWK("", &k.rsa1.PublicKey), ecJWK("", &k.ec1.PublicKey))}
	hsOnly := Config{HS256Secret: secret}
	leeway := Config{HS256Secret: secret, Leeway: time.Minute}

	noneToken := func() string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodNone, valid()).SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}()

	tests := []struct {
		name    string
		cfg     Config
		token   string
		wantErr error  // nil: must verify
		msg     string // substring of the error message
		sub     string
	}{
		{name: "HS256 valid", cfg: all, token: sign(t, jwt.SigningMethodHS256, "", secret, valid()), sub: "u1"},
		{name: "RS256 valid by kid r1", cfg: all, token: sign(t, jwt.SigningMethodRS256, "r1", k.rsa1, valid()), sub: "u1"},
		{name: "RS256 valid by kid r2", cfg: all, token: sign(t, jwt.SigningMethodRS256, "r2", k.rsa2, valid()), sub: "u1"},
		{name: "ES256 valid by kid", cfg: all, token: sign(t, jwt.SigningMethodES256, "e1", k.ec1, valid()), sub: "u1"},
		{name: "RS256 without kid, only RSA key has no kid", cfg: noKid, token: sign(t, jwt.SigningMethodRS256, "", k.rsa1, valid()), sub: "u1"},
		{name: "ES256 with any kid, only EC key has no kid", cfg: noKid, token: sign(t, jwt.SigningMethodES256, "whatever", k.ec1, valid()), sub: "u1"},
		{name: "RS256 without kid, single RSA key", cfg: rsaOnly, token: sign(t, jwt.SigningMethodRS256, "", k.rsa1, valid()), sub: "u1"},
		{name: "leeway covers a just-expired token", cfg: leeway, token: sign(t, jwt.SigningMethodHS256, "", secret, with(jwt.MapClaims{"exp": now.Add(-10 * time.Second).Unix()})), sub: "u1"},
		{name: "no exp is fine", cfg: hsOnly, token: sign(t, jwt.SigningMethodHS256, "", secret, with(jwt.MapClaims{"exp": nil})), sub: "u1"},

		{name: "alg none", cfg: all, token: noneToken, wantErr: ErrInvalidToken, msg: `"alg": "none"`},
		{name: "unknown kid", cfg: all, token: sign(t, jwt.SigningMethodRS256, "nope", k.rsa1, valid()), wantErr: ErrInvalidToken, msg: `unknown key id (kid) "nope"`},
		{name: "kid r1 but signed with r2", cfg: all, token: sign(t, jwt.SigningMethodRS256, "r1", k.rsa2, valid()), wantErr: ErrInvalidToken, msg: "signature does not match"},
		{name: "RS256 signed with an unknown key", cfg: all, token: sign(t, jwt.SigningMethodRS256, "r1", k.rsaOther, valid()), wantErr: ErrInvalidToken, msg: "signature does not match"},
		{name: "ES256 signed with an unknown key", cfg: all, token: sign(t, jwt.SigningMethodES256, "e1", k.ecOther, valid()), wantErr: ErrInvalidToken, msg: "signature does not match"},
		{name: "HS256 with the wrong secret", cfg: all, token: sign(t, jwt.SigningMethodHS256, "", []byte("another secret, 32 bytes long!!!"), valid()), wantErr: ErrInvalidToken, msg: "signature does not match"},
		{name: "HS256 token when only RSA keys", cfg: rsaOnly, token: sign(t, jwt.SigningMethodHS256, "", secret, valid()), wantErr: ErrInvalidToken, msg: "tokens signed with HS256 are not accepted (accepted: RS256)"},
		{name: "alg confusion: HS256 signed with RSA public key, RSA only", cfg: rsaOnly, token: sign(t, jwt.SigningMethodHS256, "r1", rsaPubPEM, valid()), wantErr: ErrInvalidToken, msg: "HS256 are not accepted"},
		{name: "alg confusion: HS256 signed with RSA public key, secret too", cfg: all, token: sign(t, jwt.SigningMethodHS256, "r1", rsaPubPEM, valid()), wantErr: ErrInvalidToken, msg: "signature does not match"},
		{name: "RS256 token naming an EC key", cfg: all, token: sign(t, jwt.SigningMethodRS256, "e1", k.rsa1, valid()), wantErr: ErrInvalidToken, msg: `signed with RS256 but key "e1" is an EC key`},
		{name: "ES256 token naming an RSA key", cfg: all, token: sign(t, jwt.SigningMethodES256, "r1", k.ec1, valid()), wantErr: ErrInvalidToken, msg: `signed with ES256 but key "r1" is an RSA key`},
		{name: "ES256 when only RSA keys", cfg: rsaOnly, token: sign(t, jwt.SigningMethodES256, "e1", k.ec1, valid()), wantErr: ErrInvalidToken, msg: "ES256 are not accepted"},
		{name: "RS256 without kid, several RSA keys", cfg: all, token: sign(t, jwt.SigningMethodRS256, "", k.rsa1, valid()), wantErr: ErrInvalidToken, msg: "no key id (kid) and the JWKS has 2 RSA keys"},
		{name: "RS384 not accepted", cfg: all, token: sign(t, jwt.SigningMethodRS384, "r1", k.rsa1, valid()), wantErr: ErrInvalidToken, msg: "RS384 are not accepted"},
		{name: "malformed: one segment", cfg: all, token: "abc", wantErr: ErrInvalidToken, msg: "malformed token"},
		{name: "malformed: bad base64", cfg: all, token: "a!.b!.c!", wantErr: ErrInvalidToken, msg: "malformed token"},
		{name: "malformed: header not JSON", cfg: all, token: b64([]byte("nope")) + "." + b64([]byte("{}")) + ".sig", wantErr: ErrInvalidToken, msg: "malformed token"},
		{name: "empty", cfg: all, token: "  ", wantErr: ErrInvalidToken, msg: "token is empty"},
		{name: "expired", cfg: all, token: sign(t, jwt.SigningMethodHS256, "", secret, with(jwt.MapClaims{"exp": now.Add(-time.Hour).Unix()})), wantErr: ErrTokenExpired, msg: "token expired at"},
		{name: "expired RS256", cfg: all, token: sign(t, jwt.SigningMethodRS256, "r1", k.rsa1, with(jwt.MapClaims{"exp": now.Add(-time.Minute).Unix()})), wantErr: ErrTokenExpired, msg: "token expired at"},
		{name: "expired and forged is a signature error", cfg: all, token: sign(t, jwt.SigningMethodRS256, "r1", k.rsaOther, with(jwt.MapClaims{"exp": now.Add(-time.Minute).Unix()})), wantErr: ErrInvalidToken, msg: "signature does not match"},
		{name: "not valid yet", cfg: all, token: sign(t, jwt.SigningMethodHS256, "", secret, with(jwt.MapClaims{"nbf": now.Add(time.Hour).Unix()})), wantErr: ErrInvalidToken, msg: "not valid yet"},
		{name: "no keys configured", cfg: Config{}, token: sign(t, jwt.SigningMethodHS256, "", secret, valid()), wantErr: ErrInvalidToken, msg: "token authentication is not configured: set --jwt-secret, --jwks-file or --jwks-url"},
		{name: "sub not a string", cfg: all, token: sign(t, jwt.SigningMethodHS256, "", secret, with(jwt.MapClaims{"sub": 42})), wantErr: ErrInvalidToken, msg: "sub claim must be a string"},
		{name: "role not a string", cfg: all, token: sign(t, jwt.SigningMethodHS256, "", secret, with(jwt.MapClaims{"role": []string{"admin"}})), wantErr: ErrInvalidToken, msg: "role claim must be a string"},
		{name: "exp not a number", cfg: all, token: sign(t, jwt.SigningMethodHS256, "", secret, with(jwt.MapClaims{"exp": "tomorrow"})), wantErr: ErrInvalidToken, msg: "exp"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := NewVerifier(tc.cfg)
			if err != nil {
				t.Fatalf("NewVerifier: %v", err)
			}
			reason := "invalid"
			if errors.Is(tc.wantErr, ErrTokenExpired) {
				reason = "expired"
			}
			before := counter(t, metrics.TokensRejected.WithLabelValues(reason))
			id, err := v.Verify(tc.token)
			after := counter(t, metrics.TokensRejected.WithLabelValues(reason))
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if id.Subject != tc.sub || id.Anonymous {
					t.Fatalf("identity = %+v, want subject %q", id, tc.sub)
				}
				if after != before {
					t.Fatalf("accepted token counted as rejected")
				}
				return
			}
			if err == nil {
				t.Fatalf("Verify accepted the token (identity %+v); want %v", id, tc.wantErr)
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("error %q does not wrap %v", err, tc.wantErr)
			}
			if tc.wantErr == ErrTokenExpired && errors.Is(err, ErrInvalidToken) {
				t.Fatalf("expired error %q also wraps ErrInvalidToken", err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %q does not say %q", err, tc.msg)
			}
			if after != before+1 {
				t.Fatalf("tokens_rejected_total{reason=%s} went %v → %v, want +1", reason, before, after)
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestIdentityFields(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	tok, err := SignHS256(secret, map[string]any{"sub": "u1", "role": "editor", "exp": exp, "org": map[string]any{"id": 7}})
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier(Config{HS256Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if id.Subject != "u1" || id.Role != "editor" || id.Anonymous {
		t.Fatalf("identity %+v", id)
	}
	if !id.ExpiresAt.Equal(exp) {
		t.Fatalf("ExpiresAt = %v, want %v", id.ExpiresAt, exp)
	}
	if id.Claims["sub"] != "u1" || id.Claims["exp"] != float64(exp.Unix()) {
		t.Fatalf("claims %v", id.Claims)
	}
	if org, _ := id.Claims["org"].(map[string]any); org["id"] != float64(7) {
		t.Fatalf("nested claim: %v", id.Claims["org"])
	}

	// Role missing → "".
	tok, _ = SignHS256(secret, map[string]any{"sub": "u2"})
	id, err = v.Verify(tok)
	if err != nil || id.Role != "" || !id.ExpiresAt.IsZero() {
		t.Fatalf("identity %+v, err %v", id, err)
	}
	if !v.Enabled() {
		t.Fatal("Enabled() = false with a secret")
	}
	if off, _ := NewVerifier(Config{}); off.Enabled() {
		t.Fatal("Enabled() = true without keys")
	}
}

func TestNotBeforeVsExpiry(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := now
	v, err := NewVerifier(Config{HS256Secret: secret, Now: func() time.Time { return clock }, Leeway: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := SignHS256(secret, map[string]any{"sub": "u", "nbf": now.Add(time.Minute), "exp": now.Add(2 * time.Minute)})
	for _, step := range []struct {
		at   time.Duration
		want error
	}{
		{0, ErrInvalidToken},                 // before nbf
		{55 * time.Second, nil},              // within leeway of nbf
		{90 * time.Second, nil},              // valid window
		{2*time.Minute + 4*time.Second, nil}, // within leeway of exp
		{2*time.Minute + 6*time.Second, ErrTokenExpired},
	} {
		clock = now.Add(step.at)
		_, err := v.Verify(tok)
		if step.want == nil && err != nil || step.want != nil && !errors.Is(err, step.want) {
			t.Fatalf("at +%v: err = %v, want %v", step.at, err, step.want)
		}
	}
}

func TestJWKSErrors(t *testing.T) {
	k := getKeys(t)
	good := rsaJWK("r1", &k.rsa1.PublicKey)
	edit := func(m map[string]any, kv ...any) map[string]any {
		c := map[string]any{}
		for key, v := range m {
			c[key] = v
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(c, kv[i].(string))
			} else {
				c[kv[i].(string)] = kv[i+1]
			}
		}
		return c
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	ec := ecJWK("e1", &k.ec1.PublicKey)
	tests := []struct {
		name string
		jwks []byte
		msg  string // "" means valid
	}{
		{"valid", jwks(good, ec), ""},
		{"enc key skipped", jwks(good, edit(ec, "use", "enc")), ""},
		{"not JSON", []byte("{"), "jwks: not a JSON object"},
		{"no keys", []byte(`{"k":[]}`), `jwks: no "keys" array`},
		{"single JWK", must(json.Marshal(good)), `single key (JWK), not a key set`},
		{"PEM", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: must(x509.MarshalPKIXPublicKey(&k.rsa1.PublicKey))}), "the file is PEM, not a JWKS"},
		{"empty keys", []byte(`{"keys":[]}`), "no usable RS256 or ES256 signing key"},
		{"only unsupported", jwks(map[string]any{"kty": "OKP", "kid": "o", "crv": "Ed25519", "x": "AA"}), `skipped key #0 (kid "o"): kty "OKP"`},
		{"missing kty", jwks(edit(good, "kty", nil)), `jwks: key #0 (kid "r1"): missing field "kty"`},
		{"missing n", jwks(good, edit(good, "kid", "r2", "n", nil)), `jwks: key #1 (kid "r2"): missing field "n"`},
		{"bad e", jwks(edit(good, "e", "!!")), `key #0 (kid "r1"): field "e" is not base64url`},
		{"even e", jwks(edit(good, "e", b64([]byte{2}))), `field "e": invalid RSA exponent`},
		{"small modulus", jwks(rsaJWK("s", &small.PublicKey)), `key #0 (kid "s"): field "n": RSA modulus has 1024 bits; at least 2048`},
		{"missing crv", jwks(edit(ec, "crv", nil)), `key #0 (kid "e1"): missing field "crv"`},
		{"missing y", jwks(edit(ec, "y", nil)), `missing field "y"`},
		{"point off curve", jwks(edit(ec, "y", ec["x"])), `not a point on P-256`},
		{"private key", jwks(edit(good, "d", "AAAA")), `contains a private key`},
		{"duplicate kid", jwks(good, rsaJWK("r1", &k.rsa2.PublicKey)), `key #1 (kid "r1"): duplicate kid (also key #0)`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewVerifier(Config{JWKS: tc.jwks})
			if tc.msg == "" {
				if err != nil {
					t.Fatalf("NewVerifier: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("NewVerifier error = %v, want it to say %q", err, tc.msg)
			}
		})
	}
}

// TestJWKSFixtures reads the JWKS files under testdata/auth: each file named
// bad-*.json must be refused with the message in the matching .err file;
// good-*.json must load.
func TestJWKSFixtures(t *testing.T) {
	files, err := filepath.Glob("../../testdata/auth/*.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no fixtures under testdata/auth")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			v, err := NewVerifier(Config{JWKS: data})
			if strings.HasPrefix(filepath.Base(f), "good-") {
				if err != nil || !v.Enabled() {
					t.Fatalf("NewVerifier: %v", err)
				}
				return
			}
			want, rerr := os.ReadFile(strings.TrimSuffix(f, ".json") + ".err")
			if rerr != nil {
				t.Fatal(rerr)
			}
			if err == nil || !strings.Contains(err.Error(), strings.TrimSpace(string(want))) {
				t.Fatalf("NewVerifier error = %v, want it to say %q", err, strings.TrimSpace(string(want)))
			}
		})
	}
}

func TestMemo(t *testing.T) {
	id := Anon()
	key := new(int)
	calls := 0
	for i := 0; i < 3; i++ {
		if got := id.Memo(key, func() any { calls++; return "x" }); got != "x" {
			t.Fatalf("Memo = %v", got)
		}
	}
	if calls != 1 {
		t.Fatalf("compute ran %d times, want 1", calls)
	}
	if other := Anon(); other.Memo(key, func() any { return "y" }) != "y" {
		t.Fatal("memo shared between identities")
	}
}

// Connections presenting the same token share one identity (the cache);
// the cache never outlives the token (TestNotBeforeVsExpiry checks the
// expiry through it), and a tampered token is still refused.
func TestVerifiedTokenCache(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	v, err := NewVerifier(Config{HS256Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := SignHS256(secret, map[string]any{"sub": "u", "role": "user", "exp": time.Now().Add(time.Hour).Unix()})
	a, err := v.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	b, err := v.Verify(" " + tok + " ")
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatal("the same token gave two identities")
	}
	other, _ := SignHS256(secret, map[string]any{"sub": "w", "role": "user"})
	if c, err := v.Verify(other); err != nil || c == a || c.Subject != "w" {
		t.Fatalf("another token: %+v, %v", c, err)
	}
	tampered := tok[:len(tok)-2] + "xx"
	if _, err := v.Verify(tampered); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("tampered token after a cached one: %v", err)
	}
	for i := 0; i < cacheMax+10; i++ { // the cache stays bounded
		t2, _ := SignHS256(secret, map[string]any{"sub": fmt.Sprint(i)})
		if _, err := v.Verify(t2); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(v.cache); n > cacheMax {
		t.Fatalf("cache holds %d tokens, bound %d", n, cacheMax)
	}
}
