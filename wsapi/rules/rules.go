// Package rules decides, per collection, what each identity may see: CEL
// read rules, omitted columns, and collections never broadcast.
//
// Semantics (PROTOCOL section 6):
//   - Without a rules file only the admin role reads (deny by default).
//   - A collection's `read` is a CEL expression over `auth` (the token's
//     claims; an empty map when anonymous), `record` (the event's row as
//     the database sent it, omitted columns included; for custom events the
//     event's data when it is a JSON object, else an empty map),
//     `collection` and `action` (create, update, delete, truncate; "custom"
//     for custom events). It must be a boolean expression (or dyn, checked
//     at run time).
//   - A listed collection without `read` uses `default.read`; no default
//     means deny. `omit_columns` of the default apply to every collection in
//     addition to the collection's own. A collection that is not listed
//     takes everything from `default`, including `events`.
//   - `omit_columns` and `events: false` hold for everyone, the admin role
//     included; the admin role bypasses `read` only.
//   - A rule that fails at run time (missing key, type mismatch) denies that
//     one delivery, is counted in rule_errors_total and logged at most once
//     per second per collection; it never affects other deliveries.
//
// Cost: Prepare runs once per event and evaluates the rules that do not
// reference `auth`; Allow then only reads that result. A rule on neither
// `auth` nor the event (`true`) is evaluated once per collection, and the
// row is converted to CEL values only for a rule that references `record`. A rule that
// references `auth` but not `record`/`action` is evaluated once per identity
// (at subscribe time or on first use) and cached on the Identity. Only rules
// that reference both `auth` and the event are evaluated per subscriber,
// with the identity's claims converted to CEL values once.
//
// A Set is safe for concurrent use.
package rules

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/rs/zerolog"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/metrics"
	"github.com/pgrealtime/pgrealtime/wsapi/auth"
)

// ErrForbidden is wrapped by CheckSubscribe refusals.
var ErrForbidden = errors.New("forbidden")

// Config is the rules file (PROTOCOL section 6), decoded by cmd from YAML.
type Config struct {
	Collections map[string]Collection `yaml:"collections"`
	Default     *Collection           `yaml:"default"`
}

// Collection is one collection's rules.
type Collection struct {
	Read        *string  `yaml:"read"`
	OmitColumns []string `yaml:"omit_columns"`
	Events      *bool    `yaml:"events"`
	// Broadcast decides who may send client broadcasts to the collection
	// over the Supabase endpoint: CEL over auth, collection and event
	// (default false). See broadcast.go.
	Broadcast *string `yaml:"broadcast"`
}

// Variables of a read rule.
const (
	varAuth       = "auth"
	varRecord     = "record"
	varCollection = "collection"
	varAction     = "action"
)

// ActionCustom is the value of `action` in rules for custom events.
const ActionCustom = "custom"

// maxDefaultBindings bounds the per-collection state kept for collections
// that are not listed in the rules file (they come from events, so from the
// database, but stay bounded anyway).
const maxDefaultBindings = 4096

// Set is the compiled rules. Safe for concurrent use.
type Set struct {
	adminRole string

	// Log receives rule evaluation errors (at most one line per second per
	// collection). Compile sets zerolog.Nop(); set it before first use.
	Log zerolog.Logger

	env        *cel.Env
	bcast      broadcastRules
	bindings   map[string]*binding // listed collections
	defRule    *rule               // default.read; nil: deny
	defOmit    map[string]struct{} // default.omit_columns
	defOff     bool                // default.events == false
	unlisted   sync.Map            // collection name → *binding, for collections not listed
	nUnlisted  atomic.Int64
	evals      atomic.Uint64
	errLimiter sync.Map // collection name → *limiter
}

// rule is one compiled read expression.
type rule struct {
	src   string
	where string // `collection "posts"` or `default`
	prog  cel.Program
	// partial evaluates with record and action unknown (subscribe time).
	partial        cel.Program
	usesAuth       bool
	usesEvent      bool // references record or action
	usesRecord     bool // references record (Prepare builds it only then)
	usesCollection bool
}

// binding is what applies to one collection: its rule, omitted columns and
// whether it is broadcast. It is also the per-identity cache key for rules
// that reference `collection`.
type binding struct {
	name      string
	coll      ref.Val // types.String(name)
	rule      *rule   // nil: only the admin role reads
	omit      map[string]struct{}
	eventsOff bool
	// kept is false for a throw-away binding of an unlisted collection
	// (never used as a cache key).
	kept bool
	// static is the state of every event of the collection when its rule
	// references neither auth nor the event (`true`, a test of
	// `collection`): evaluated once, shared by all its events.
	static atomic.Pointer[eventState]
}

// memoKey is the per-identity cache key of b's rule verdict: the rule itself
// when the verdict cannot depend on the collection, else the binding.
func (b *binding) memoKey() any {
	if b.rule.usesCollection {
		return b
	}
	return b.rule
}

// Compile compiles every rule; an error names the collection and the CEL
// problem. A nil cfg means deny by default (only the admin role reads).
func Compile(cfg *Config, adminRole string) (*Set, error) {
	env, err := cel.NewEnv(
		cel.Variable(varAuth, cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable(varRecord, cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable(varCollection, cel.StringType),
		cel.Variable(varAction, cel.StringType),
		cel.CrossTypeNumericComparisons(true),
	)
	if err != nil {
		return nil, fmt.Errorf("rules: cel environment: %w", err)
	}
	s := &Set{adminRole: adminRole, Log: zerolog.Nop(), env: env, bindings: map[string]*binding{}}
	if cfg == nil {
		return s, nil
	}
	if s.bcast, err = compileBroadcast(cfg); err != nil {
		return nil, err
	}
	if d := cfg.Default; d != nil {
		if d.Read != nil {
			if s.defRule, err = s.compileRule(*d.Read, "default"); err != nil {
				return nil, err
			}
		}
		if s.defOmit, err = omitSet(d.OmitColumns, "default"); err != nil {
			return nil, err
		}
		s.defOff = d.Events != nil && !*d.Events
	}
	names := make([]string, 0, len(cfg.Collections))
	for name := range cfg.Collections {
		names = append(names, name)
	}
	sort.Strings(names) // report the first error deterministically
	for _, name := range names {
		c := cfg.Collections[name]
		where := fmt.Sprintf("collection %q", name)
		if err := checkCollectionName(name); err != nil {
			return nil, fmt.Errorf("rules: %s: %w", where, err)
		}
		b := &binding{name: name, coll: types.String(name), rule: s.defRule, kept: true}
		if c.Read != nil {
			if b.rule, err = s.compileRule(*c.Read, where); err != nil {
				return nil, err
			}
		}
		own, err := omitSet(c.OmitColumns, where)
		if err != nil {
			return nil, err
		}
		b.omit = union(own, s.defOmit)
		b.eventsOff = c.Events != nil && !*c.Events
		s.bindings[name] = b
	}
	return s, nil
}

func checkCollectionName(name string) error {
	switch {
	case name == "":
		return errors.New("empty collection name")
	case strings.ContainsAny(name, ".* \t\n"):
		return errors.New(`a collection name cannot contain ".", "*" or spaces (tables outside "public" are written "schema:table")`)
	}
	return nil
}

func omitSet(cols []string, where string) (map[string]struct{}, error) {
	if len(cols) == 0 {
		return nil, nil
	}
	m := make(map[string]struct{}, len(cols))
	for _, c := range cols {
		if strings.TrimSpace(c) == "" {
			return nil, fmt.Errorf("rules: %s: omit_columns has an empty column name", where)
		}
		m[c] = struct{}{}
	}
	return m, nil
}

func union(a, b map[string]struct{}) map[string]struct{} {
	if len(b) == 0 {
		return a
	}
	if len(a) == 0 {
		return b
	}
	m := make(map[string]struct{}, len(a)+len(b))
	for k := range a {
		m[k] = struct{}{}
	}
	for k := range b {
		m[k] = struct{}{}
	}
	return m
}

func (s *Set) compileRule(src, where string) (*rule, error) {
	if strings.TrimSpace(src) == "" {
		return nil, fmt.Errorf("rules: %s: read rule is empty (use \"true\" to allow everyone)", where)
	}
	ast, iss := s.env.Compile(src)
	if iss != nil && iss.Err() != nil {
		return nil, fmt.Errorf("rules: %s: read rule %q does not compile: %s", where, src, oneLine(iss.Err().Error()))
	}
	if out := ast.OutputType(); !out.IsExactType(cel.BoolType) && !out.IsExactType(cel.DynType) {
		return nil, fmt.Errorf("rules: %s: read rule %q must be a boolean expression, but it gives %s", where, src, out)
	}
	r := &rule{src: src, where: where}
	for _, info := range ast.NativeRep().ReferenceMap() {
		switch info.Name {
		case varAuth:
			r.usesAuth = true
		case varRecord:
			r.usesEvent, r.usesRecord = true, true
		case varAction:
			r.usesEvent = true
		case varCollection:
			r.usesCollection = true
		}
	}
	var err error
	if r.prog, err = s.env.Program(ast, cel.EvalOptions(cel.OptOptimize)); err != nil {
		return nil, fmt.Errorf("rules: %s: read rule %q: %w", where, src, err)
	}
	if r.partial, err = s.env.Program(ast, cel.EvalOptions(cel.OptPartialEval)); err != nil {
		return nil, fmt.Errorf("rules: %s: read rule %q: %w", where, src, err)
	}
	return r, nil
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " | ")), " ")
}

// IsAdmin reports whether id has the admin role.
func (s *Set) IsAdmin(id *auth.Identity) bool {
	return id != nil && id.Role != "" && id.Role == s.adminRole
}

// Evaluations returns how many times a CEL program ran (for tests and
// benchmarks that check where rules are evaluated).
func (s *Set) Evaluations() uint64 { return s.evals.Load() }

// lookup returns the binding of a collection without creating state for
// unlisted collections (subscribe time: the name comes from a client).
func (s *Set) lookup(coll string) *binding {
	if b, ok := s.bindings[coll]; ok {
		return b
	}
	if v, ok := s.unlisted.Load(coll); ok {
		return v.(*binding)
	}
	return s.unlistedBinding(coll)
}

func (s *Set) unlistedBinding(coll string) *binding {
	return &binding{name: coll, coll: types.String(coll), rule: s.defRule, omit: s.defOmit, eventsOff: s.defOff}
}

// bindingFor returns the binding of an event's collection, keeping the
// binding of unlisted collections (bounded) so per-identity caches stay put.
func (s *Set) bindingFor(coll string) *binding {
	if b, ok := s.bindings[coll]; ok {
		return b
	}
	if v, ok := s.unlisted.Load(coll); ok {
		return v.(*binding)
	}
	b := s.unlistedBinding(coll)
	if s.nUnlisted.Load() >= maxDefaultBindings {
		return b
	}
	b.kept = true
	v, loaded := s.unlisted.LoadOrStore(coll, b)
	if !loaded {
		s.nUnlisted.Add(1)
	}
	return v.(*binding)
}

// CheckSubscribe returns nil when id may subscribe to p, or an error wrapping
// ErrForbidden that says why.
func (s *Set) CheckSubscribe(id *auth.Identity, p broker.Pattern) error {
	if p.All {
		if s.IsAdmin(id) {
			return nil
		}
		return forbidden("subscribing to * needs the admin role")
	}
	b := s.lookup(p.Collection)
	if b.eventsOff {
		return forbidden(fmt.Sprintf("collection %s is never broadcast (events: false)", p.Collection))
	}
	if s.IsAdmin(id) {
		return nil
	}
	r := b.rule
	if r == nil {
		return forbidden(fmt.Sprintf("no read rule allows collection %s (deny by default; only the admin role reads it)", p.Collection))
	}
	if id == nil {
		id = anonymous
	}
	var v verdict
	var err error
	if r.usesAuth && !r.usesEvent {
		// The verdict is fixed for this identity: compute (and cache) it now
		// so delivery never evaluates.
		v, err = s.identityVerdict(id, b)
	} else {
		v, err = s.evalPartial(id, b)
	}
	switch v {
	case allow:
		return nil
	case deny:
		return forbidden(fmt.Sprintf("read rule for %s denies this identity: %s", p.Collection, r.src))
	}
	s.logRuleError(p.Collection, r, err, "subscribe")
	hint := ""
	if id.Anonymous || len(id.Claims) == 0 {
		hint = " (the connection is anonymous: auth is an empty map; send a token)"
	}
	return forbidden(fmt.Sprintf("read rule for %s could not be evaluated for this identity: %v%s", p.Collection, err, hint))
}

func forbidden(msg string) error { return fmt.Errorf("%w: %s", ErrForbidden, msg) }

// anonymous stands for a nil identity.
var anonymous = auth.Anon()

// verdict is a rule's answer.
type verdict uint8

const (
	ruleError verdict = iota // zero value: fail closed
	allow
	deny
)

// outcome is a verdict with its error, cached per identity.
type outcome struct {
	v   verdict
	err error
}

func toVerdict(out ref.Val, err error) (verdict, error) {
	if err != nil {
		return ruleError, err
	}
	switch out {
	case types.True:
		return allow, nil
	case types.False:
		return deny, nil
	}
	if b, ok := out.(types.Bool); ok {
		if b {
			return allow, nil
		}
		return deny, nil
	}
	return ruleError, fmt.Errorf("read rule gave %s, not a bool", out.Type().TypeName())
}

// evalPartial evaluates b's rule for id with record and action unknown.
// A result that depends on them counts as allow (checked per event).
func (s *Set) evalPartial(id *auth.Identity, b *binding) (verdict, error) {
	vars, err := s.env.PartialVars(map[string]any{varAuth: authValue(id), varCollection: b.coll})
	if err != nil {
		return ruleError, err
	}
	s.evals.Add(1)
	out, _, err := b.rule.partial.Eval(vars)
	if err == nil && types.IsUnknown(out) {
		return allow, nil
	}
	return toVerdict(out, err)
}

// evalIdentity evaluates a rule that does not reference the event.
func (s *Set) evalIdentity(id *auth.Identity, b *binding) (verdict, error) {
	a := getActivation()
	a.auth = authValue(id)
	a.coll = b.coll
	s.evals.Add(1)
	out, _, err := b.rule.prog.Eval(a)
	putActivation(a)
	return toVerdict(out, err)
}

// identityVerdict is the verdict of b's rule (which references auth but not
// the event) for id: cached on the identity, except for a throw-away binding
// whose rule depends on the collection name.
func (s *Set) identityVerdict(id *auth.Identity, b *binding) (verdict, error) {
	if b.rule.usesCollection && !b.kept {
		return s.evalIdentity(id, b)
	}
	o := s.identityOutcome(id, b)
	return o.v, o.err
}

// identityOutcome returns the cached verdict of b's rule (which references
// auth but not the event) for id, computing it once per identity.
func (s *Set) identityOutcome(id *auth.Identity, b *binding) *outcome {
	return id.Memo(b.memoKey(), func() any {
		v, err := s.evalIdentity(id, b)
		return &outcome{v: v, err: err}
	}).(*outcome)
}

// authKey is the Identity.Memo key of the claims as CEL values.
var authKey = new(struct{ byte })

// authValue returns id's claims as the CEL `auth` variable: a map whose
// values are already CEL values, built once per identity.
func authValue(id *auth.Identity) map[string]any {
	return id.Memo(authKey, func() any {
		m := make(map[string]any, len(id.Claims)+2)
		for k, v := range id.Claims {
			m[k] = celValue(v)
		}
		// Identities built in code may set Subject/Role without claims.
		if _, ok := m["sub"]; !ok && id.Subject != "" {
			m["sub"] = types.String(id.Subject)
		}
		if _, ok := m["role"]; !ok && id.Role != "" {
			m["role"] = types.String(id.Role)
		}
		return m
	}).(map[string]any)
}

// eventState is the per-event rule state Prepare attaches to Event.Meta.
type eventState struct {
	set *Set
	b   *binding
	// verdict of a rule that does not reference auth (evaluated once).
	verdict verdict
	err     error
	// record and action for per-subscriber evaluation.
	record map[string]any
	action ref.Val
}

// Prepare runs once per event before fan-out (the broker's Prepare hook):
// it drops omitted columns and attaches per-event rule state to ev.Meta.
// It returns false for events that are never broadcast (events: false).
// It must be called before the event is shared with other goroutines.
func (s *Set) Prepare(ev *broker.Event) bool {
	if st, ok := ev.Meta.(*eventState); ok && st.set == s {
		return !st.b.eventsOff
	}
	b := s.bindingFor(ev.Collection)
	if b.eventsOff {
		metrics.EventsDroppedByRules.WithLabelValues("events_false").Inc()
		return false
	}
	st := s.newState(ev, b)
	if len(b.omit) > 0 {
		ev.Record = ev.Record.Without(b.omit)
		ev.OldRecord = ev.OldRecord.Without(b.omit)
		ev.UnchangedColumns = withoutNames(ev.UnchangedColumns, b.omit)
		ev.ColumnTypes = withoutColumnTypes(ev.ColumnTypes, b.omit)
		if ev.Kind == broker.KindCustom {
			ev.Data = withoutKeys(ev.Data, b.omit)
		}
	}
	ev.Meta = st
	return true
}

// newState builds the rule state of ev from its full (not yet trimmed) row:
// the row as a CEL map only for a rule that references record, and no new
// state at all for a rule whose verdict cannot depend on the event or the
// identity (staticState).
func (s *Set) newState(ev *broker.Event, b *binding) *eventState {
	r := b.rule
	if r != nil && !r.usesAuth && !r.usesEvent {
		return s.staticState(b)
	}
	st := &eventState{set: s, b: b}
	if r == nil || (r.usesAuth && !r.usesEvent) {
		return st
	}
	if r.usesRecord {
		st.record = recordValue(ev)
	}
	st.action = actionValue(ev)
	if !r.usesAuth {
		a := getActivation()
		a.record, a.action, a.coll = st.record, st.action, b.coll
		s.evals.Add(1)
		out, _, err := r.prog.Eval(a)
		putActivation(a)
		st.verdict, st.err = toVerdict(out, err)
	}
	return st
}

// actionValues are the CEL `action` of the usual events, made once.
var actionValues = map[string]ref.Val{}

func init() {
	for _, a := range []string{broker.ActionCreate, broker.ActionUpdate, broker.ActionDelete, broker.ActionTruncate, ActionCustom} {
		actionValues[a] = types.String(a)
	}
}

// actionValue is the CEL `action` of ev ("custom" for custom events).
func actionValue(ev *broker.Event) ref.Val {
	action := ev.Action
	if ev.Kind == broker.KindCustom {
		action = ActionCustom
	}
	if v, ok := actionValues[action]; ok {
		return v
	}
	return types.String(action)
}

// staticState is the shared state of b's events when b's rule references
// neither auth nor the event: evaluated on first use and kept on the
// binding (a throw-away binding keeps it for its one event).
func (s *Set) staticState(b *binding) *eventState {
	if st := b.static.Load(); st != nil {
		return st
	}
	a := getActivation()
	a.coll = b.coll
	s.evals.Add(1)
	out, _, err := b.rule.prog.Eval(a)
	putActivation(a)
	st := &eventState{set: s, b: b}
	st.verdict, st.err = toVerdict(out, err)
	if !b.static.CompareAndSwap(nil, st) {
		return b.static.Load()
	}
	return st
}

// Allow reports whether the event may be delivered to id (per subscriber).
// ev must have gone through Prepare; an event that did not is judged
// without caching, or refused when its collection omits columns.
func (s *Set) Allow(id *auth.Identity, ev *broker.Event) bool {
	st, ok := ev.Meta.(*eventState)
	if !ok || st.set != s {
		if st = s.lateState(ev); st == nil {
			return false
		}
	}
	if st.b.eventsOff {
		return false
	}
	if s.IsAdmin(id) {
		return true
	}
	r := st.b.rule
	if r == nil {
		dropRead.Inc()
		return false
	}
	if id == nil {
		id = anonymous
	}
	var v verdict
	var err error
	switch {
	case !r.usesAuth:
		v, err = st.verdict, st.err
	case !r.usesEvent:
		v, err = s.identityVerdict(id, st.b)
	default:
		a := getActivation()
		a.auth, a.record, a.action, a.coll = authValue(id), st.record, st.action, st.b.coll
		s.evals.Add(1)
		out, _, evalErr := r.prog.Eval(a)
		putActivation(a)
		v, err = toVerdict(out, evalErr)
	}
	switch v {
	case allow:
		return true
	case deny:
		dropRead.Inc()
		return false
	}
	metrics.RuleErrors.WithLabelValues(ev.Collection).Inc()
	dropRuleError.Inc()
	s.logRuleError(ev.Collection, r, err, "event")
	return false
}

// lateState builds rule state for an event that skipped Prepare, or returns
// nil (deny) when the event cannot be delivered safely as it is.
func (s *Set) lateState(ev *broker.Event) *eventState {
	b := s.bindingFor(ev.Collection)
	if b.eventsOff || len(b.omit) > 0 {
		s.logf(ev.Collection, "event of %s reached Allow without Prepare; withheld (its collection omits columns or is not broadcast)", ev.Collection)
		return nil
	}
	return s.newState(ev, b)
}

var (
	dropRead      = metrics.EventsDroppedByRules.WithLabelValues("read")
	dropRuleError = metrics.EventsDroppedByRules.WithLabelValues("rule_error")
)

// activation is a CEL activation over the four rule variables, pooled so a
// per-subscriber evaluation builds no map.
type activation struct {
	auth   map[string]any
	record map[string]any
	action ref.Val
	coll   ref.Val
}

var activationPool = sync.Pool{New: func() any { return new(activation) }}

func getActivation() *activation { return activationPool.Get().(*activation) }

func putActivation(a *activation) {
	*a = activation{}
	activationPool.Put(a)
}

// ResolveName implements interpreter.Activation.
func (a *activation) ResolveName(name string) (any, bool) {
	switch name {
	case varAuth:
		if a.auth != nil {
			return a.auth, true
		}
	case varRecord:
		if a.record != nil {
			return a.record, true
		}
	case varAction:
		if a.action != nil {
			return a.action, true
		}
	case varCollection:
		if a.coll != nil {
			return a.coll, true
		}
	}
	return nil, false
}

// Parent implements interpreter.Activation.
func (a *activation) Parent() cel.Activation { return nil }

// limiter lets one log line through per second.
type limiter struct {
	last       atomic.Int64 // unix nanos
	suppressed atomic.Int64
}

func (s *Set) limiterFor(coll string) *limiter {
	if v, ok := s.errLimiter.Load(coll); ok {
		return v.(*limiter)
	}
	v, _ := s.errLimiter.LoadOrStore(coll, new(limiter))
	return v.(*limiter)
}

// allowLog reports whether a line for coll may be logged now, and how many
// were suppressed since the last one.
func (s *Set) allowLog(coll string) (bool, int64) {
	l := s.limiterFor(coll)
	now := time.Now().UnixNano()
	last := l.last.Load()
	if now-last < int64(time.Second) || !l.last.CompareAndSwap(last, now) {
		l.suppressed.Add(1)
		return false, 0
	}
	return true, l.suppressed.Swap(0)
}

func (s *Set) logRuleError(coll string, r *rule, err error, when string) {
	ok, suppressed := s.allowLog(coll)
	if !ok {
		return
	}
	s.Log.Warn().Str("component", "rules").Str("collection", coll).Str("rule", r.src).
		Str("at", when).Int64("suppressed", suppressed).AnErr("error", err).
		Msg("read rule failed; delivery withheld")
}

func (s *Set) logf(coll, format string, args ...any) {
	ok, suppressed := s.allowLog(coll)
	if !ok {
		return
	}
	s.Log.Error().Str("component", "rules").Str("collection", coll).Int64("suppressed", suppressed).Msgf(format, args...)
}

// recordValue is the CEL `record` of an event: the full row (or the custom
// event's data object) with values converted to CEL values.
func recordValue(ev *broker.Event) map[string]any {
	if ev.Kind == broker.KindCustom {
		return dataValue(ev.Data)
	}
	row := ev.Record
	if row == nil && ev.Action == broker.ActionDelete {
		row = ev.OldRecord
	}
	m := make(map[string]any, len(row))
	for i := range row {
		m[row[i].Name] = celValue(row[i].Value)
	}
	return m
}

func dataValue(data json.RawMessage) map[string]any {
	m := map[string]any{}
	if len(bytes.TrimSpace(data)) == 0 {
		return m
	}
	var obj map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&obj); err != nil || obj == nil {
		return m
	}
	for k, v := range obj {
		m[k] = celValue(v)
	}
	return m
}

// celValue converts a column or claim value to a CEL value.
func celValue(v any) ref.Val {
	switch x := v.(type) {
	case nil:
		return types.NullValue
	case ref.Val:
		return x
	case bool:
		return types.Bool(x)
	case string:
		return types.String(x)
	case int64:
		return types.Int(x)
	case int:
		return types.Int(x)
	case int32:
		return types.Int(x)
	case float64:
		return types.Double(x)
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return types.Int(i)
		}
		if f, err := x.Float64(); err == nil {
			return types.Double(f)
		}
		return types.String(string(x))
	case json.RawMessage:
		var decoded any
		dec := json.NewDecoder(bytes.NewReader(x))
		dec.UseNumber()
		if err := dec.Decode(&decoded); err != nil {
			return types.String(string(x))
		}
		return celValue(decoded)
	case []any:
		l := make([]ref.Val, len(x))
		for i := range x {
			l[i] = celValue(x[i])
		}
		return types.NewRefValList(types.DefaultTypeAdapter, l)
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = celValue(e)
		}
		return types.NewStringInterfaceMap(types.DefaultTypeAdapter, m)
	case time.Time:
		return types.String(x.UTC().Format(time.RFC3339Nano))
	}
	// Anything else: its JSON form, as clients see it.
	b, err := json.Marshal(v)
	if err != nil {
		return types.NullValue
	}
	return celValue(json.RawMessage(b))
}

func withoutNames(names []string, omit map[string]struct{}) []string {
	n := 0
	for _, c := range names {
		if _, drop := omit[c]; drop {
			n++
		}
	}
	if n == 0 {
		return names
	}
	out := make([]string, 0, len(names)-n)
	for _, c := range names {
		if _, drop := omit[c]; !drop {
			out = append(out, c)
		}
	}
	return out
}

// withoutKeys removes omitted keys from a custom event's data object.
func withoutKeys(data json.RawMessage, omit map[string]struct{}) json.RawMessage {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil || obj == nil {
		return data
	}
	n := len(obj)
	for k := range omit {
		delete(obj, k)
	}
	if len(obj) == n {
		return data
	}
	out, err := json.Marshal(obj)
	if err != nil {
		return data
	}
	return out
}
