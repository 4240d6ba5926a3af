package auth

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
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
