package config

import (
	"fmt"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/endpoint-policy/endpoint-policy/internal/kinds"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/registry"
)

// Exemption lets policies' findings on the objects it matches stand, for a
// reason and until an expiry (policy.Exemption): exemptions[] in the file.
// Hot reloaded; it stops applying at its expiry without a reload.
//
//	exemptions:
//	- policies: [kube-vip-ipvs-backends]     # required; policy IDs, or ["*"]
//	  namespace: kube-system                  # optional
//	  kinds: [DaemonSet]                      # optional
//	  names: [kube-vip]                       # optional
//	  selector: {matchLabels: {tier: control-plane}}   # optional
//	  reason: "upgrade to v0.8.10 in change CHG-4711" # required
//	  expires: "2026-12-20T00:00:00Z"         # optional, RFC 3339
type Exemption struct {
	// Name identifies the exemption in warnings, reports and metrics;
	// optional: "exemptions[<index>]" when left out.
	Name      string                `json:"name,omitempty"`
	Policies  []policy.ID           `json:"policies"`
	Namespace string                `json:"namespace,omitempty"`
	Kinds     []string              `json:"kinds,omitempty"`
	Names     []string              `json:"names,omitempty"`
	Selector  *metav1.LabelSelector `json:"selector,omitempty"`
	Reason    string                `json:"reason"`
	// Expires is an RFC 3339 time, "" for never.
	Expires string `json:"expires,omitempty"`
}

// MaxExemptionReasonBytes bounds an exemption's reason: it goes into every
// warning and report result about what it exempts.
const MaxExemptionReasonBytes = 256

// exemptionKinds are the kinds an exemption may name: those the policies
// evaluate.
var exemptionKinds = kinds.Names(append(append([]kinds.Kind{}, kinds.Workloads...), kinds.ConfigMap, kinds.Node))

// name returns x's name: its own, or where it is in the list.
func (x *Exemption) name(i int) string {
	if x.Name != "" {
		return x.Name
	}
	return fmt.Sprintf("exemptions[%d]", i)
}

// validateExemptions returns every problem with list, with field paths
// ("exemptions[0].reason").
func validateExemptions(fldPath *field.Path, list []Exemption) field.ErrorList {
	var errs field.ErrorList
	names := map[string]bool{}
	for i := range list {
		x, p := &list[i], fldPath.Index(i)
		if name := x.name(i); names[name] {
			errs = append(errs, field.Duplicate(p.Child("name"), name))
		} else {
			names[name] = true
		}
		errs = append(errs, validateExemptionPolicies(p.Child("policies"), x.Policies)...)
		errs = append(errs, validateExemptionScope(p, x)...)
		switch reason := strings.TrimSpace(x.Reason); {
		case reason == "":
			errs = append(errs, field.Required(p.Child("reason"), "say why the exemption is needed (a change, a ticket): every warning and report about what it exempts gives it"))
		case len(reason) > MaxExemptionReasonBytes:
			errs = append(errs, field.TooLong(p.Child("reason"), "", MaxExemptionReasonBytes))
		}
		if x.Expires != "" {
			if _, err := time.Parse(time.RFC3339, x.Expires); err != nil {
				errs = append(errs, field.Invalid(p.Child("expires"), x.Expires, "must be an RFC 3339 time such as 2026-12-20T00:00:00Z"))
			}
		}
	}
	return errs
}

// validateExemptionPolicies checks the policies are known IDs, or "*" alone.
func validateExemptionPolicies(p *field.Path, ids []policy.ID) field.ErrorList {
	if len(ids) == 0 {
		return field.ErrorList{field.Required(p, `list the policy IDs it exempts from, or ["*"] for every policy`)}
	}
	var errs field.ErrorList
	for j, id := range ids {
		switch _, known := registry.Lookup(id); {
		case id == policy.AllPolicies && len(ids) > 1:
			errs = append(errs, field.Invalid(p.Index(j), id, `"*" covers every policy: list it alone`))
		case id == policy.AllPolicies || known:
		default:
			errs = append(errs, field.NotSupported(p.Index(j), id, append(registry.IDs(), policy.AllPolicies)))
		}
	}
	return errs
}

// validateExemptionScope checks what narrows the objects: at least one of
// namespace, kinds, names and selector, each well formed.
func validateExemptionScope(p *field.Path, x *Exemption) field.ErrorList {
	var errs field.ErrorList
	if x.Namespace == "" && len(x.Kinds) == 0 && len(x.Names) == 0 && x.Selector == nil {
		errs = append(errs, field.Required(p, "set namespace, kinds, names or selector: an exemption of every object is the policy turned off (set its mode to Disabled instead)"))
	}
	if x.Namespace != "" {
		for _, msg := range validation.IsDNS1123Label(x.Namespace) {
			errs = append(errs, field.Invalid(p.Child("namespace"), x.Namespace, msg))
		}
	}
	for j, k := range x.Kinds {
		if !slices.Contains(exemptionKinds, k) {
			errs = append(errs, field.NotSupported(p.Child("kinds").Index(j), k, exemptionKinds))
		}
	}
	for j, n := range x.Names {
		if n == "" {
			errs = append(errs, field.Required(p.Child("names").Index(j), "a name"))
		}
	}
	if x.Selector != nil {
		errs = append(errs, metav1validation.ValidateLabelSelector(x.Selector, metav1validation.LabelSelectorValidationOptions{}, p.Child("selector"))...)
	}
	return errs
}

// EngineExemptions returns c's exemptions as the engine applies them; c
// must be valid.
func (c *PolicyConfiguration) EngineExemptions() []*policy.Exemption {
	out := make([]*policy.Exemption, 0, len(c.Exemptions))
	for i := range c.Exemptions {
		x := &c.Exemptions[i]
		pe := &policy.Exemption{
			Name: x.name(i), Policies: slices.Clone(x.Policies), Namespace: x.Namespace,
			Kinds: slices.Clone(x.Kinds), Names: slices.Clone(x.Names), Reason: strings.TrimSpace(x.Reason),
		}
		if x.Selector != nil {
			pe.Selector, _ = metav1.LabelSelectorAsSelector(x.Selector)
		}
		if x.Expires != "" {
			pe.Expires, _ = time.Parse(time.RFC3339, x.Expires)
		}
		out = append(out, pe)
	}
	return out
}
