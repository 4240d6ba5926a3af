// Package client is the official Go client of pgrealtime's /realtime
// WebSocket API (docs/PROTOCOL.md), for app servers that react to changes.
//
//	c, err := client.Dial(ctx, "ws://localhost:8080/realtime", client.Options{Token: tok})
//	sub, err := c.Subscribe(ctx, []string{"posts.*"}, "")
//	for ev := range sub.Events() {
//		if ev.Type == client.TypeGap { reload(); continue }
//		apply(ev)
//	}
//
// Guarantees:
//   - A Client holds one WebSocket. When it drops (server restart or crash,
//     1001, 1006, 4008 slow consumer, network loss) the client reconnects by
//     itself with capped exponential backoff and jitter, and subscribes its
//     topics again with since = the last position each subscription saw:
//     every subscription receives every event once, in order, across
//     reconnects and restarts of the server.
//   - When the server cannot rule out a gap (history_unavailable), each
//     affected subscription receives one event of type TypeGap, then live
//     events again (re-read your data when you see it).
//   - A token with an exp claim is refreshed through Options.GetToken and an
//     auth message before it expires, so a live connection is never cut for
//     expiry; after a 4001 close or a refused upgrade the client asks
//     GetToken for a new token before it reconnects.
//   - Refusals that a retry cannot fix (a token refused with no GetToken,
//     1008 policy violation, 1009 frame too large, HTTP 403) end the client:
//     Err reports why and every Events channel is closed.
//   - Back-pressure: a subscription's events wait in a buffer
//     (Options.EventBuffer); when the app does not read them, the client
//     stops reading the socket, the server eventually closes it with 4008,
//     and the client resumes from the last event it handed over once the
//     app reads again. Nothing is lost or duplicated.
//
// Routing: the server sends each event once per connection. The client
// hands it to every subscription of the client with a topic that matches it
// (collection, record id, and the column filters of PROTOCOL section 2,
// evaluated on the event's JSON). An event that matches no subscription by
// those rules (an update that changed the key, for a record-id topic of the
// old key) goes to every subscription with a topic on its collection.
//
// Every live event moves every subscription's position forward, and after
// a resume the client confirms, with a ping whose answer follows the
// replay, that every subscription is complete up to the server's position,
// so that a subscription that matched nothing for a long time resumes from
// there, not from a position the history has dropped.
package client
