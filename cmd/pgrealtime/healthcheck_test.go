package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHealthcheck(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	var out bytes.Buffer
	if err := run(ctx, []string{"healthcheck", "--listen", addr}, envOf(), &out, &out); err != nil {
		t.Fatalf("healthy server: %v", err)
	}
	// The port from the environment, as in the container (PGREALTIME_LISTEN=:8080).
	_, port, _ := strings.Cut(addr, ":")
	if err := run(ctx, []string{"healthcheck"}, envOf("PGREALTIME_LISTEN", ":"+port), &out, &out); err != nil {
		t.Fatalf("healthy server via PGREALTIME_LISTEN=:%s: %v", port, err)
	}
	status = http.StatusServiceUnavailable
	if err := run(ctx, []string{"healthcheck", "--listen", addr}, envOf(), &out, &out); exitCode(err) != 1 {
		t.Fatalf("503: err %v (exit %d), want exit 1", err, exitCode(err))
	}
	srv.Close()
	if err := run(ctx, []string{"healthcheck", "--listen", addr}, envOf(), &out, &out); exitCode(err) != 1 {
		t.Fatalf("nothing listening: err %v, want exit 1", err)
	}
}

func TestDialAddr(t *testing.T) {
	for in, want := range map[string]string{":8080": "127.0.0.1:8080", "0.0.0.0:1": "127.0.0.1:1", "[::]:2": "[::1]:2", "10.0.0.1:3": "10.0.0.1:3"} {
		if got := dialAddr(in); got != want {
			t.Errorf("dialAddr(%q) = %q, want %q", in, got, want)
		}
	}
}
