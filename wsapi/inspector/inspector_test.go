package inspector

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func get(t *testing.T, srv *httptest.Server, method, path string) (*http.Response, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestHandlerServesPage(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()

	resp, body := get(t, srv, http.MethodGet, "/")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /: status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
	if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("missing nosniff")
	}
	// The elements the browser test and users rely on.
	for _, id := range []string{
		`id="token"`, `id="connect"`, `id="disconnect"`, `id="status"`,
		`id="pattern"`, `id="subscribe"`, `id="patterns"`, `id="event-rows"`,
		`id="detail-json"`, `id="pause"`, `id="clear"`, `id="notices"`,
		`id="count-received"`, `id="count-create"`, `id="count-update"`, `id="count-delete"`,
		`id="count-truncate"`, `id="count-custom"`, `id="count-duplicates"`, `id="last-position"`,
		`'/realtime'`, `access_token=`, `from './pgrealtime-client.js'`,
	} {
		if !strings.Contains(body, id) {
			t.Errorf("page lacks %s", id)
		}
	}
	// No external resources: everything is embedded.
	for _, bad := range []string{"https://", "src=", "<link rel=\"stylesheet"} {
		if strings.Contains(body, bad) {
			t.Errorf("page references an external resource (%q)", bad)
		}
	}

	resp, body = get(t, srv, http.MethodHead, "/")
	if resp.StatusCode != http.StatusOK || body != "" {
		t.Errorf("HEAD /: status %d, %d body bytes", resp.StatusCode, len(body))
	}
	// The client the page imports, from the same origin.
	resp, body = get(t, srv, http.MethodGet, ClientPath)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/javascript; charset=utf-8" {
		t.Fatalf("GET %s: status %d, Content-Type %q", ClientPath, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if !strings.Contains(body, "createClient") || strings.Contains(body, "import ") {
		t.Errorf("GET %s: not the self-contained client bundle", ClientPath)
	}
	if resp, _ = get(t, srv, http.MethodGet, "/nope"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nope: status %d, want 404", resp.StatusCode)
	}
	if resp, _ = get(t, srv, http.MethodPost, "/"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /: status %d, want 405", resp.StatusCode)
	}
}

// The page's inline script and style must be allowed by its own CSP,
// otherwise the browser silently refuses to run it.
func TestCSPCoversInlineCode(t *testing.T) {
	if n := len(scriptRE.FindAll(page, -1)); n != 1 {
		t.Fatalf("page has %d inline scripts, want 1", n)
	}
	if n := len(styleRE.FindAll(page, -1)); n != 1 {
		t.Fatalf("page has %d inline styles, want 1", n)
	}
	if !strings.Contains(csp, "script-src 'self' 'sha256-") {
		t.Errorf("CSP must allow the same-origin client: %s", csp)
	}
	if strings.Count(csp, "'sha256-") != 2 {
		t.Fatalf("CSP lacks the hashes: %s", csp)
	}
	if strings.Contains(string(page), " style=\"") || strings.Contains(string(page), " onclick=") {
		t.Errorf("inline style/handler attributes are blocked by the CSP")
	}
}
