package wsapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// socketPair returns both ends of a real WebSocket on loopback: the server
// side (for srv.newConn, so a test drives a conn directly) and the client
// side. The server handler holds its request open until the test ends.
func socketPair(tb testing.TB) (server, client *websocket.Conn) {
	tb.Helper()
	got := make(chan *websocket.Conn, 1)
	hold := make(chan struct{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		got <- ws
		<-hold
	}))
	tb.Cleanup(hs.Close)
	tb.Cleanup(func() { close(hold) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(hs.URL, "http"), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cws.CloseNow() })
	select {
	case server = <-got:
	case <-ctx.Done():
		tb.Fatal("no server-side socket")
	}
	return server, cws
}
