// Package inspector serves pgrealtime's inspector page: a single
// self-contained HTML page (inline CSS and JavaScript, no CDN, no build step)
// that connects to /realtime on the same host with a token, subscribes to
// topic patterns and shows live events.
//
// The page is embedded in the binary. Handler answers GET and HEAD for "/"
// (and "/index.html"); every other path is 404, so the handler can be mounted
// as the catch-all "GET /" route of the server's mux.
package inspector

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"net/http"
	"regexp"
	"strings"
	"time"
)

//go:embed index.html
var page []byte

// started is the page's Last-Modified time: the page changes only with the
// binary.
var started = time.Now()

// csp allows nothing but the page's own inline script and style (by hash) and
// WebSocket/fetch connections to its own origin.
var csp = buildCSP(page)

// Handler returns the handler that serves the inspector page.
func Handler() http.Handler {
	return http.HandlerFunc(serve)
}

func serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" && r.URL.Path != "/index.html" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", csp)
	http.ServeContent(w, r, "index.html", started, bytes.NewReader(page))
}

var (
	scriptRE = regexp.MustCompile(`(?s)<script>(.*?)</script>`)
	styleRE  = regexp.MustCompile(`(?s)<style>(.*?)</style>`)
)

func buildCSP(p []byte) string {
	hashes := func(re *regexp.Regexp) string {
		var out []string
		for _, m := range re.FindAllSubmatch(p, -1) {
			sum := sha256.Sum256(m[1])
			out = append(out, "'sha256-"+base64.StdEncoding.EncodeToString(sum[:])+"'")
		}
		return strings.Join(out, " ")
	}
	return "default-src 'none'; " +
		"script-src " + hashes(scriptRE) + "; " +
		"style-src " + hashes(styleRE) + "; " +
		"connect-src 'self' ws: wss:; img-src 'self' data:; " +
		"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}
