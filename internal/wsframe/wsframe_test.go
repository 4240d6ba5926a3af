package wsframe

import (
	"bytes"
	"testing"
)

// Every length class of RFC 6455 section 5.2, at its edges.
func TestAppendHeader(t *testing.T) {
	for _, tc := range []struct {
		op   byte
		n    int
		want []byte
	}{
		{OpText, 0, []byte{0x81, 0}},
		{OpText, 125, []byte{0x81, 125}},
		{OpText, 126, []byte{0x81, 126, 0, 126}},
		{OpText, 0xFFFF, []byte{0x81, 126, 0xFF, 0xFF}},
		{OpText, 0x10000, []byte{0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
		{OpText, 1 << 20, []byte{0x81, 127, 0, 0, 0, 0, 0, 0x10, 0, 0}},
		{OpClose, 125, []byte{0x88, 125}},
		{OpPing, 4, []byte{0x89, 4}},
		{OpPong, 0, []byte{0x8A, 0}},
	} {
		got := AppendHeader([]byte("x"), tc.op, tc.n)
		if !bytes.Equal(got, append([]byte("x"), tc.want...)) {
			t.Errorf("AppendHeader(%#x, %d) = % x, want % x", tc.op, tc.n, got[1:], tc.want)
		}
		if len(got)-1 > MaxHeader {
			t.Errorf("header of %d bytes, MaxHeader is %d", len(got)-1, MaxHeader)
		}
	}
	if got := AppendText(nil, []byte("hi")); !bytes.Equal(got, []byte{0x81, 2, 'h', 'i'}) {
		t.Errorf("AppendText = % x", got)
	}
}

func BenchmarkAppendText(b *testing.B) {
	p := bytes.Repeat([]byte("x"), 300)
	buf := make([]byte, 0, 512)
	for i := 0; i < b.N; i++ {
		buf = AppendText(buf[:0], p)
	}
}
