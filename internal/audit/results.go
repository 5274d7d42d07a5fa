package audit

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/registry"
)

// result is one result of a report: one object's verdict of one policy, or,
// in a capped report, several objects' verdicts of one policy counted as
// one.
type result struct {
	policy   policy.ID
	rule     string
	outcome  string // fail, warn or skip (resultOf)
	action   policy.Action
	mode     policy.Mode
	severity policy.Severity
	category string
	message  string
	since    time.Time
	// ref is the object; for an aggregate, the workload whose pods it
	// counts, or none (a zero ref) for the objects over the cap.
	ref   objectRef
	count int // objects the result stands for
	// names are the objects an aggregate stands for ("Kind/name"), for its
	// properties: they change with the cluster, its message does not.
	names []string
	// template: about a workload's pod template (violation.Template).
	template bool
	// exemption skips it (violation.Exemption).
	exemption *policy.Exemption
}

// priorKey identifies a result across restarts: the object, the policy,
// the outcome and the message.
type priorKey struct {
	uid     string
	policy  policy.ID
	outcome string
	message string
}

// priorTimes are the first-seen times of the results in the reports found
// at start (an earlier leader's, or this process' before a restart).
type priorTimes map[priorKey]time.Time

// since is when r was first seen: the earlier of the audit's own time and
// the report's before the restart.
func (p priorTimes) since(r result) time.Time {
	if t, ok := p[priorKey{string(r.ref.UID), r.policy, r.outcome, r.message}]; ok && t.Before(r.since) {
		return t
	}
	return r.since
}

// reportResults returns a report's results, failures first, then by policy,
// kind and name. All of them when they fit in limit. Otherwise pods are
// counted by the workload that controls them (one result per workload,
// policy and outcome, naming how many pods), and if that is still more than
// limit, the last results of each (policy, outcome) pair are counted in one.
// A cap never hides a (policy, outcome) pair, so a viewer's policy list and
// counts stay whole: with more pairs than limit, each still gets one result.
func reportResults(entries []entry, limit int, prior priorTimes) []result {
	var rows []result
	for _, e := range entries {
		for _, v := range e.violations {
			d, _ := registry.Lookup(v.Policy)
			r := result{policy: v.Policy, rule: v.Rule, outcome: resultOf(v), action: v.Action, mode: v.Mode,
				severity: d.Severity, category: d.Category, message: v.Message, since: v.Since, ref: e.ref, count: 1, template: v.Template,
				exemption: v.Exemption}
			r.since = prior.since(r)
			rows = append(rows, r)
		}
	}
	rows = intoTemplates(rows)
	sortResults(rows)
	if len(rows) <= limit {
		return rows
	}
	rows = byWorkload(rows, prior)
	if len(rows) <= limit {
		return rows
	}
	return capPairs(rows, limit, prior)
}

// outcomeOrder lists failures first, then warnings, then what exemptions
// skip.
var outcomeOrder = map[string]int{"fail": 0, "warn": 1, "skip": 2}

func sortResults(rows []result) {
	slices.SortStableFunc(rows, func(a, b result) int {
		return cmp.Or(
			cmp.Compare(outcomeOrder[a.outcome], outcomeOrder[b.outcome]),
			cmp.Compare(a.policy, b.policy),
			cmp.Compare(a.ref.Kind, b.ref.Kind),
			cmp.Compare(a.ref.Name, b.ref.Name),
		)
	})
}

// byWorkload counts the pods of one workload, policy and outcome as one
// result about the workload.
func byWorkload(rows []result, prior priorTimes) []result {
	type key struct {
		policy  policy.ID
		outcome string
		owner   string
	}
	groups := map[key][]result{}
	var order []key
	var out []result
	for _, r := range rows {
		if r.ref.Kind != "Pod" || r.ref.OwnerUID == "" {
			out = append(out, r)
			continue
		}
		k := key{r.policy, r.outcome, string(r.ref.OwnerUID)}
		if groups[k] == nil {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	for _, k := range order {
		g := groups[k]
		if len(g) == 1 {
			out = append(out, g[0])
			continue
		}
		first := g[0]
		agg := first
		agg.ref = objectRef{APIVersion: first.ref.OwnerAPIVersion, Kind: first.ref.OwnerKind, Namespace: first.ref.Namespace,
			Name: first.ref.OwnerName, UID: first.ref.OwnerUID}
		agg.count = len(g)
		agg.names = names(g)
		agg.rule = rules(g)
		// No count and no pod in the message: Policy Reporter tells results
		// apart by it, and one pod going must not make a "new" violation.
		agg.message = policy.Shorten(fmt.Sprintf("pods of %s %s: %s", first.ref.OwnerKind, first.ref.OwnerName, commonMessage(g)), policy.MaxNoteBytes)
		agg.since = earliest(g)
		agg.since = prior.since(agg)
		out = append(out, agg)
	}
	sortResults(out)
	return out
}

// capPairs keeps at most max(limit, pairs) results: each (policy, outcome)
// pair gets one, the rest go to the pairs in order; a pair with more
// results than its share lists the first ones and counts the others in its
// last.
func capPairs(rows []result, limit int, prior priorTimes) []result {
	var pairs [][]result
	for _, r := range rows { // sorted: a pair's results are adjacent
		if n := len(pairs); n > 0 && pairs[n-1][0].policy == r.policy && pairs[n-1][0].outcome == r.outcome {
			pairs[n-1] = append(pairs[n-1], r)
			continue
		}
		pairs = append(pairs, []result{r})
	}
	slots := make([]int, len(pairs))
	left := max(limit, len(pairs))
	for i := range pairs {
		slots[i] = 1
		left--
	}
	for left > 0 {
		gave := false
		for i := range pairs {
			if left > 0 && slots[i] < len(pairs[i]) {
				slots[i]++
				left--
				gave = true
			}
		}
		if !gave {
			break
		}
	}
	var out []result
	for i, p := range pairs {
		if slots[i] >= len(p) {
			out = append(out, p...)
			continue
		}
		shown, rest := p[:slots[i]-1], p[slots[i]-1:]
		out = append(out, shown...)
		objects := 0
		for _, r := range rest {
			objects += r.count
		}
		first := rest[0]
		agg := first
		agg.ref = objectRef{} // it stands for them all; properties name them
		agg.count = objects
		agg.names = names(rest)
		agg.rule = rules(rest)
		agg.template = false
		// Neither the count nor an object in the message, so that it stays
		// the same while the objects come and go (Policy Reporter tells
		// results apart by it): properties.objects counts them and
		// properties.objectNames names them.
		agg.message = policy.Shorten(fmt.Sprintf("objects in violation of %s not listed one by one (audit.maxReportResults): "+
			"properties.objects counts them, properties.objectNames names them; most of them: %s", first.policy, commonMessage(rest)), policy.MaxNoteBytes)
		agg.since = earliest(rest)
		agg.since = prior.since(agg)
		out = append(out, agg)
	}
	return out
}

// intoTemplates folds the results of a workload's pods into the result
// about its pod template, for the same policy: one thing to fix (the
// template), counted with its pods, instead of a warning about the template
// beside a failure per pod. The result fails when a pod does. Pods are
// matched by their controller: a DaemonSet's, StatefulSet's or Job's (a
// Deployment's pods belong to its ReplicaSets).
func intoTemplates(rows []result) []result {
	type key struct {
		policy policy.ID
		uid    string
	}
	templates := map[key]int{}
	for i, r := range rows {
		if r.template {
			templates[key{r.policy, string(r.ref.UID)}] = i
		}
	}
	if len(templates) == 0 {
		return rows
	}
	pods := map[int][]result{}
	out := rows[:0:0]
	for _, r := range rows {
		if i, ok := templates[key{r.policy, string(r.ref.OwnerUID)}]; ok && r.ref.Kind == "Pod" && r.ref.OwnerUID != "" {
			pods[i] = append(pods[i], r)
			continue
		}
		out = append(out, r)
	}
	for j, r := range out {
		i, ok := templates[key{r.policy, string(r.ref.UID)}]
		if !ok || !r.template || len(pods[i]) == 0 {
			continue
		}
		g := pods[i]
		r.count = 1 + len(g)
		r.names = append([]string{r.ref.Kind + "/" + r.ref.Name}, names(g)...)
		r.rule = rules(append(g, r))
		if slices.ContainsFunc(g, func(p result) bool { return p.outcome == "fail" }) {
			r.outcome, r.action = "fail", g[0].action
		}
		r.since = earliest(append(g, r))
		out[j] = r
	}
	return out
}

// commonMessage is the message most of rs have (the first in order of a
// tie): an aggregate's, which changes only when most of its objects do.
func commonMessage(rs []result) string {
	n := map[string]int{}
	best := ""
	for _, r := range rs {
		n[r.message]++
		if n[r.message] > n[best] || (n[r.message] == n[best] && r.message < best) {
			best = r.message
		}
	}
	return best
}

// names are rs's objects, "Kind/name", in order.
func names(rs []result) []string {
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.ref.Kind+"/"+r.ref.Name)
	}
	return out
}

// rules joins the distinct rules of results, sorted.
func rules(rs []result) string {
	var out []string
	for _, r := range rs {
		for rule := range strings.SplitSeq(r.rule, ", ") {
			if rule != "" && !slices.Contains(out, rule) {
				out = append(out, rule)
			}
		}
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

func earliest(rs []result) time.Time {
	t := rs[0].since
	for _, r := range rs[1:] {
		if r.since.Before(t) {
			t = r.since
		}
	}
	return t
}

// add records the first-seen times of a report's results.
func (p priorTimes) add(report map[string]any) {
	results, _, _ := unstructured.NestedSlice(report, "results")
	for _, raw := range results {
		r, ok := raw.(map[string]any)
		if !ok {
			continue
		}
		// An aggregate over the cap has no resources: its key is the
		// policy, the outcome and its message, which does not change with
		// the objects it counts.
		uid := ""
		if resources, _ := r["resources"].([]any); len(resources) > 0 {
			ref, _ := resources[0].(map[string]any)
			if uid, _ = ref["uid"].(string); uid == "" {
				continue
			}
		}
		id, _ := r["policy"].(string)
		outcome, _ := r["result"].(string)
		message, _ := r["message"].(string)
		seconds, ok, _ := unstructured.NestedInt64(r, "timestamp", "seconds")
		if !ok {
			continue
		}
		k := priorKey{uid, policy.ID(id), outcome, message}
		t := time.Unix(seconds, 0)
		if old, seen := p[k]; !seen || t.Before(old) {
			p[k] = t
		}
	}
}

// properties are r's report properties: what admission does and in which
// mode, how many objects an aggregate counts and which, the exemption that
// skips it and its expiry.
func (r result) properties() map[string]any {
	properties := map[string]any{"action": string(r.action), "mode": string(r.mode)}
	if r.count > 1 {
		properties["objects"] = strconv.Itoa(r.count)
	}
	if len(r.names) > 0 {
		properties["objectNames"] = policy.Shorten(strings.Join(r.names, ", "), policy.MaxNoteBytes)
	}
	if x := r.exemption; x != nil {
		properties["exemption"] = x.Name
		if !x.Expires.IsZero() {
			properties["expires"] = x.Expires.UTC().Format(time.RFC3339)
		}
	}
	return properties
}
