package rules

import (
	"fmt"
	"testing"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/wsapi/auth"
)

// BenchmarkRules fans one event out to 10 000 subscribers (10 000 distinct
// identities) under (a) a public rule, (b) a rule on auth only and (c) a rule
// on auth and record. One op = Prepare + 10 000 Allow calls; ns/subscriber
// and CEL evaluations per subscriber are reported.
func BenchmarkRules(b *testing.B) {
	const subscribers = 10000
	ids := make([]*auth.Identity, subscribers)
	for i := range ids {
		ids[i] = user(fmt.Sprintf("user-%d", i), "user", "email", fmt.Sprintf("u%d@example.com", i), "exp", 1.9e9)
	}
	for _, bc := range []struct{ name, rule string }{
		{"a_public", `true`},
		{"b_auth_only", `auth.role == 'user'`},
		{"c_auth_and_record", `auth.sub == record.user_id`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := compile(b, "collections:\n  posts:\n    read: \""+bc.rule+"\"\n")
			for _, id := range ids {
				if err := s.CheckSubscribe(id, broker.Pattern{Collection: "posts"}); err != nil {
					b.Fatal(err)
				}
			}
			newEvent := func() *broker.Event {
				return rec("update", "posts", "id", int64(1), "user_id", "user-42", "title", "hello", "body", "some text")
			}
			// Warm up (identity claims converted to CEL values once).
			ev := newEvent()
			s.Prepare(ev)
			for _, id := range ids {
				s.Allow(id, ev)
			}
			start := s.Evaluations()
			allowed := 0
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				ev := newEvent()
				s.Prepare(ev)
				allowed = 0
				for _, id := range ids {
					if s.Allow(id, ev) {
						allowed++
					}
				}
			}
			b.StopTimer()
			if want := map[string]int{"a_public": subscribers, "b_auth_only": subscribers, "c_auth_and_record": 1}[bc.name]; allowed != want {
				b.Fatalf("allowed %d, want %d", allowed, want)
			}
			evals := s.Evaluations() - start
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/subscribers, "ns/subscriber")
			b.ReportMetric(float64(evals)/float64(b.N)/subscribers, "evals/subscriber")
		})
	}
}
