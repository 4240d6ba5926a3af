//go:build linux

package cdc

import (
	"net"
	"testing"
	"time"
)

func TestSocketPending(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	if n, ok := socketPending(server); !ok || n != 0 {
		t.Fatalf("idle socket: %d, %v; want 0, true", n, ok)
	}
	if _, err := client.Write([]byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, ok := socketPending(server)
		if ok && n == 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a 10-byte write: %d, %v; want 10, true", n, ok)
		}
		time.Sleep(time.Millisecond)
	}
	buf := make([]byte, 16)
	if n, err := server.Read(buf); err != nil || n != 10 {
		t.Fatalf("read %d, %v", n, err)
	}
	if n, ok := socketPending(server); !ok || n != 0 {
		t.Fatalf("drained socket: %d, %v; want 0, true", n, ok)
	}
	if _, ok := socketPending(struct{ net.Conn }{server}); ok {
		t.Errorf("a conn without a file descriptor reported pending bytes")
	}
}
