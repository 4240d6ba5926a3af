package redistest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"testing"
	"time"
)

// respConn is a minimal RESP2 client, enough to check the server: commands
// as arrays of bulk strings, replies of every RESP2 type.
type respConn struct {
	c net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, s *Server) *respConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", s.Addr(), err)
	}
	t.Cleanup(func() { c.Close() })
	return &respConn{c: c, r: bufio.NewReader(c)}
}

// errReply is a RESP error reply ("-ERR ...").
type errReply string

func (e errReply) Error() string { return string(e) }

// do sends one command and reads its reply: a string (simple or bulk), nil
// (null bulk), int64, []any or errReply; err is an I/O error.
func (rc *respConn) do(timeout time.Duration, args ...string) (any, error) {
	_ = rc.c.SetDeadline(time.Now().Add(timeout))
	b := []byte("*" + strconv.Itoa(len(args)) + "\r\n")
	for _, a := range args {
		b = append(b, "$"+strconv.Itoa(len(a))+"\r\n"...)
		b = append(b, a...)
		b = append(b, "\r\n"...)
	}
	if _, err := rc.c.Write(b); err != nil {
		return nil, err
	}
	return rc.read()
}

func (rc *respConn) read() (any, error) {
	line, err := rc.r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return nil, fmt.Errorf("malformed reply line %q", line)
	}
	kind, body := line[0], line[1:len(line)-2]
	switch kind {
	case '+':
		return body, nil
	case '-':
		return errReply(body), nil
	case ':':
		return strconv.ParseInt(body, 10, 64)
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil {
			return nil, err
		}
		if n < 0 {
			return nil, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(rc.r, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil {
			return nil, err
		}
		if n < 0 {
			return nil, nil
		}
		out := make([]any, n)
		for i := range out {
			if out[i], err = rc.read(); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown reply type %q", kind)
}

// must runs a command and fails the test on an I/O error or an error reply.
func (rc *respConn) must(t *testing.T, args ...string) any {
	t.Helper()
	v, err := rc.do(10*time.Second, args...)
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	if e, ok := v.(errReply); ok {
		t.Fatalf("%v: %s", args, e)
	}
	return v
}
