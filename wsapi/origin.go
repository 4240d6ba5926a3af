package wsapi

import (
	"fmt"
	"net/url"
	"path"
	"strings"
)

// originPolicy decides which browser origins may open a WebSocket
// (--allowed-origins). Requests without an Origin header (non-browser
// clients) and requests whose Origin host is the request's own Host are
// always allowed.
type originPolicy struct {
	any     bool
	origins []string // patterns matched against "scheme://host[:port]"
	hosts   []string // patterns matched against "host[:port]" and "host"
}

func parseOrigins(list []string) (originPolicy, error) {
	var op originPolicy
	for _, o := range list {
		o = strings.ToLower(strings.TrimSpace(o))
		switch {
		case o == "":
			continue
		case o == "*":
			op.any = true
			continue
		}
		o = strings.TrimSuffix(o, "/")
		if _, err := path.Match(o, ""); err != nil {
			return op, fmt.Errorf("allowed origin %q is not a valid pattern: %w", o, err)
		}
		if strings.Contains(o, "://") {
			op.origins = append(op.origins, o)
		} else {
			if strings.ContainsAny(o, "/?#") {
				return op, fmt.Errorf("allowed origin %q: give a full origin (https://app.example.com) or a host pattern (*.example.com)", o)
			}
			op.hosts = append(op.hosts, o)
		}
	}
	return op, nil
}

// allowed reports whether a request with this Origin header to this Host
// may open a WebSocket.
func (op originPolicy) allowed(origin, host string) bool {
	if origin == "" || op.any {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	oh := strings.ToLower(u.Host)
	if strings.EqualFold(oh, host) {
		return true
	}
	full := strings.ToLower(u.Scheme) + "://" + oh
	for _, p := range op.origins {
		if ok, _ := path.Match(p, full); ok {
			return true
		}
	}
	name := strings.ToLower(u.Hostname())
	for _, p := range op.hosts {
		if ok, _ := path.Match(p, oh); ok {
			return true
		}
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}
