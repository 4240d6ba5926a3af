package rules_test

import (
	"fmt"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/wsapi/auth"
	"github.com/pgrealtime/pgrealtime/wsapi/rules"
)

func Example() {
	read := "auth.sub == record.user_id"
	set, err := rules.Compile(&rules.Config{Collections: map[string]rules.Collection{
		"messages": {Read: &read, OmitColumns: []string{"ip"}},
	}}, "admin")
	if err != nil {
		panic(err)
	}
	ann := &auth.Identity{Subject: "ann", Claims: map[string]any{"sub": "ann"}}
	bob := &auth.Identity{Subject: "bob", Claims: map[string]any{"sub": "bob"}}

	fmt.Println("ann may subscribe:", set.CheckSubscribe(ann, broker.Pattern{Collection: "messages"}) == nil)
	fmt.Println("anonymous:", set.CheckSubscribe(auth.Anon(), broker.Pattern{Collection: "messages"}))

	ev := &broker.Event{Kind: broker.KindRecord, Collection: "messages", Action: broker.ActionCreate,
		Record: broker.Row{{Name: "id", Value: int64(1)}, {Name: "user_id", Value: "ann"}, {Name: "ip", Value: "10.0.0.1"}}}
	set.Prepare(ev) // once per event, before fan-out
	fmt.Println("record:", ev.Record)
	fmt.Println("to ann:", set.Allow(ann, ev), "to bob:", set.Allow(bob, ev))
	// Output:
	// ann may subscribe: true
	// anonymous: forbidden: read rule for messages could not be evaluated for this identity: no such key: sub (the connection is anonymous: auth is an empty map; send a token)
	// record: [{id 1} {user_id ann}]
	// to ann: true to bob: false
}
