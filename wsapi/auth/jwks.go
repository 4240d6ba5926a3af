package auth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"strings"
)

// Key types of a JWKS.
const (
	ktyRSA = "RSA"
	ktyEC  = "EC"
)

// minRSABits is the smallest RSA modulus accepted from a JWKS.
const minRSABits = 2048

// jwk is one key of a JWKS file (RFC 7517), the fields we read.
type jwk struct {
	Kty *string `json:"kty"`
	Kid *string `json:"kid"`
	Use string  `json:"use"`
	Alg string  `json:"alg"`
	// RSA
	N *string `json:"n"`
	E *string `json:"e"`
	// EC
	Crv *string `json:"crv"`
	X   *string `json:"x"`
	Y   *string `json:"y"`
	// Private parts must never be in a verification key file.
	D *string `json:"d"`
}

// publicKey is a parsed verification key.
type publicKey struct {
	kid   string // "" when the JWKS key has none
	kty   string
	index int // position in the JWKS, for messages
	rsa   *rsa.PublicKey
	ec    *ecdsa.PublicKey
}

// keySet is the parsed JWKS: verification keys by type.
type keySet struct {
	rsa   []*publicKey
	ec    []*publicKey
	byKid map[string]*publicKey
}

// find selects the key for a token with header kid (maybe "") signed with
// alg, which needs a key of type kty. A kid must name a key of that type,
// except that a key without kid is used for any token of its type when it is
// the only key of that type.
func (ks *keySet) find(kid, kty, alg string) (*publicKey, error) {
	same := ks.rsa
	if kty == ktyEC {
		same = ks.ec
	}
	if kid != "" {
		if k, ok := ks.byKid[kid]; ok {
			if k.kty != kty {
				return nil, &keyError{fmt.Sprintf("token is signed with %s but key %q is an %s key", alg, kid, k.kty)}
			}
			return k, nil
		}
	}
	if len(same) == 1 && same[0].kid == "" {
		return same[0], nil
	}
	switch {
	case len(same) == 0:
		return nil, &keyError{fmt.Sprintf("token is signed with %s but no %s key is configured", alg, kty)}
	case kid != "":
		return nil, &keyError{fmt.Sprintf("unknown key id (kid) %q", kid)}
	case len(same) == 1:
		return same[0], nil
	}
	return nil, &keyError{fmt.Sprintf("token has no key id (kid) and the JWKS has %d %s keys: add a kid header", len(same), kty)}
}

// parseJWKS parses a JWKS document. Keys whose "use" is not "sig", and keys
// of other types or algorithms than RS256/ES256 are skipped; a malformed key
// is an error naming it and its field. At least one usable key must remain.
func parseJWKS(data []byte) (*keySet, error) {
	if bytes.HasPrefix(bytes.TrimSpace(data), []byte("-----BEGIN")) {
		return nil, fmt.Errorf(`jwks: the file is PEM, not a JWKS: give the public keys as {"keys":[{"kty":"RSA","kid":…,"n":…,"e":…}]}`)
	}
	var doc struct {
		Keys *[]json.RawMessage `json:"keys"`
		Kty  *string            `json:"kty"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("jwks: not a JSON object: %w", err)
	}
	if doc.Keys == nil {
		if doc.Kty != nil {
			return nil, fmt.Errorf(`jwks: the file is a single key (JWK), not a key set: wrap it as {"keys":[…]}`)
		}
		return nil, fmt.Errorf(`jwks: no "keys" array`)
	}
	ks := &keySet{byKid: map[string]*publicKey{}}
	var skipped []string
	for i, raw := range *doc.Keys {
		var j jwk
		if err := json.Unmarshal(raw, &j); err != nil {
			return nil, fmt.Errorf("jwks: key #%d: %w", i, err)
		}
		name := fmt.Sprintf("key #%d", i)
		if j.Kid != nil {
			name = fmt.Sprintf("key #%d (kid %q)", i, *j.Kid)
		}
		if j.Kty == nil || *j.Kty == "" {
			return nil, fmt.Errorf(`jwks: %s: missing field "kty"`, name)
		}
		if j.D != nil {
			return nil, fmt.Errorf(`jwks: %s: contains a private key (field "d"); give public keys only`, name)
		}
		if j.Use != "" && j.Use != "sig" {
			skipped = append(skipped, fmt.Sprintf("%s: use %q", name, j.Use))
			continue
		}
		k := &publicKey{kty: *j.Kty, index: i}
		if j.Kid != nil {
			k.kid = *j.Kid
		}
		var err error
		switch *j.Kty {
		case ktyRSA:
			if j.Alg != "" && j.Alg != "RS256" {
				skipped = append(skipped, fmt.Sprintf("%s: alg %q", name, j.Alg))
				continue
			}
			k.rsa, err = parseRSA(&j)
		case ktyEC:
			if j.Alg != "" && j.Alg != "ES256" {
				skipped = append(skipped, fmt.Sprintf("%s: alg %q", name, j.Alg))
				continue
			}
			if j.Crv != nil && *j.Crv != "P-256" {
				skipped = append(skipped, fmt.Sprintf("%s: curve %q", name, *j.Crv))
				continue
			}
			k.ec, err = parseEC(&j)
		default:
			skipped = append(skipped, fmt.Sprintf("%s: kty %q", name, *j.Kty))
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("jwks: %s: %w", name, err)
		}
		if k.kid != "" {
			if prev, dup := ks.byKid[k.kid]; dup {
				return nil, fmt.Errorf("jwks: %s: duplicate kid (also key #%d)", name, prev.index)
			}
			ks.byKid[k.kid] = k
		}
		if k.kty == ktyRSA {
			ks.rsa = append(ks.rsa, k)
		} else {
			ks.ec = append(ks.ec, k)
		}
	}
	if len(ks.rsa)+len(ks.ec) == 0 {
		msg := "jwks: no usable RS256 or ES256 signing key"
		if len(skipped) > 0 {
			msg += " (skipped " + strings.Join(skipped, "; ") + ")"
		}
		return nil, fmt.Errorf("%s", msg)
	}
	return ks, nil
}

func b64Field(field string, v *string) ([]byte, error) {
	if v == nil || *v == "" {
		return nil, fmt.Errorf("missing field %q", field)
	}
	s := strings.TrimRight(*v, "=")
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("field %q is not base64url: %w", field, err)
	}
	return b, nil
}

func parseRSA(j *jwk) (*rsa.PublicKey, error) {
	nb, err := b64Field("n", j.N)
	if err != nil {
		return nil, err
	}
	eb, err := b64Field("e", j.E)
	if err != nil {
		return nil, err
	}
	n := new(big.Int).SetBytes(nb)
	if n.BitLen() < minRSABits {
		return nil, fmt.Errorf("field \"n\": RSA modulus has %d bits; at least %d are required", n.BitLen(), minRSABits)
	}
	e := new(big.Int).SetBytes(eb)
	if !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 || e.Bit(0) == 0 {
		return nil, fmt.Errorf(`field "e": invalid RSA exponent`)
	}
	return &rsa.PublicKey{N: n, E: int(e.Int64())}, nil
}

func parseEC(j *jwk) (*ecdsa.PublicKey, error) {
	if j.Crv == nil || *j.Crv == "" {
		return nil, fmt.Errorf(`missing field "crv"`)
	}
	xb, err := b64Field("x", j.X)
	if err != nil {
		return nil, err
	}
	yb, err := b64Field("y", j.Y)
	if err != nil {
		return nil, err
	}
	if len(xb) != 32 || len(yb) != 32 {
		return nil, fmt.Errorf(`fields "x" and "y" must be 32 bytes each for P-256 (got %d and %d)`, len(xb), len(yb))
	}
	raw := make([]byte, 0, 65)
	raw = append(raw, 4)
	raw = append(raw, xb...)
	raw = append(raw, yb...)
	k, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
	if err != nil {
		return nil, fmt.Errorf(`fields "x"/"y" are not a point on P-256`)
	}
	return k, nil
}
