package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net"
	"time"

	"github.com/jackc/pgx/v5"
)

// LockKey is the advisory lock key for slot: the first 8 bytes of
// SHA-256("pgrealtime slot " + slot), big-endian, as a signed int64. In
// pg_locks it shows as classid = the high 32 bits, objid = the low 32 bits,
// objsubid = 1.
func LockKey(slot string) int64 {
	sum := sha256.Sum256([]byte("pgrealtime slot " + slot))
	return int64(binary.BigEndian.Uint64(sum[:8]))
}

// AppName is the application_name of a node's lock session, which is how
// pg_stat_activity shows it.
func AppName(nodeID string) string { return "pgrealtime-leader:" + nodeID }

// sessionParams are the runtime parameters of the lock session
// (docs/cluster.md section 8): the server's keepalives and tcp_user_timeout
// end the session, and with it the lock, within about 4-5 s of a network
// loss; client_connection_check_interval ends a waiting session whose client
// vanished, so that the lock is never granted to a dead follower; no timeout
// may end a session that is idle or blocked on purpose.
var sessionParams = map[string]string{
	"idle_session_timeout":                "0",
	"statement_timeout":                   "0",
	"idle_in_transaction_session_timeout": "0",
	"lock_timeout":                        "0",
	"tcp_keepalives_idle":                 "2",
	"tcp_keepalives_interval":             "1",
	"tcp_keepalives_count":                "2",
	"tcp_user_timeout":                    "4000",
	"client_connection_check_interval":    "1000",
}

// sessionConfig parses url and sets the lock session's parameters over
// whatever the URL says.
func sessionConfig(url, nodeID string) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database URL for the leader lock session: %w", err)
	}
	for k, v := range sessionParams {
		cfg.RuntimeParams[k] = v
	}
	cfg.RuntimeParams["application_name"] = AppName(nodeID)
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	// The client side of the socket gets the same keepalives, so that a
	// half-open session also fails here, not only on the server.
	d := &net.Dialer{
		Timeout: cfg.ConnectTimeout,
		KeepAliveConfig: net.KeepAliveConfig{
			Enable: true, Idle: 2 * time.Second, Interval: time.Second, Count: 2,
		},
	}
	cfg.DialFunc = d.DialContext
	return cfg, nil
}

// closeSession ends the session (and releases the lock) with a bounded
// wait; a session that is already broken closes at once.
func closeSession(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}
