package policy

import (
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// How every front-end words what it found: written once, here.
const (
	// Would prefixes a change that is reported rather than made (Audit, the
	// background audit, the check CLI): "[host-network-endpoint] would set ...".
	Would = "would "

	// EventReason is the reason of the Events the front-ends record on
	// objects with violations (admitted mirror pods, the background audit).
	EventReason = "PolicyViolation"

	// MaxNoteBytes bounds a message that goes into an Event's note (the
	// events.k8s.io limit) or a report's result.
	MaxNoteBytes = 1024
)

// Verdict is one policy's result for one object and what admission does
// with it: what every front-end reports.
type Verdict struct {
	Result
	Action Action
}

// Verdicts returns each result for obj with its action (Result.Action, with
// MayDeny(obj)), in the results' order.
func Verdicts(obj client.Object, results []Result) []Verdict {
	mayDeny := MayDeny(obj)
	out := make([]Verdict, len(results))
	for i, r := range results {
		out[i] = Verdict{Result: r, Action: r.Action(mayDeny)}
	}
	return out
}

// Advisories returns r with only its Advisory findings.
func (r Result) Advisories() Result {
	out := r
	out.Findings = nil
	for _, f := range r.Findings {
		if f.Advisory {
			out.Findings = append(out.Findings, f)
		}
	}
	return out
}

// Exempted renders an exempted result (r.Exemption set) as admission warns
// about it: "[<policy-id>] exempted: <reason> (until <expires>)".
func (r Result) Exempted() string {
	return fmt.Sprintf("[%s] %s", r.Policy, r.Exemption.Text())
}

// ExemptedSummary renders an exempted result as one message of at most
// maxBytes, for an audit annotation or a report's result: Exempted, then
// what the exemption lets stand, as Summary says it ("[<policy-id>]
// exempted: <reason> (until <expires>); would set ...").
func (r Result) ExemptedSummary(verb string, maxFindings, maxBytes int) string {
	head := r.Exempted() + "; "
	prefix := fmt.Sprintf("[%s] ", r.Policy)
	if len(head) >= maxBytes {
		return Shorten(r.Exempted(), maxBytes)
	}
	return head + strings.TrimPrefix(r.Summary(verb, maxFindings, maxBytes-len(head)+len(prefix)), prefix)
}

// Shorten cuts s to at most n bytes at a word boundary (a UTF-8 boundary
// when one word is longer than half of n), marking the cut with "…": report
// viewers and Events show a sentence that ends, not one cut mid-word.
func Shorten(s string, n int) string {
	const ellipsis = "…"
	if len(s) <= n {
		return s
	}
	if n <= len(ellipsis) {
		return strings.ToValidUTF8(s[:n], "")
	}
	cut := strings.ToValidUTF8(s[:n-len(ellipsis)], "")
	if i := strings.LastIndexAny(cut, " \t\n"); i > len(cut)/2 {
		cut = cut[:i]
	}
	return strings.TrimRight(cut, " \t\n,;:") + ellipsis
}

// Messages renders r's findings as "[<policy-id>] <message>": a change as
// verb + message ("[host-network-endpoint] would set ..." with verb "would "),
// a violation with its field ("[<id>] spec.containers[0]...: ..."). At most
// max are rendered, then "[<id>] ... and N more".
func (r Result) Messages(verb string, max int) []string {
	n := min(len(r.Findings), max)
	out := make([]string, 0, n+1)
	for _, f := range r.Findings[:n] {
		out = append(out, fmt.Sprintf("[%s] %s", r.Policy, f.Text(verb)))
	}
	if rest := len(r.Findings) - n; rest > 0 {
		out = append(out, fmt.Sprintf("[%s] ... and %d more", r.Policy, rest))
	}
	return out
}

// Summary renders r's findings as one message of at most maxBytes, for an
// Event's note or a report's result: "[<policy-id>] " and each finding's
// text (Text) joined with "; ", at most maxFindings of them. Findings that share a
// Detail are said in one sentence, each one's own part joined with ", "
// and the Detail once after them ("...livenessProbe...host: ..., ...
// readinessProbe...host: ...: when that address changes ..."). Over
// maxBytes, each sentence's own parts are cut, never a Detail: the fix is
// what a reader needs most.
func (r Result) Summary(verb string, maxFindings, maxBytes int) string {
	n := min(len(r.Findings), maxFindings)
	var sentences []sentence
	for _, f := range r.Findings[:n] {
		text := f.Text(verb)
		if f.Detail == "" || !strings.HasSuffix(text, ": "+f.Detail) {
			sentences = append(sentences, sentence{parts: []string{text}})
			continue
		}
		part := strings.TrimSuffix(text, ": "+f.Detail)
		if i := slices.IndexFunc(sentences, func(s sentence) bool { return s.detail == f.Detail }); i >= 0 {
			sentences[i].parts = append(sentences[i].parts, part)
			continue
		}
		sentences = append(sentences, sentence{parts: []string{part}, detail: f.Detail})
	}
	prefix, more := fmt.Sprintf("[%s] ", r.Policy), ""
	if rest := len(r.Findings) - n; rest > 0 {
		more = fmt.Sprintf("; ... and %d more", rest)
	}
	render := func(cut int) string {
		out := make([]string, len(sentences))
		for i, s := range sentences {
			out[i] = s.render(cut)
		}
		return prefix + strings.Join(out, "; ") + more
	}
	if all := render(-1); len(all) <= maxBytes {
		return all
	}
	// Each sentence's own parts get an equal share of what the fixed text
	// (prefix, separators, Details) leaves.
	fixed := len(prefix) + len(more) + len("; ")*(len(sentences)-1)
	for _, s := range sentences {
		if s.detail != "" {
			fixed += len(": ") + len(s.detail)
		}
	}
	return Shorten(render(max(0, maxBytes-fixed)/max(1, len(sentences))), maxBytes)
}

// sentence is findings said together: their own parts, and the Detail they
// share ("" for a finding said alone).
type sentence struct {
	parts  []string
	detail string
}

// render joins the parts, cut to at most cut bytes (cut < 0: whole), and
// the Detail after them.
func (s sentence) render(cut int) string {
	parts := strings.Join(s.parts, ", ")
	if cut >= 0 {
		parts = Shorten(parts, cut)
	}
	if s.detail == "" {
		return parts
	}
	return parts + ": " + s.detail
}

// Text renders f without the policy prefix: a change as verb + message, a
// violation as "<field>: <message>".
func (f Finding) Text(verb string) string {
	switch {
	case f.Template:
		return f.Message // it says what happens to the pods, later
	case f.Mutates():
		return verb + f.Message
	}
	return f.String()
}

// Causes renders r's findings as the causes of a denial
// (status.details.causes, as apierrors.NewInvalid fills them): each finding's
// field, its message with the policy prefix, and reason FieldValueForbidden.
// At most max are rendered.
func (r Result) Causes(max int) []metav1.StatusCause {
	n := min(len(r.Findings), max)
	out := make([]metav1.StatusCause, 0, n)
	for _, f := range r.Findings[:n] {
		c := metav1.StatusCause{Type: metav1.CauseType(field.ErrorTypeForbidden), Message: fmt.Sprintf("[%s] %s", r.Policy, f.Message)}
		if f.Field != nil {
			c.Field = f.Field.String()
		}
		out = append(out, c)
	}
	return out
}
