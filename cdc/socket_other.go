//go:build !linux

package cdc

import "net"

// socketPending is unknown off Linux: the reader then never pauses to
// batch (Config.BatchWindow).
func socketPending(net.Conn) (int, bool) { return 0, false }
