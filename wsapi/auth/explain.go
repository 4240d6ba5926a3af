package auth

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

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
