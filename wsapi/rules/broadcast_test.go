package rules

import (
	"errors"
	"strings"
	"testing"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/wsapi/auth"
)

func TestCheckBroadcast(t *testing.T) {
	s := compile(t, `
collections:
  room:
    read: "true"
    broadcast: "auth.sub != '' && event != 'admin-only'"
  lobby:
    read: "true"
  typed:
    broadcast: "auth.level > 2"
default:
  broadcast: "collection.startsWith('chat-') && auth.role == 'user'"
`)
	for _, tc := range []struct {
		id          *auth.Identity
		coll, event string
		want        string // "" allowed, else part of the error
	}{
		{user("ann", "user"), "room", "cursor", ""},
		{user("ann", "user"), "room", "admin-only", "broadcast rule for room denies this identity"},
		{auth.Anon(), "room", "cursor", "the connection is anonymous"},
		{nil, "room", "cursor", "the connection is anonymous"},
		{user("ann", "user"), "chat-1", "x", ""}, // default
		{user("ann", "admin"), "chat-1", "x", "denies"},
		{user("ann", "user"), "lobby", "x", "denies"}, // listed without broadcast: the default
		{user("ann", "user", "level", 3), "typed", "x", ""},
		{user("ann", "user"), "typed", "x", "could not be evaluated"},
	} {
		err := s.CheckBroadcast(tc.id, tc.coll, tc.event)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v %s/%s: %v", tc.id, tc.coll, tc.event, err)
		case tc.want != "" && (err == nil || !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v %s/%s: err = %v, want %q", tc.id, tc.coll, tc.event, err, tc.want)
		}
	}

	// Without any broadcast rule nobody may send, the admin role included.
	s = compile(t, "collections:\n  room:\n    read: \"true\"\n")
	if err := s.CheckBroadcast(user("root", "admin"), "room", "x"); err == nil || !strings.Contains(err.Error(), "denied by default") {
		t.Errorf("no rule: %v", err)
	}
	if _, err := Compile(&Config{Collections: map[string]Collection{"room": {Broadcast: str("auth.")}}}, "admin"); err == nil ||
		!strings.Contains(err.Error(), `collection "room": broadcast rule "auth." does not compile`) {
		t.Errorf("bad rule: %v", err)
	}
	if _, err := Compile(&Config{Default: &Collection{Broadcast: str("record.x == 1")}}, "admin"); err == nil ||
		!strings.Contains(err.Error(), "variables: auth, collection, event") {
		t.Errorf("record in a broadcast rule: %v", err)
	}
}

func TestPrepareTrimsColumnTypes(t *testing.T) {
	s := compile(t, "collections:\n  posts:\n    read: \"true\"\n    omit_columns: [secret]\n")
	types := []broker.ColumnType{{Name: "id", Type: "int4"}, {Name: "secret", Type: "text"}}
	ev := rec(broker.ActionCreate, "posts", "id", int64(1), "secret", "s")
	ev.ColumnTypes = types
	s.Prepare(ev)
	if len(ev.ColumnTypes) != 1 || ev.ColumnTypes[0].Name != "id" || len(types) != 2 {
		t.Fatalf("column types %v (shared slice %v must stay)", ev.ColumnTypes, types)
	}
}
