// Package inspector serves pgrealtime's inspector page: an HTML page (inline
// CSS and JavaScript, no CDN) that connects to /realtime on the same host
// with a token, subscribes to topic patterns and shows live events.
//
// The page's connection logic is the official JavaScript client
// (clients/js): its built bundle, pgrealtime-client.js, is committed here and
// embedded next to the page, so the binary builds without npm. A test in
// clients/js fails when the committed bundle is not what the client's source
// builds to (`npm run build:inspector` updates it).
//
// Handler answers GET and HEAD for "/" (and "/index.html") and
// "/pgrealtime-client.js"; every other path is 404, so the handler can be
// mounted as the catch-all "GET /" route of the server's mux.
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

//go:embed pgrealtime-client.js
var clientJS []byte

// ClientPath is where the page loads the client from.
const ClientPath = "/pgrealtime-client.js"

// started is the page's Last-Modified time: the page changes only with the
// binary.
var started = time.Now()

// csp allows nothing but the page's own inline script and style (by hash),
// scripts from its own origin (the client) and WebSocket/fetch connections
// to its own origin.
var csp = buildCSP(page)

// Handler returns the handler that serves the inspector page.
func Handler() http.Handler {
	return http.HandlerFunc(serve)
}

func serve(w http.ResponseWriter, r *http.Request) {
	body, ctype := page, "text/html; charset=utf-8"
	switch r.URL.Path {
	case "/", "/index.html":
	case ClientPath:
		body, ctype = clientJS, "text/javascript; charset=utf-8"
	default:
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h := w.Header()
	h.Set("Content-Type", ctype)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", csp)
	http.ServeContent(w, r, "", started, bytes.NewReader(body))
}

var (
	scriptRE = regexp.MustCompile(`(?s)<script type="module">(.*?)</script>`)
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
		"script-src 'self' " + hashes(scriptRE) + "; " +
		"style-src " + hashes(styleRE) + "; " +
		"connect-src 'self' ws: wss:; img-src 'self' data:; " +
		"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}
