// Package wsapi is pgrealtime's HTTP and WebSocket server: the /realtime
// endpoint of PROTOCOL.md section 3, the Supabase Realtime endpoint
// /realtime/v1/websocket of section 9 (Phoenix channels; wire format in
// wsapi/phoenix), the broadcast and connections APIs, and the health,
// readiness and metrics endpoints.
//
// Guarantees:
//
//   - Each connection is a broker.Subscriber. Deliver and DeliverBatch never block:
//     they filter the event with the rules (reading the connection's identity
//     through an atomic pointer, with no lock shared between connections)
//     and put the event's shared, already encoded bytes on the connection's
//     send queue (a FIFO that grows on demand; nothing is preallocated). One
//     Deliver or DeliverBatch (an event, a transaction's events, a replay)
//     is one message of the queue, and so is a reply.
//
//   - The queue is bounded by SendQueue messages, by time rather than at
//     once: a connection may have up to SendQueue messages queued for any
//     length of time; past that (a burst: Postgres sends the WAL in bursts,
//     published faster than any writer can write them), it is closed with
//     4008 when the messages queued when it went past SendQueue are not
//     all written within BehindTimeout (default 1 s) and its socket is
//     full (a write waits for the client): so some message has waited that
//     long, and a client that stopped reading, or reads slower than the
//     stream, is closed within about twice that once its socket is full.
//     It is closed at once past HardQueue(SendQueue) (64 times SendQueue,
//     at least 65 536). The close comes from another goroutine, the
//     connection is removed from the broker, and the publisher and every
//     other connection are never delayed by it. A message count alone
//     cannot tell a burst from a client that stopped reading; the age of
//     the waiting messages can (measured: a reader that keeps up with 3 000
//     single-row transactions of 4 KB reaches several hundred messages,
//     TestFastReaderNeverSlowConsumer).
//
//   - A connection has no writer goroutine of its own. A connection with
//     something queued goes on the server's ready list, served in FIFO order
//     by at most GOMAXPROCS pool workers (started on demand, gone when the
//     list is empty). A worker corks the socket, copies the queued frames
//     into the cork buffer and writes them with one non-blocking write(2);
//     it never waits on a socket. A socket that cannot take everything (or
//     a queue headed by a large batch) is handed to a flusher goroutine of
//     that connection, which writes corked, with one write(2) per 64 KiB,
//     under a deadline of WriteTimeout per flush, until the queue is
//     empty. A flush that misses it closes with 4008 (the flush gets one
//     more WriteTimeout so that the close frame can follow it; then the
//     socket is dropped). One owner at a time writes a connection, so a
//     connection receives events in the order the broker delivered them.
//
//   - Text frames are encoded by wsapi (internal/wsframe, the encoder the
//     benchmark's fan-out floor uses too) straight into the cork buffer;
//     coder/websocket does the handshake, reads, and writes the control
//     frames (ping, pong, close), each with one write into the cork, and
//     no data frame follows the close frame. TestFramesConformance parses
//     the raw server stream under mixed concurrent traffic with its own
//     RFC 6455 parser: whole frames, never interleaved, final, unmasked,
//     shortest lengths, nothing after the close frame.
//
//   - The pool's non-blocking write(2) is Unix-only (rawwrite_unix.go);
//     elsewhere (Windows) every connection with something to write is
//     handed to its flusher goroutine, with the same order and deadlines.
//
//   - Replies to a request are queued on the same queue. The reply to a
//     subscribe is queued before any event of the new subscription (and
//     before the replayed events of a subscribe with since), so a client
//     sees "subscribed" first, then the replay in order, then live events,
//     with no gap and no duplicate in between.
//
//   - The subscribed reply always carries a position that is a valid since:
//     the last event published, or before the first one the stream's start
//     (<LSN>:0). Before the WAL stream has started (no position known), a
//     subscribe waits for it up to SinceWait, then is refused with
//     history_unavailable.
//
//   - A subscribe is all or nothing; subscribe and unsubscribe requests are
//     rate limited per connection with a token bucket that never waits.
//
//   - A connection whose token expires is closed with 4001 at expiry time
//     unless an auth message refreshed the token first. An auth message
//     swaps the identity atomically (events are filtered with the new
//     identity from then on) and drops the subscriptions it may no longer
//     read.
//
//   - Shutdown refuses new upgrades with 503 and closes every socket with
//     1001, waiting (bounded by its context) for the sockets to close.
//
//   - The Supabase endpoint shares everything above (send queue, write pool,
//     limits, pings, token expiry, rules): a channel's postgres_changes
//     bindings and its broadcast feed are broker subscribers of the
//     connection, so a change reaches a channel once, in commit order,
//     listing the ids of every binding it matches; the frame (topic,
//     join_ref) is fixed at join; the event's Supabase payload is encoded
//     once per event (broker.Event.AltEncoding) and framed per subscriber
//     at write time, the same for both serializers. The join reply and the system message
//     "Subscribed to PostgreSQL" are queued before any event of the new
//     bindings, which are live by then (no gap after it).
//
// Choices where PROTOCOL.md is silent:
//   - "posts" and "posts.*" are one subscription (the canonical pattern);
//     unsubscribing either removes it. Replies echo the topics as written.
//     With column filters the same holds for the part before "?"
//     ("posts?a=eq.1" is "posts.*?a=eq.1"); the filters are part of the
//     name as written, not reordered ("?a=eq.1&b=eq.2" and "?b=eq.2&a=eq.1"
//     are two subscriptions delivering the same events, once per connection).
//   - Filters are also accepted on a record pattern ("posts.7?status=eq.open");
//     the first "?" always starts the filters, so a record id containing
//     "?" is reached with a filter on its key column instead. "*" takes no
//     filters (invalid_topic).
//   - A subscribe whose since is ahead of the stream waits (up to 10 s)
//     without holding back live events of the existing subscriptions; if
//     the stream does not get there, the answer is history_unavailable.
//   - A binary frame closes with 1008 at once; bad_request errors close with
//     1008 when more than 20 come in a burst (refilling at one per 2 s).
//   - HTTP errors are JSON objects {"error": code, "message": text}. An
//     Origin that is not allowed gets 403, a refused token 401 (error
//     invalid_token or token_expired), a full server or one shutting down
//     503. A token presented to a server without keys is refused.
//   - POST /api/broadcast refuses unknown fields (typos such as recordId)
//     and collections containing ".", "*", "?" or whitespace (no topic could
//     name them); it answers 202 {"accepted":true}. Without a token verifier
//     the admin APIs answer loopback callers only.
//   - A connection that does not answer a ping within PingInterval is
//     dropped without a close handshake (it is dead).
//   - Supabase endpoint: the apikey is checked at join, not at upgrade (a
//     refused token is a join error the client shows, where an HTTP 401
//     would make it reconnect forever); a frame that does not decode gets
//     an error reply on topic "phoenix" and counts towards the 1008 abuse
//     limit; binary frames are accepted only as serializer 2.0.0 broadcast
//     pushes with JSON payloads; one identity per socket (the last token
//     verified on any channel); a channel receives the custom events of
//     collection <name> when its identity may read <name>; the sender of a
//     client broadcast is recognised by the event it published (self: false
//     skips it); presence is accepted with an always-empty state; private
//     channels are refused.
package wsapi
