package client

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"
)

// maxRefreshLead caps how long before expiry a token is refreshed.
const maxRefreshLead = 30 * time.Second

// tokenExpiry reads the exp claim of a JWT without verifying it (the server
// verifies; the client only needs to know when to refresh). Zero when the
// token has none or is not a JWT.
func tokenExpiry(token string) time.Time {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}
	}
	var claims struct {
		Exp *float64 `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp == nil {
		return time.Time{}
	}
	sec := int64(*claims.Exp)
	return time.Unix(sec, int64((*claims.Exp-float64(sec))*1e9))
}

// refreshDelay is how long from now a token expiring at exp should be
// refreshed: lead before exp, where lead is the option when set, else a
// quarter of the remaining lifetime capped at 30 s. Negative lead: never.
func refreshDelay(now, exp time.Time, lead time.Duration) (time.Duration, bool) {
	if exp.IsZero() || lead < 0 {
		return 0, false
	}
	left := exp.Sub(now)
	if lead == 0 {
		lead = min(left/4, maxRefreshLead)
	}
	return max(left-lead, 0), true
}
