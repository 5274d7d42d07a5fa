// Package policy is the policy engine shared by every front-end: admission
// (the webhook server), the background audit and the offline check CLI.
//
// A Rule is written once. It looks at one typed object (plus whatever the
// front-end knows about the object's surroundings) and returns Findings. A
// Finding is either a violation (a message and a field) or, for mutating
// rules, a violation together with the JSON patch that fixes it. What happens
// to a Finding is decided by the rule's effective Mode and by the front-end:
// admission mutates or denies in Enforce and warns in Audit, the audit reports,
// the CLI prints. No front-end contains rule logic.
package policy

import (
	"fmt"
	"time"

	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ID is a policy's stable identifier. IDs appear in the configuration file,
// in every admission message (as "[<id>] "), in metrics and in reports; they
// never change once released.
type ID string

// Mode says what a front-end does with a rule's findings.
type Mode string

const (
	// Enforce mutates (mutating rules) or denies (validating rules).
	Enforce Mode = "Enforce"
	// Audit never mutates or denies: it warns, annotates the audit log and
	// counts.
	Audit Mode = "Audit"
	// Disabled does not evaluate the rule at all.
	Disabled Mode = "Disabled"
)

// Valid reports whether m is one of the known modes.
func (m Mode) Valid() bool {
	switch m {
	case Enforce, Audit, Disabled:
		return true
	}
	return false
}

// Target is what a rule evaluates: one decoded object and what the front-end
// knows about its surroundings.
type Target struct {
	// Object is the typed object (*corev1.Pod, ...). Rules type-assert it and
	// return no findings for kinds they do not handle.
	Object client.Object

	// NamespaceLabels are the labels of Object's namespace, or nil when the
	// front-end does not know them (admission leaves namespace exclusion to
	// the webhook's namespaceSelector).
	NamespaceLabels map[string]string

	// Cluster is what the front-end knows about the rest of the cluster, or
	// nil when it knows nothing. Rules that need it give no verdict without
	// it.
	Cluster Cluster
}

// Cluster is a read-only view of cluster state that some rules need beyond
// the object itself. Front-ends back it with what they have: admission with
// the manager's informer cache (never a live API call, never a wait), the
// CLI with the files it was given. Implementations must answer from memory,
// and say "unknown" rather than guess.
type Cluster interface {
	// Node returns the named node; ok is false when the node is not known
	// (not in the cache, or the cache has not synced yet). The node is
	// shared: callers must not modify it.
	Node(name string) (node *corev1.Node, ok bool)
	// APIServerPods returns the kube-apiserver pods known to the front-end;
	// ok is false when it cannot tell (the cache has not synced yet). The
	// pods are shared: callers must not modify them.
	APIServerPods() (pods []*corev1.Pod, ok bool)
}

// Finding is one thing a rule found wrong with an object.
type Finding struct {
	// Field points at the offending part of the object.
	Field *field.Path
	// Rule names the check within the policy that found it (which probe,
	// which advisory): the rule of the audit's report results.
	Rule string
	// Message is a complete sentence for a human, without the "[<id>] " prefix,
	// written as the change or the problem ("set KUBERNETES_SERVICE_HOST=..."
	// for a mutation, the problem and its fix for a violation).
	Message string
	// Patch, for mutating rules, holds the JSON patch operations (RFC 6902,
	// paths from the object root) that fix the finding. Operations never touch
	// metadata.annotations: use Annotations, so that the front-end can merge
	// annotations from several rules into one correct patch.
	Patch []jsonpatch.Operation
	// Annotations, for mutating rules, are set on the object alongside Patch.
	Annotations map[string]string
	// RemoveAnnotations, for mutating rules, are annotation keys the object
	// has and must no longer have (a rule undoing what it did earlier).
	RemoveAnnotations []string
	// Unverified, for mutating rules, marks a change the rule holds back
	// because it could not prove the change safe (host-network-endpoint's
	// endpoint is not verified on the pod's nodes): the object is admitted
	// unchanged, with Message as the warning. Such a finding has no Patch
	// and its action is ActionUnverified.
	Unverified bool
	// Template, for mutating rules, marks a change to the pods a workload's
	// template creates, not to the workload: reported (check, the audit, a
	// warning at admission) with the action of the change, never applied.
	// Such a finding has no Patch.
	Template bool
	// Advisory, for mutating rules, marks a finding reported and never
	// applied nor denied, in either mode (host-network-endpoint's endpoint
	// that comes from a ConfigMap: the fix is in the ConfigMap, not the
	// pod): its action is ActionWarn. Such a finding has no Patch. In a
	// result with changes, advisory findings come after them.
	Advisory bool
	// Detail, when set, is the end of Message that findings of one kind
	// share: why it matters and how to fix it ("when that address changes
	// ... Set the probe's host to ..."). Message ends with ": " + Detail.
	// Result.Summary says it once for all the findings that share it.
	Detail string
}

// Mutates reports whether applying the finding changes the object.
func (f Finding) Mutates() bool {
	return len(f.Patch) > 0 || len(f.Annotations) > 0 || len(f.RemoveAnnotations) > 0
}

// String renders the finding for logs and tests.
func (f Finding) String() string {
	if f.Field == nil {
		return f.Message
	}
	return fmt.Sprintf("%s: %s", f.Field, f.Message)
}

// Effect says what a rule's findings are for.
type Effect int

const (
	// Validating rules report violations: denied in Enforce, warned in Audit.
	Validating Effect = iota
	// Mutating rules report changes (every finding has a Patch, Annotations
	// or RemoveAnnotations, or is Unverified): applied in Enforce, warned in
	// Audit.
	Mutating
)

// String returns "validating" or "mutating".
func (e Effect) String() string {
	if e == Mutating {
		return "mutating"
	}
	return "validating"
}

// Rule is one policy's logic. Implementations are pure: no API calls, no
// globals, no clock but one given at construction; everything a rule needs is
// given at construction (its settings) or in the Target (which may include a
// read-only Cluster view). A rule is either mutating (every finding mutates,
// see Finding.Mutates, or is Unverified, or is about a Template) or
// validating (none does).
type Rule interface {
	// ID is the policy's stable identifier.
	ID() ID
	// Effect says whether the rule is mutating or validating.
	Effect() Effect
	// Evaluate returns the findings for t (none when t complies) and whether
	// the rule applies to t at all: false for kinds it does not handle and for
	// objects it deliberately skips (excluded, mirror pods, ...).
	Evaluate(t Target) (findings []Finding, applies bool)
}

// Result is the outcome of one rule, in its effective mode, for one object.
type Result struct {
	Policy   ID
	Mode     Mode
	Findings []Finding
	// Exemption, when set, exempts the findings (Engine.Exempting): the
	// result's action is ActionExempt.
	Exemption *Exemption
}

// Engine evaluates a fixed set of rules, each in its effective mode. An Engine
// is immutable and safe for concurrent use; a configuration change builds a
// new one (see Store).
type Engine struct {
	rules      []modedRule
	exemptions []*Exemption
	now        func() time.Time
}

type modedRule struct {
	Rule
	mode Mode
}

// NewEngine returns an engine running each rule in modes[rule.ID()]. A rule
// with no mode, or a mode that is not valid, is an error: the caller (the
// configuration) must have decided.
func NewEngine(rules []Rule, modes map[ID]Mode) (*Engine, error) {
	e := &Engine{now: time.Now}
	seen := map[ID]bool{}
	for _, r := range rules {
		id := r.ID()
		if seen[id] {
			return nil, fmt.Errorf("policy %q registered twice", id)
		}
		seen[id] = true
		mode, ok := modes[id]
		if !ok || !mode.Valid() {
			return nil, fmt.Errorf("policy %q has no valid mode (got %q)", id, mode)
		}
		if mode == Disabled {
			continue
		}
		e.rules = append(e.rules, modedRule{Rule: r, mode: mode})
	}
	return e, nil
}

// Evaluate runs every enabled rule against t. Every enabled rule that applies
// to t has a Result, with no findings when t complies, so that front-ends can
// count "allow". An excluded object (ExcludeLabel on it or on its namespace)
// has none: no rule applies to it.
func (e *Engine) Evaluate(t Target) []Result {
	return e.evaluate(t, func(Effect) bool { return true })
}

// EvaluateEffect is Evaluate restricted to the rules of effect ef: the
// mutating webhook runs the mutating rules, the validating webhook the
// validating ones.
func (e *Engine) EvaluateEffect(t Target, ef Effect) []Result {
	return e.evaluate(t, func(re Effect) bool { return re == ef })
}

// EvaluatePolicy runs the one policy id against t, for front-ends that serve
// a single policy (the kube-proxy controller). ok is false when the engine
// does not run the policy (Disabled) or the policy does not apply to t.
func (e *Engine) EvaluatePolicy(t Target, id ID) (result Result, ok bool) {
	if t.Object == nil || Excluded(t.Object, t.NamespaceLabels) {
		return Result{}, false
	}
	for _, r := range e.rules {
		if r.ID() != id {
			continue
		}
		findings, applies := r.Evaluate(t)
		if !applies {
			return Result{}, false
		}
		res := Result{Policy: id, Mode: r.mode, Findings: findings}
		e.exempt(&res, t.Object)
		return res, true
	}
	return Result{}, false
}

func (e *Engine) evaluate(t Target, include func(Effect) bool) []Result {
	if t.Object == nil || Excluded(t.Object, t.NamespaceLabels) {
		return nil
	}
	var results []Result
	for _, r := range e.rules {
		if !include(r.Effect()) {
			continue
		}
		findings, applies := r.Evaluate(t)
		if !applies {
			continue
		}
		res := Result{Policy: r.ID(), Mode: r.mode, Findings: findings}
		e.exempt(&res, t.Object)
		results = append(results, res)
	}
	return results
}

// SkipsNamespace reports whether the engine has no result for any object in
// a namespace with these labels: one that carries ExcludeLabel=true. A
// front-end that watches many objects can drop theirs before decoding them
// (the audit's pod feed).
func (e *Engine) SkipsNamespace(namespaceLabels map[string]string) bool {
	return namespaceLabels[ExcludeLabel] == "true"
}

// Mode returns the effective mode of the policy id, Disabled when the engine
// does not run it.
func (e *Engine) Mode(id ID) Mode {
	for _, r := range e.rules {
		if r.ID() == id {
			return r.mode
		}
	}
	return Disabled
}

// Action is what a front-end does, or would do, with one policy's result for
// one object. Admission does it; the background audit and the check CLI
// report it, so that the three front-ends give the same verdict.
type Action string

const (
	// ActionAllow: no findings.
	ActionAllow Action = "allow"
	// ActionMutate: a mutating rule in Enforce changes the object.
	ActionMutate Action = "mutate"
	// ActionDeny: a validating rule in Enforce rejects the object.
	ActionDeny Action = "deny"
	// ActionWarn: findings in Audit, or in Enforce on an object that must
	// not be denied (see MayDeny), are reported and nothing else happens.
	ActionWarn Action = "warn"
	// ActionUnverified: a mutating rule held its change back because it
	// could not prove it safe (Finding.Unverified), in either mode: the
	// object is admitted unchanged with a warning.
	ActionUnverified Action = "unverified"
	// ActionExempt: an exemption covers the findings (Result.Exemption), in
	// either mode: admitted unchanged with a warning that gives its reason,
	// a skip in the audit's reports.
	ActionExempt Action = "exempt"
)

// Action returns what admission does with r. mayDeny is false for objects
// that must never be denied (MayDeny): their Enforce violations are warnings.
func (r Result) Action(mayDeny bool) Action {
	switch {
	case len(r.Findings) == 0:
		return ActionAllow
	case r.Exemption != nil:
		return ActionExempt
	case r.Findings[0].Unverified:
		return ActionUnverified
	case r.Mode == Enforce && (r.Findings[0].Mutates() || r.Findings[0].Template):
		return ActionMutate
	case r.Findings[0].Advisory:
		return ActionWarn
	case r.Mode == Enforce && mayDeny && !r.Findings[0].Mutates():
		return ActionDeny
	}
	return ActionWarn
}
