package policy

import (
	"fmt"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Settings are a policy's settings besides its mode: what the configuration
// file holds under policies.<id>, next to mode. Implementations are structs
// with JSON tags, used through a pointer.
type Settings interface {
	// Validate returns every problem with the settings, with field paths
	// under fldPath (policies.<id>).
	Validate(fldPath *field.Path) field.ErrorList
}

// RestartSettings are settings of which some are read once at start (to
// build caches, say): changing those takes a restart, and a configuration
// reload that changes them is refused.
type RestartSettings interface {
	Settings
	// RestartRequired returns the fields (paths under fldPath) whose value
	// differs from running's and takes a restart to apply. running holds
	// settings of the same type.
	RestartRequired(running Settings, fldPath *field.Path) field.ErrorList
}

// Descriptor is everything the rest of the program needs to know about a
// policy. Each rule package exports one; the registry lists them, and the
// configuration (defaults, decoding, validation, modes), the engine and the
// docs' policy table derive from that list.
type Descriptor struct {
	// ID is the policy's stable identifier.
	ID ID
	// Effect says whether the rule mutates or validates.
	Effect Effect
	// DefaultMode is the policy's mode when the configuration does not set
	// one.
	DefaultMode Mode
	// Severity is how much a violation matters (the audit's report
	// results; Policy Reporter's minimumSeverity filters on it).
	Severity Severity
	// Category groups the policy with others in report viewers.
	Category string
	// Summary says in one Markdown sentence what the policy finds (the
	// README's policy table).
	Summary string
	// Package is the rule's package directory in the repository
	// ("internal/policy/hostnetwork"), linked from the docs.
	Package string
	// DefaultSettings returns a new value of the policy's settings (a
	// pointer) holding their defaults; nil for a policy with no settings
	// besides its mode.
	DefaultSettings func() Settings
	// New builds the rule from valid settings: a value DefaultSettings
	// returned, after decoding and validation (nil when DefaultSettings is
	// nil).
	New func(Settings) (Rule, error)
}

// Severity is a report result's severity, in the values of the
// wgpolicyk8s.io and openreports.io report APIs.
type Severity string

const (
	SeverityCritical Severity = "critical"
	SeverityHigh     Severity = "high"
	SeverityMedium   Severity = "medium"
	SeverityLow      Severity = "low"
	SeverityInfo     Severity = "info"
)

// Categories of the policies, for report viewers.
const (
	// CategoryAPIEndpoint: how components reach the API server.
	CategoryAPIEndpoint = "API server endpoint"
	// CategoryControlPlane: how the API servers run and advertise themselves.
	CategoryControlPlane = "Control plane"
	// CategoryNodeLifecycle: components on nodes that come and go.
	CategoryNodeLifecycle = "Node lifecycle"
)

// Doc is the path of the policy's doc page in the repository.
func (d Descriptor) Doc() string { return "docs/policies/" + string(d.ID) + ".md" }

// DefaultsOf is a descriptor's DefaultSettings for settings of type T, whose
// defaults defaults returns.
func DefaultsOf[T any, PT interface {
	*T
	Settings
}](defaults func() T) func() Settings {
	return func() Settings {
		s := defaults()
		return PT(&s)
	}
}

// NewWith is a descriptor's New for settings of type T (as DefaultsOf gives
// them): build makes the rule from them. Settings of another type are an
// error naming the policy.
func NewWith[T any, R Rule](id ID, build func(T) (R, error)) func(Settings) (Rule, error) {
	return func(s Settings) (Rule, error) {
		settings, err := SettingsAs[T](id, s)
		if err != nil {
			return nil, err
		}
		r, err := build(*settings)
		if err != nil {
			return nil, err // not a Rule holding a nil R
		}
		return r, nil
	}
}

// SettingsAs returns s as T's pointer, or an error naming the policy when it
// holds another type: a descriptor's New given settings of another policy.
func SettingsAs[T any](id ID, s Settings) (*T, error) {
	t, ok := any(s).(*T)
	if !ok || t == nil {
		var want *T
		return nil, fmt.Errorf("policy %s: settings of type %T, want %T", id, s, want)
	}
	return t, nil
}
