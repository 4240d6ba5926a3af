package redisbroker

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/rueidis"

	"github.com/pgrealtime/pgrealtime/broker"
)

// PublishLive publishes a live-only event to every node, this one
// included (PUBLISH on the slot's live channel). Best effort: a node
// whose subscription is reconnecting misses it.
func (b *Broker) PublishLive(ctx context.Context, ev *broker.Event) error {
	if b.isClosed() {
		return broker.ErrClosed
	}
	payload, err := broker.AppendBinary(nil, ev, 0)
	if err != nil {
		return fmt.Errorf("publish live event: %w", err)
	}
	cmd := b.c.B().Publish().Channel(b.keys.live).Message(rueidis.BinaryString(payload)).Build()
	if err := b.c.Do(ctx, cmd).Error(); err != nil {
		return fmt.Errorf("publish live event to redis: %w", err)
	}
	return nil
}

// liveLoop keeps a subscription to the live channel until ctx ends,
// subscribing again with backoff after a lost connection.
func (b *Broker) liveLoop(ctx context.Context) {
	b.setLiveReason("subscribing to live events")
	backoff := minBackoff
	for ctx.Err() == nil {
		subscribed, err := b.subscribeLive(ctx)
		if ctx.Err() != nil {
			return
		}
		if subscribed {
			backoff = minBackoff
		}
		b.setLiveReason("redis live events: " + err.Error())
		b.log.Warn().Err(err).Dur("retry_in", backoff).Msg("live event subscription lost; live events published meanwhile are missed")
		if !sleep(ctx, backoff) {
			return
		}
		backoff = nextBackoff(backoff)
	}
}

// subscribeLive subscribes on a dedicated connection and hands every
// message to the hub until the connection is lost or ctx ends. It reports
// whether the subscription was confirmed.
func (b *Broker) subscribeLive(ctx context.Context) (subscribed bool, err error) {
	// Closed, not only released, at the end: releasing unsubscribes and
	// waits for the reply, which an unresponsive Redis never sends.
	dc, _ := b.c.Dedicate()
	defer dc.Close()
	confirmed := make(chan struct{}, 1)
	lost := dc.SetPubSubHooks(rueidis.PubSubHooks{
		OnMessage: func(m rueidis.PubSubMessage) { b.onLive(m.Message) },
		OnSubscription: func(s rueidis.PubSubSubscription) {
			if s.Kind == "subscribe" && s.Channel == b.keys.live {
				select {
				case confirmed <- struct{}{}:
				default:
				}
			}
		},
	})
	if err := dc.Do(ctx, dc.B().Subscribe().Channel(b.keys.live).Build()).Error(); err != nil {
		return false, fmt.Errorf("subscribe: %w", err)
	}
	for {
		select {
		case <-confirmed:
			subscribed = true
			b.setLiveReason("")
		case err, ok := <-lost:
			if !ok || err == nil {
				err = errors.New("connection closed")
			}
			return subscribed, err
		case <-ctx.Done():
			return subscribed, ctx.Err()
		}
	}
}

// onLive decodes one pub/sub message and fans it out.
func (b *Broker) onLive(msg string) {
	ev, txLen, err := broker.DecodeBinary([]byte(msg), broker.Position{})
	if err == nil && txLen != 0 {
		err = fmt.Errorf("live message carries transaction length %d, want 0", txLen)
	}
	if err != nil {
		b.log.Error().Err(err).Int("bytes", len(msg)).Msg("live event from redis does not decode: dropped")
		return
	}
	b.hub.ApplyLive(ev)
}
