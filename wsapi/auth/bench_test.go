package auth

import (
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pgrealtime/pgrealtime/internal/jwkstest"
)

// BenchmarkVerifyCached is the cost of a token seen before (reconnects,
// several tabs): HS256 from the cache, and ES256 from a JWKS URL, whose
// cache entry is also checked against the key currently published.
func BenchmarkVerifyCached(b *testing.B) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	key := jwkstest.NewECKey("k")
	srv := jwkstest.NewServer(b, key)
	v, err := NewVerifier(Config{HS256Secret: secret, JWKSURL: srv.URL, HTTPClient: srv.Client()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(v.Close)
	claims := jwt.MapClaims{"sub": "u", "exp": time.Now().Add(time.Hour).Unix()}
	hs, _ := SignHS256(secret, claims)
	for _, bc := range []struct{ name, tok string }{{"HS256", hs}, {"ES256-jwks-url", key.Sign(b, claims)}} {
		b.Run(bc.name, func(b *testing.B) {
			if _, err := v.Verify(bc.tok); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(bc.tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
