// Package wsapi is pgrealtime's HTTP and WebSocket server: the /realtime
// endpoint of PROTOCOL.md section 3, the broadcast and connections APIs, and
// the health, readiness and metrics endpoints.
//
// Guarantees:
//   - Each connection is a broker.Subscriber. Deliver and Replay never block:
//     they filter the event with the rules (reading the connection's identity
//     through an atomic pointer, with no lock shared between connections)
//     and put the event's shared, already encoded bytes on the connection's
//     bounded send queue. A connection whose queue overflows is closed with
//     4008 from another goroutine and removed from the broker; the publisher
//     and every other connection are never delayed by it.
//   - One writer goroutine per socket writes the queue in order, so a
//     connection receives events in the order the broker delivered them. A
//     write that stalls for longer than WriteTimeout also closes with 4008.
//   - Replies to a request are queued on the same queue. The reply to a
//     subscribe is queued before any event of the new subscription (and
//     before the replayed events of a subscribe with since), so a client
//     sees "subscribed" first, then the replay in order, then live events,
//     with no gap and no duplicate in between.
//   - A subscribe is all or nothing; subscribe and unsubscribe requests are
//     rate limited per connection with a token bucket that never waits.
//   - A connection whose token expires is closed with 4001 at expiry time
//     unless an auth message refreshed the token first. An auth message
//     swaps the identity atomically (events are filtered with the new
//     identity from then on) and drops the subscriptions it may no longer
//     read.
//   - Shutdown refuses new upgrades with 503 and closes every socket with
//     1001, waiting (bounded by its context) for the sockets to close.
package wsapi
