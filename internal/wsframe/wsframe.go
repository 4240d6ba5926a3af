// Package wsframe encodes the frames a WebSocket server writes itself
// (RFC 6455 section 5.2): final (FIN set, never fragmented), unmasked, with
// the shortest payload length encoding. It is the one frame encoder of
// pgrealtime's data frames (wsapi writes its text frames with it, beside
// coder/websocket) and of the benchmark's fan-out floor, so that the two
// write the same bytes.
package wsframe

import "encoding/binary"

// Opcodes (RFC 6455 section 5.2).
const (
	OpText  byte = 0x1
	OpClose byte = 0x8
	OpPing  byte = 0x9
	OpPong  byte = 0xA
)

// MaxHeader is the longest header AppendHeader writes.
const MaxHeader = 10

// AppendHeader appends the header of a final, unmasked frame with opcode
// op and a payload of n bytes (n >= 0).
func AppendHeader(dst []byte, op byte, n int) []byte {
	b0 := 0x80 | op&0x0F // FIN
	switch {
	case n < 126:
		return append(dst, b0, byte(n))
	case n <= 0xFFFF:
		return binary.BigEndian.AppendUint16(append(dst, b0, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(dst, b0, 127), uint64(n))
	}
}

// AppendText appends a whole text frame carrying p.
func AppendText(dst, p []byte) []byte {
	return append(AppendHeader(dst, OpText, len(p)), p...)
}
