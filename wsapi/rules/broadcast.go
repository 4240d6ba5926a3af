package rules

import (
	"fmt"
	"sort"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/wsapi/auth"
)

// Client broadcasts (PROTOCOL section 6, `broadcast`): a CEL expression over
// `auth`, `collection` and `event` that decides who may send a broadcast to
// a collection over the Supabase endpoint. A collection without its own
// `broadcast` uses `default.broadcast`; without either nobody may send
// (the admin role included: a broadcast reaches every reader of the
// collection, so it is opt-in). Server-side custom events need no rule.

const varEvent = "event"

// broadcastRules is the compiled `broadcast` rules of a Set.
type broadcastRules struct {
	env  *cel.Env
	def  *bcastRule
	coll map[string]*bcastRule
}

type bcastRule struct {
	src  string
	prog cel.Program
}

func compileBroadcast(cfg *Config) (broadcastRules, error) {
	var br broadcastRules
	if cfg == nil {
		return br, nil
	}
	env, err := cel.NewEnv(
		cel.Variable(varAuth, cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable(varCollection, cel.StringType),
		cel.Variable(varEvent, cel.StringType),
		cel.CrossTypeNumericComparisons(true),
	)
	if err != nil {
		return br, fmt.Errorf("rules: cel environment: %w", err)
	}
	br.env = env
	if d := cfg.Default; d != nil && d.Broadcast != nil {
		if br.def, err = br.compile(*d.Broadcast, "default"); err != nil {
			return br, err
		}
	}
	names := make([]string, 0, len(cfg.Collections))
	for name, c := range cfg.Collections {
		if c.Broadcast != nil {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		r, err := br.compile(*cfg.Collections[name].Broadcast, fmt.Sprintf("collection %q", name))
		if err != nil {
			return br, err
		}
		if br.coll == nil {
			br.coll = map[string]*bcastRule{}
		}
		br.coll[name] = r
	}
	return br, nil
}

func (br *broadcastRules) compile(src, where string) (*bcastRule, error) {
	ast, iss := br.env.Compile(src)
	if iss != nil && iss.Err() != nil {
		return nil, fmt.Errorf("rules: %s: broadcast rule %q does not compile (variables: auth, collection, event): %s", where, src, oneLine(iss.Err().Error()))
	}
	if out := ast.OutputType(); !out.IsExactType(cel.BoolType) && !out.IsExactType(cel.DynType) {
		return nil, fmt.Errorf("rules: %s: broadcast rule %q must be a boolean expression, but it gives %s", where, src, out)
	}
	prog, err := br.env.Program(ast)
	if err != nil {
		return nil, fmt.Errorf("rules: %s: broadcast rule %q: %w", where, src, err)
	}
	return &bcastRule{src: src, prog: prog}, nil
}

// CheckBroadcast returns nil when id may send the client broadcast event
// to collection, or an error wrapping ErrForbidden that says why.
func (s *Set) CheckBroadcast(id *auth.Identity, collection, event string) error {
	r := s.bcast.coll[collection]
	if r == nil {
		r = s.bcast.def
	}
	if r == nil {
		return forbidden(fmt.Sprintf("no broadcast rule allows sending to %s (client broadcasts are denied by default; add `broadcast:` to the collection or to default in the rules file)", collection))
	}
	if id == nil {
		id = anonymous
	}
	s.evals.Add(1)
	out, _, err := r.prog.Eval(map[string]any{
		varAuth:       authValue(id),
		varCollection: types.String(collection),
		varEvent:      types.String(event),
	})
	v, err := toVerdict(out, err)
	switch v {
	case allow:
		return nil
	case deny:
		return forbidden(fmt.Sprintf("broadcast rule for %s denies this identity: %s", collection, r.src))
	}
	hint := ""
	if id.Anonymous || len(id.Claims) == 0 {
		hint = " (the connection is anonymous: auth is an empty map; send a token)"
	}
	return forbidden(fmt.Sprintf("broadcast rule for %s could not be evaluated for this identity: %v%s", collection, err, hint))
}

// withoutColumnTypes returns cols without the omitted columns (cols itself
// when none is omitted: the slice is shared by the table's events).
func withoutColumnTypes(cols []broker.ColumnType, omit map[string]struct{}) []broker.ColumnType {
	n := 0
	for _, c := range cols {
		if _, drop := omit[c.Name]; drop {
			n++
		}
	}
	if n == 0 {
		return cols
	}
	out := make([]broker.ColumnType, 0, len(cols)-n)
	for _, c := range cols {
		if _, drop := omit[c.Name]; !drop {
			out = append(out, c)
		}
	}
	return out
}
