package auth

import (
	"crypto"
)

// cacheMax bounds the verified-token cache.
const cacheMax = 10000

// cacheEntry is a verified token's identity and, when the token was
// verified with a key from the JWKS URL, that key: the entry is used only
// while the same key is still published under the same kid, so a key
// removed or replaced by the provider is honoured at the next fetch.
type cacheEntry struct {
	id  *Identity
	kid string
	key crypto.PublicKey // nil: a static key (secret or JWKS file)
}

// remember caches a token's identity after a full verification. A token
// verified with keys from the JWKS URL without a kid (any of several keys
// may have matched) is not cached: it is checked in full each time.
func (v *Verifier) remember(token string, id *Identity, sel *selected) {
	e := &cacheEntry{id: id}
	if sel.remote {
		if sel.key == nil {
			return
		}
		e.kid, e.key = sel.kid, sel.key
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cache == nil {
		v.cache = make(map[string]*cacheEntry)
	}
	if len(v.cache) >= cacheMax {
		for k := range v.cache { // evict one entry, any
			delete(v.cache, k)
			break
		}
	}
	v.cache[token] = e
}

// cached returns the identity of a token verified before, not expired
// since, and whose key is still published (otherwise nil, and the full
// check says why).
func (v *Verifier) cached(token string) *Identity {
	v.mu.Lock()
	e := v.cache[token]
	v.mu.Unlock()
	if e == nil {
		return nil
	}
	fresh := e.id.ExpiresAt.IsZero() || v.now().Before(e.id.ExpiresAt.Add(v.cfg.Leeway))
	if fresh && e.key != nil {
		fresh = sameKey(v.remote.current(e.kid), e.key)
	}
	if !fresh {
		v.mu.Lock()
		if v.cache[token] == e {
			delete(v.cache, token)
		}
		v.mu.Unlock()
		return nil
	}
	return e.id
}

// sameKey reports whether the published key cur (nil: none) is k.
func sameKey(cur, k crypto.PublicKey) bool {
	eq, ok := cur.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(k)
}
