// Package rules decides, per collection, what each identity may see: CEL
// read rules, omitted columns, and collections never broadcast.
package rules

import (
	"errors"

	"github.com/pgrealtime/pgrealtime/broker"
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
}

// Set is the compiled rules. Safe for concurrent use.
type Set struct {
	adminRole string
}

// Compile compiles every rule; an error names the collection and the CEL
// problem. A nil cfg means deny by default (only the admin role reads).
func Compile(cfg *Config, adminRole string) (*Set, error) {
	return &Set{adminRole: adminRole}, nil
}

// IsAdmin reports whether id has the admin role.
func (s *Set) IsAdmin(id *auth.Identity) bool {
	return id != nil && id.Role != "" && id.Role == s.adminRole
}

// CheckSubscribe returns nil when id may subscribe to p, or an error wrapping
// ErrForbidden that says why.
func (s *Set) CheckSubscribe(id *auth.Identity, p broker.Pattern) error {
	if s.IsAdmin(id) {
		return nil
	}
	return ErrForbidden // filled in by the identity work (issue 4)
}

// Prepare runs once per event before fan-out (the broker's Prepare hook):
// it drops omitted columns and attaches per-event rule state to ev.Meta.
// It returns false for events that are never broadcast (events: false).
func (s *Set) Prepare(ev *broker.Event) bool { return true }

// Allow reports whether the event may be delivered to id (per subscriber).
func (s *Set) Allow(id *auth.Identity, ev *broker.Event) bool { return s.IsAdmin(id) }
