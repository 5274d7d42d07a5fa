// Package webhook is the admission front-end of the policy engine: it decodes
// AdmissionRequests, evaluates the engine in force and turns its results into
// AdmissionResponses (patches, denials, warnings, audit annotations) and
// metrics. It holds no rule logic.
package webhook

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/endpoint-policy/endpoint-policy/internal/metrics"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

const (
	// maxMessagesPerPolicy bounds the warnings (and the audit annotation) one
	// policy adds to a response; a pod with 1,000 containers must not produce
	// 1,000 warnings.
	maxMessagesPerPolicy = 10
)

// decision is what the engine's results mean for one admission request.
type decision struct {
	patch            []jsonpatch.Operation
	annotations      map[string]string
	removals         []string // annotation keys to remove
	denials          []string
	warnings         []string
	auditAnnotations map[string]string
}

// decide turns results into a decision and counts each policy's action.
// canDeny is false for objects that must never be denied (mirror pods); their
// Enforce violations become warnings.
func decide(results []policy.Result, canDeny bool, rec *metrics.Recorder) decision {
	var d decision
	for _, r := range results {
		if len(r.Findings) == 0 {
			rec.Decision(r.Policy, metrics.ActionAllow)
			continue
		}
		mutates := r.Findings[0].Mutates()
		switch {
		case r.Mode == policy.Enforce && mutates:
			for _, f := range r.Findings {
				d.patch = append(d.patch, f.Patch...)
				for k, v := range f.Annotations {
					if d.annotations == nil {
						d.annotations = map[string]string{}
					}
					d.annotations[k] = v
				}
				d.removals = append(d.removals, f.RemoveAnnotations...)
			}
			rec.Decision(r.Policy, metrics.ActionMutate)
		case r.Mode == policy.Enforce && canDeny:
			d.denials = append(d.denials, messages(r, "")...)
			rec.Decision(r.Policy, metrics.ActionDeny)
		default:
			verb := ""
			if mutates {
				verb = "would "
			}
			msgs := messages(r, verb)
			d.warnings = append(d.warnings, msgs...)
			if d.auditAnnotations == nil {
				d.auditAnnotations = map[string]string{}
			}
			// The API server records this as "<webhook name>/<policy id>".
			d.auditAnnotations[string(r.Policy)] = strings.Join(msgs, "; ")
			rec.Decision(r.Policy, metrics.ActionWarn)
		}
	}
	return d
}

// messages renders a result's findings as "[<policy-id>] <verb><message>"
// for changes and "[<policy-id>] <field>: <message>" for violations, at most
// maxMessagesPerPolicy of them.
func messages(r policy.Result, verb string) []string {
	n := min(len(r.Findings), maxMessagesPerPolicy)
	out := make([]string, 0, n+1)
	for _, f := range r.Findings[:n] {
		text := f.Message
		if !f.Mutates() {
			text = f.String()
		}
		out = append(out, fmt.Sprintf("[%s] %s%s", r.Policy, verb, text))
	}
	if rest := len(r.Findings) - n; rest > 0 {
		out = append(out, fmt.Sprintf("[%s] ... and %d more", r.Policy, rest))
	}
	return out
}

// response renders d. hasAnnotations says whether the object already has a
// metadata.annotations map, which decides the shape of the annotation patch.
func (d decision) response(hasAnnotations bool) admission.Response {
	if len(d.denials) > 0 {
		resp := admission.Denied(strings.Join(d.denials, "; "))
		resp.Warnings = d.warnings
		resp.AuditAnnotations = d.auditAnnotations
		return resp
	}
	patch := d.patch
	if len(d.annotations) > 0 || len(d.removals) > 0 {
		patch = append(patch, annotationPatch(d.annotations, d.removals, hasAnnotations)...)
	}
	var resp admission.Response
	if len(patch) > 0 {
		resp = admission.Patched("", patch...)
	} else {
		resp = admission.Allowed("")
	}
	resp.Warnings = d.warnings
	resp.AuditAnnotations = d.auditAnnotations
	return resp
}

// annotationPatch sets annotations in one operation when the object has no
// annotations map, else one operation per key ("add" replaces an existing
// key), in a stable order. removals are keys the object has (rules only
// remove what is there); an object without annotations has none to remove.
func annotationPatch(annotations map[string]string, removals []string, hasAnnotations bool) []jsonpatch.Operation {
	if !hasAnnotations {
		if len(annotations) == 0 {
			return nil
		}
		return []jsonpatch.Operation{{Operation: "add", Path: "/metadata/annotations", Value: annotations}}
	}
	ops := make([]jsonpatch.Operation, 0, len(annotations)+len(removals))
	for _, k := range slices.Sorted(maps.Keys(annotations)) {
		ops = append(ops, jsonpatch.Operation{
			Operation: "add",
			Path:      "/metadata/annotations/" + policy.EscapePointer(k),
			Value:     annotations[k],
		})
	}
	for _, k := range slices.Compact(slices.Sorted(slices.Values(removals))) {
		if _, set := annotations[k]; set {
			continue
		}
		ops = append(ops, jsonpatch.Operation{Operation: "remove", Path: "/metadata/annotations/" + policy.EscapePointer(k)})
	}
	return ops
}
