// Package webhook is the admission front-end of the policy engine: it decodes
// AdmissionRequests, evaluates the engine in force and turns its results into
// AdmissionResponses (patches, denials, warnings, audit annotations) and
// metrics. It holds no rule logic.
package webhook

import (
	"maps"
	"slices"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	causes           []metav1.StatusCause // the denials' fields
	warnings         []string
	auditAnnotations map[string]string
}

// decide turns verdicts into a decision and counts each policy's action.
func decide(verdicts []policy.Verdict, rec *metrics.Recorder) decision {
	var d decision
	for _, r := range verdicts {
		switch r.Action {
		case policy.ActionAllow:
		case policy.ActionMutate:
			if r.Findings[0].Template {
				d.warnings = append(d.warnings, r.Messages("", maxMessagesPerPolicy)...)
			} else if advisory := r.Advisories(); len(advisory.Findings) > 0 {
				// The changes are made; what only a ConfigMap can fix is said.
				d.warnings = append(d.warnings, advisory.Messages("", maxMessagesPerPolicy)...)
			}
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
		case policy.ActionDeny:
			d.denials = append(d.denials, r.Messages("", maxMessagesPerPolicy)...)
			d.causes = append(d.causes, r.Causes(maxMessagesPerPolicy)...)
		case policy.ActionExempt:
			// Neither denied nor changed: the warning gives the reason, the
			// audit log what the exemption let through.
			d.warnings = append(d.warnings, r.Exempted())
			d.auditAnnotation(r.Policy, r.ExemptedSummary(policy.Would, maxMessagesPerPolicy, policy.MaxNoteBytes))
		default:
			msgs := r.Messages(policy.Would, maxMessagesPerPolicy)
			d.warnings = append(d.warnings, msgs...)
			d.auditAnnotation(r.Policy, strings.Join(msgs, "; "))
		}
		rec.Decision(r.Policy, r.Action)
	}
	return d
}

// auditAnnotation sets the policy's audit annotation. The API server
// records it as "<webhook name>/<policy id>"; every webhook's name ends in
// ".endpoint-policy.io".
func (d *decision) auditAnnotation(id policy.ID, value string) {
	if d.auditAnnotations == nil {
		d.auditAnnotations = map[string]string{}
	}
	d.auditAnnotations[string(id)] = value
}

// annotationsAt says what the object has of metadata.annotations, which
// decides the shape of the annotation patch.
type annotationsAt int

const (
	// noAnnotations: metadata exists without annotations; add the map.
	noAnnotations annotationsAt = iota
	// annotationsMap: metadata.annotations exists; one operation per key.
	annotationsMap
	// noMetadata: an object without metadata (the API server never sends
	// one, fuzzing did); add metadata holding the map.
	noMetadata
)

// response renders d; at is where the object's annotations are.
func (d decision) response(at annotationsAt) admission.Response {
	if len(d.denials) > 0 {
		resp := admission.Denied(strings.Join(d.denials, "; "))
		// The message keeps every field in its text; the causes give them
		// to clients one by one, as the API server's own validation does.
		resp.Result.Details = &metav1.StatusDetails{Causes: d.causes}
		resp.Warnings = d.warnings
		resp.AuditAnnotations = d.auditAnnotations
		return resp
	}
	patch := d.patch
	if len(d.annotations) > 0 || len(d.removals) > 0 {
		patch = append(patch, annotationPatch(d.annotations, d.removals, at)...)
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
func annotationPatch(annotations map[string]string, removals []string, at annotationsAt) []jsonpatch.Operation {
	switch {
	case at != annotationsMap && len(annotations) == 0:
		return nil
	case at == noAnnotations:
		return []jsonpatch.Operation{{Operation: "add", Path: "/metadata/annotations", Value: annotations}}
	case at == noMetadata:
		return []jsonpatch.Operation{{Operation: "add", Path: "/metadata", Value: map[string]any{"annotations": annotations}}}
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
