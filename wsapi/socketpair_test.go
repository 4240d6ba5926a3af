package wsapi

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
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

// smallReceiveBuffer is an HTTP client whose sockets have a 4 KiB receive
// buffer, so that a client that stops reading fills the server's socket
// quickly.
func smallReceiveBuffer() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
		Control: func(network, address string, rc syscall.RawConn) error {
			var serr error
			rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
			return serr
		},
	}).DialContext}}
}
