package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/client"
)

// TestSubscribeSinceReplays: Subscribe with since on a connected client
// delivers the retained events after since first (the package doc's
// promise), then live ones: rows 2..5 after the position of row 1, once
// each, in order.
func TestSubscribeSinceReplays(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newEnv(t)
	first, err := client.Dial(ctx, e.srv.URL(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	sub := subscribe(ctx, t, first, "posts")
	if err := <-e.writer(ctx, 1, 3, 0); err != nil {
		t.Fatal(err)
	}
	var since string
	for i := 1; i <= 3; i++ {
		ev := <-sub.Events()
		if i == 1 {
			since = ev.Position
		}
	}
	late, err := client.Dial(ctx, e.srv.URL(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	resumed, err := late.Subscribe(ctx, []string{"posts"}, since)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-e.writer(ctx, 4, 5, 0); err != nil {
		t.Fatal(err)
	}
	checkSequence(t, collectIDs(ctx, t, resumed, 4), 2, 5)
}
