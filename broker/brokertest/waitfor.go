package brokertest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/broker"
)

// runWaitFor checks Position and WaitFor. newBroker has called Begin.
func runWaitFor(t *testing.T, newBroker NewBroker) {
	ctx := func(t *testing.T, d time.Duration) context.Context {
		c, cancel := context.WithTimeout(context.Background(), d)
		t.Cleanup(cancel)
		return c
	}
	appendTx := func(t *testing.T, b broker.Broker, tx *broker.Tx) {
		t.Helper()
		if err := b.Append(ctx(t, 20*time.Second), tx); err != nil {
			t.Fatalf("append: %v", err)
		}
	}

	t.Run("ReturnsOnceApplied", func(t *testing.T) {
		b := newBroker(t, 16)
		appendTx(t, b, Tx(100, "posts/create/1", "posts/create/2"))
		for _, p := range []broker.Position{{}, {LSN: 100}, {LSN: 100, Index: 1}, {LSN: 100, Index: 2}} {
			if err := b.WaitFor(ctx(t, 20*time.Second), p); err != nil {
				t.Fatalf("WaitFor(%s) after it was appended: %v", p, err)
			}
		}
		if got := b.Position(); got.String() != "0/64:2" {
			t.Fatalf("Position after WaitFor(0/64:2) = %s", got)
		}
	})

	t.Run("WaitsForALaterAppend", func(t *testing.T) {
		b := newBroker(t, 16)
		appendTx(t, b, Tx(100, "posts/create/1"))
		want := broker.Position{LSN: 300, Index: 1}
		done := make(chan error, 1)
		go func() { done <- b.WaitFor(ctx(t, 20*time.Second), want) }()
		appendTx(t, b, Tx(200, "posts/create/2"))
		appendTx(t, b, Tx(300, "posts/create/3"))
		if err := <-done; err != nil {
			t.Fatalf("WaitFor(%s): %v", want, err)
		}
		if got := b.Position(); got.Less(want) {
			t.Fatalf("WaitFor returned with Position %s, before %s", got, want)
		}
	})

	t.Run("DeadlineIsHistoryUnavailable", func(t *testing.T) {
		b := newBroker(t, 16)
		// Nothing appended: not even a zero position is reached.
		if err := b.WaitFor(ctx(t, 50*time.Millisecond), broker.Position{}); !errors.Is(err, broker.ErrHistoryUnavailable) {
			t.Fatalf("WaitFor(zero) on an empty stream: err = %v, want ErrHistoryUnavailable", err)
		}
		appendTx(t, b, Tx(100, "posts/create/1"))
		ahead := broker.Position{LSN: 99999, Index: 1}
		if err := b.WaitFor(ctx(t, 50*time.Millisecond), ahead); !errors.Is(err, broker.ErrHistoryUnavailable) {
			t.Fatalf("WaitFor(%s) ahead of the stream: err = %v, want ErrHistoryUnavailable", ahead, err)
		}
		cctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := b.WaitFor(cctx, ahead); !errors.Is(err, context.Canceled) {
			t.Fatalf("WaitFor with a cancelled context: err = %v, want context.Canceled", err)
		}
	})

	t.Run("ClosedBroker", func(t *testing.T) {
		b := newBroker(t, 16)
		done := make(chan error, 1)
		go func() { done <- b.WaitFor(ctx(t, 20*time.Second), broker.Position{LSN: 500, Index: 1}) }()
		if err := b.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		if err := <-done; !errors.Is(err, broker.ErrClosed) {
			t.Fatalf("WaitFor across Close: err = %v, want ErrClosed", err)
		}
	})
}
