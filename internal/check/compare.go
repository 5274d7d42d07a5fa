package check

import (
	"cmp"
	"maps"
	"slices"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

// Change is an object whose verdict of one policy differs between the
// configuration in force and the candidate (check --cluster).
type Change struct {
	Policy    policy.ID     `json:"policy"`
	Kind      string        `json:"kind"`
	Namespace string        `json:"namespace"`
	Name      string        `json:"name"`
	InForce   policy.Action `json:"inForce"`
	Candidate policy.Action `json:"candidate"`
}

// verdictKey is one object's verdict of one policy.
type verdictKey struct {
	policy                policy.ID
	kind, namespace, name string
}

// verdicts returns the action of each object's verdict of each policy
// that is not allow.
func (r Report) verdicts() map[verdictKey]policy.Action {
	out := map[verdictKey]policy.Action{}
	for _, f := range r.Findings {
		out[verdictKey{f.Policy, f.Kind, f.Namespace, f.Name}] = f.Action
	}
	return out
}

// Compare sets r's Changes: the verdicts of r (the candidate's) that differ
// from inForce's (the same objects under the configuration in force, named
// name), sorted by policy, kind, namespace and name.
func (r *Report) Compare(inForce Report, name string) {
	before, after := inForce.verdicts(), r.verdicts()
	keys := map[verdictKey]bool{}
	for k := range before {
		keys[k] = true
	}
	for k := range after {
		keys[k] = true
	}
	r.InForce, r.Changes = name, []Change{}
	for _, k := range slices.SortedFunc(maps.Keys(keys), func(a, b verdictKey) int {
		return cmp.Or(cmp.Compare(a.policy, b.policy), cmp.Compare(a.kind, b.kind), cmp.Compare(a.namespace, b.namespace), cmp.Compare(a.name, b.name))
	}) {
		was, is := actionOr(before, k), actionOr(after, k)
		if was != is {
			r.Changes = append(r.Changes, Change{Policy: k.policy, Kind: k.kind, Namespace: k.namespace, Name: k.name, InForce: was, Candidate: is})
		}
	}
}

func actionOr(m map[verdictKey]policy.Action, k verdictKey) policy.Action {
	if a, ok := m[k]; ok {
		return a
	}
	return policy.ActionAllow
}

// CountPolicies sets r's Policies: each policy's findings by action.
func (r *Report) CountPolicies() {
	r.Policies = map[policy.ID]map[policy.Action]int{}
	for _, f := range r.Findings {
		if r.Policies[f.Policy] == nil {
			r.Policies[f.Policy] = map[policy.Action]int{}
		}
		r.Policies[f.Policy][f.Action]++
	}
}
