package policy

import (
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/endpoint-policy/endpoint-policy/internal/kinds"
)

// AllPolicies in an exemption's Policies covers every policy.
const AllPolicies ID = "*"

// Exemption lets one or more policies' findings on the objects it matches
// stand without consequence, for a reason and until an expiry: admission
// neither denies nor changes them (it warns), the audit reports them as
// skipped, check prints them as exempt. The engine applies it after a
// rule's findings (Engine.Exempting), so that every front-end agrees.
// Exemptions live in the server's configuration: whoever may edit it may
// exempt, not the author of the object.
type Exemption struct {
	// Name identifies it in warnings, reports and metrics: its name in the
	// configuration, or "exemptions[<index>]".
	Name string
	// Policies it covers; AllPolicies for every one.
	Policies []ID
	// Namespace, Kinds, Names and Selector narrow the objects it matches;
	// each left empty matches any. Kinds and Names match the object or,
	// for a pod, the workload that controls it (Identities): a DaemonSet's
	// exemption covers its pods.
	Namespace string
	Kinds     []string
	Names     []string
	// Selector matches the object's own labels; nil matches any.
	Selector labels.Selector
	// Reason says why, for whoever reads a warning or a report.
	Reason string
	// Expires is when it stops applying; zero: never.
	Expires time.Time
}

// Live reports whether x applies at now: it has no expiry, or now is before
// it.
func (x *Exemption) Live(now time.Time) bool {
	return x.Expires.IsZero() || now.Before(x.Expires)
}

// Covers reports whether x covers the policy id.
func (x *Exemption) Covers(id ID) bool {
	return slices.Contains(x.Policies, id) || slices.Contains(x.Policies, AllPolicies)
}

// Matches reports whether x exempts obj from the policy id at now.
func (x *Exemption) Matches(id ID, obj client.Object, now time.Time) bool {
	if !x.Covers(id) || !x.Live(now) {
		return false
	}
	if x.Namespace != "" && obj.GetNamespace() != x.Namespace {
		return false
	}
	if x.Selector != nil && !x.Selector.Matches(labels.Set(obj.GetLabels())) {
		return false
	}
	if len(x.Kinds) == 0 && len(x.Names) == 0 {
		return true
	}
	for _, o := range Identities(obj) {
		if (len(x.Kinds) == 0 || slices.Contains(x.Kinds, o.Kind)) && (len(x.Names) == 0 || slices.Contains(x.Names, o.Name)) {
			return true
		}
	}
	return false
}

// Text is what the front-ends say about a result x exempts: "exempted:
// <reason> (until <expires>)".
func (x *Exemption) Text() string {
	if x.Expires.IsZero() {
		return "exempted: " + x.Reason
	}
	return fmt.Sprintf("exempted: %s (until %s)", x.Reason, x.Expires.UTC().Format(time.RFC3339))
}

// Identity is a kind and a name an object answers to in an exemption.
type Identity struct{ Kind, Name string }

// Identities returns what obj answers to: its own kind and name, and the
// workload that controls it: its controller when that is a workload
// (DaemonSet, StatefulSet, ReplicaSet, Job), and the Deployment of a
// ReplicaSet the Deployment controller named "<deployment>-<pod template
// hash>" (the pod's pod-template-hash label says so). A pod is admitted
// before the API server gives it a generated name, so its workload is how
// an exemption finds it. A CronJob's pods answer to their Job: a Job's name
// does not tell its CronJob for sure.
func Identities(obj client.Object) []Identity {
	var out []Identity
	if k, ok := kinds.Of(obj); ok && obj.GetName() != "" {
		out = append(out, Identity{k.GVK.Kind, obj.GetName()})
	}
	ref := metav1.GetControllerOf(obj)
	if ref == nil {
		return out
	}
	group, _, _ := strings.Cut(ref.APIVersion, "/")
	switch {
	case group == appsv1.GroupName && (ref.Kind == "DaemonSet" || ref.Kind == "StatefulSet"),
		group == batchv1.GroupName && ref.Kind == "Job":
		out = append(out, Identity{ref.Kind, ref.Name})
	case group == appsv1.GroupName && ref.Kind == "ReplicaSet":
		out = append(out, Identity{ref.Kind, ref.Name})
		hash := obj.GetLabels()[appsv1.DefaultDeploymentUniqueLabelKey]
		if deployment, ok := strings.CutSuffix(ref.Name, "-"+hash); ok && hash != "" && deployment != "" {
			out = append(out, Identity{"Deployment", deployment})
		}
	}
	return out
}

// Exempting returns a copy of e that applies exemptions to the findings of
// its rules, each at the time now gives when it evaluates: an exemption
// stops applying at its expiry without a new engine. The first exemption
// that matches a result is the one it reports. now nil is time.Now.
func (e *Engine) Exempting(exemptions []*Exemption, now func() time.Time) *Engine {
	out := *e
	out.exemptions = exemptions
	if now != nil {
		out.now = now
	}
	return &out
}

// Exemptions returns the exemptions e applies.
func (e *Engine) Exemptions() []*Exemption { return e.exemptions }

// NextExpiry returns the earliest expiry after now among e's exemptions, or
// zero when none expires later: when the audit must look again.
func (e *Engine) NextExpiry(now time.Time) time.Time {
	var next time.Time
	for _, x := range e.exemptions {
		if x.Expires.After(now) && (next.IsZero() || x.Expires.Before(next)) {
			next = x.Expires
		}
	}
	return next
}

// exempt sets r.Exemption when r has findings and an exemption matches.
func (e *Engine) exempt(r *Result, obj client.Object) {
	if len(r.Findings) == 0 || len(e.exemptions) == 0 {
		return
	}
	now := e.now()
	for _, x := range e.exemptions {
		if x.Matches(r.Policy, obj, now) {
			r.Exemption = x
			return
		}
	}
}
