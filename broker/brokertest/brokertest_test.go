package brokertest_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/broker/brokertest"
)

// late is an asynchronous broker: broker.Memory underneath, but every
// delivery reaches the subscriber from another goroutine, delay after the
// Memory made it, in order (as a broker with a network hop would deliver).
// With extraAfter > 0 it is also broken: each event is delivered a second
// time, extraAfter after the first, a fault that shows only late.
type late struct {
	*broker.Memory
	delay, extraAfter time.Duration

	mu   sync.Mutex
	subs map[broker.Subscriber]*lateSub
	stop chan struct{}
	wg   sync.WaitGroup
}

var _ broker.Broker = (*late)(nil)

func newLate(t *testing.T, history int, delay, extraAfter time.Duration) *late {
	l := &late{
		Memory: broker.NewMemory(broker.Config{HistorySize: history}),
		delay:  delay, extraAfter: extraAfter,
		subs: map[broker.Subscriber]*lateSub{},
		stop: make(chan struct{}),
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// sub returns the forwarder of s, made on first use; it outlives Remove,
// so that what was queued before still arrives in order.
func (l *late) sub(s broker.Subscriber) *lateSub {
	l.mu.Lock()
	defer l.mu.Unlock()
	ls, ok := l.subs[s]
	if !ok {
		ls = &lateSub{l: l, to: s, wake: make(chan struct{}, 1)}
		l.subs[s] = ls
		l.wg.Add(1)
		go ls.run()
	}
	return ls
}

func (l *late) Subscribe(ctx context.Context, s broker.Subscriber, ps []broker.Pattern, since *broker.Position) (broker.Position, error) {
	return l.Memory.Subscribe(ctx, l.sub(s), ps, since)
}

func (l *late) Unsubscribe(s broker.Subscriber, ps []broker.Pattern) {
	l.Memory.Unsubscribe(l.sub(s), ps)
}

func (l *late) Remove(s broker.Subscriber) { l.Memory.Remove(l.sub(s)) }

func (l *late) Close() error {
	err := l.Memory.Close()
	l.mu.Lock()
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.mu.Unlock()
	l.wg.Wait()
	return err
}

// lateSub queues what the Memory delivers and hands it on from its own
// goroutine when due.
type lateSub struct {
	l    *late
	to   broker.Subscriber
	mu   sync.Mutex
	q    []delivery
	wake chan struct{}
}

type delivery struct {
	due   time.Time
	evs   []*broker.Event
	batch bool
}

func (s *lateSub) Deliver(ev *broker.Event) { s.push([]*broker.Event{ev}, false) }

func (s *lateSub) DeliverBatch(evs []*broker.Event) { s.push(evs, true) }

func (s *lateSub) Resync() { s.to.Resync() }

func (s *lateSub) push(evs []*broker.Event, batch bool) {
	now := time.Now()
	s.mu.Lock()
	s.q = append(s.q, delivery{due: now.Add(s.l.delay), evs: evs, batch: batch})
	if s.l.extraAfter > 0 {
		s.q = append(s.q, delivery{due: now.Add(s.l.delay + s.l.extraAfter), evs: evs, batch: batch})
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *lateSub) run() {
	defer s.l.wg.Done()
	for {
		s.mu.Lock()
		var d delivery
		ok := len(s.q) > 0
		if ok {
			d = s.q[0]
		}
		s.mu.Unlock()
		if !ok {
			select {
			case <-s.wake:
				continue
			case <-s.l.stop:
				return
			}
		}
		// The broker's own delay, not a test waiting: delivery is due then.
		if wait := time.Until(d.due); wait > 0 {
			tm := time.NewTimer(wait)
			select {
			case <-tm.C:
			case <-s.l.stop:
				tm.Stop()
				return
			}
		}
		s.mu.Lock()
		s.q = s.q[1:]
		s.mu.Unlock()
		if d.batch {
			s.to.DeliverBatch(d.evs)
		} else {
			s.to.Deliver(d.evs[0])
		}
	}
}

// The whole contract holds for a broker that delivers every event 100 ms
// late from another goroutine (the suite used to wait 50 ms and fail it).
func TestSuiteHoldsForAsynchronousBroker(t *testing.T) {
	brokertest.Run(t, func(t *testing.T, history int) broker.Broker {
		return newLate(t, history, 100*time.Millisecond, 0)
	})
}

const envLateExtra = "BROKERTEST_LATE_EXTRA"

// TestLateExtraDelivery runs the suite against a broker that delivers each
// event once more 200 ms after the first time, in a child process of
// TestSuiteCatchesLateExtraDelivery, which expects it to fail.
func TestLateExtraDelivery(t *testing.T) {
	if os.Getenv(envLateExtra) != "1" {
		t.Skip("run by TestSuiteCatchesLateExtraDelivery, which expects it to fail")
	}
	brokertest.Run(t, func(t *testing.T, history int) broker.Broker {
		return newLate(t, history, 0, 200*time.Millisecond)
	})
}

// An event that arrives late but should not arrive at all fails the
// suite: the checks of "exactly one" and "nothing more" wait on the
// barrier, which the extra delivery precedes.
func TestSuiteCatchesLateExtraDelivery(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run", "^TestLateExtraDelivery$", "-test.v")
	cmd.Env = append(os.Environ(), envLateExtra+"=1")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("the suite passed a broker that delivers every event twice, the second time 200 ms late:\n%s", out)
	}
	for _, want := range []string{
		"--- FAIL: TestLateExtraDelivery/OneDeliveryPerSubscriberWithOverlappingPatterns",
		"got 2 deliveries, want 1",
		"--- FAIL: TestLateExtraDelivery/CommitOrderAndDuplicateTransactionsIgnored",
		"--- FAIL: TestLateExtraDelivery/UnsubscribeAndRemove",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the suite's output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}
