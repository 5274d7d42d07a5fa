package policy_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

// fakeRule finds one problem in pods named "bad" and applies only to pods.
type fakeRule struct {
	id     policy.ID
	effect policy.Effect
}

func (r fakeRule) ID() policy.ID { return r.id }

func (r fakeRule) Effect() policy.Effect { return r.effect }

func (r fakeRule) Evaluate(t policy.Target) ([]policy.Finding, bool) {
	pod, ok := t.Object.(*corev1.Pod)
	if !ok {
		return nil, false
	}
	if pod.Name == "bad" {
		return []policy.Finding{{Message: "bad name"}}, true
	}
	return nil, true
}

func TestNewEngine(t *testing.T) {
	a, b := fakeRule{id: "a"}, fakeRule{id: "b"}
	tests := []struct {
		name    string
		rules   []policy.Rule
		modes   map[policy.ID]policy.Mode
		wantErr string
	}{
		{name: "valid", rules: []policy.Rule{a, b}, modes: map[policy.ID]policy.Mode{"a": policy.Enforce, "b": policy.Disabled}},
		{name: "duplicate ID", rules: []policy.Rule{a, a}, modes: map[policy.ID]policy.Mode{"a": policy.Enforce}, wantErr: `policy "a" registered twice`},
		{name: "no mode", rules: []policy.Rule{a, b}, modes: map[policy.ID]policy.Mode{"a": policy.Enforce}, wantErr: `policy "b" has no valid mode`},
		{name: "invalid mode", rules: []policy.Rule{a}, modes: map[policy.ID]policy.Mode{"a": "enforce"}, wantErr: `policy "a" has no valid mode (got "enforce")`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := policy.NewEngine(tt.rules, tt.modes)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("error = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestEngineEvaluate(t *testing.T) {
	e, err := policy.NewEngine(
		[]policy.Rule{fakeRule{id: "enforced"}, fakeRule{id: "audited"}, fakeRule{id: "off"}},
		map[policy.ID]policy.Mode{"enforced": policy.Enforce, "audited": policy.Audit, "off": policy.Disabled})
	if err != nil {
		t.Fatal(err)
	}
	bad := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bad"}}
	good := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "good"}}

	want := []policy.Result{
		{Policy: "enforced", Mode: policy.Enforce, Findings: []policy.Finding{{Message: "bad name"}}},
		{Policy: "audited", Mode: policy.Audit, Findings: []policy.Finding{{Message: "bad name"}}},
	}
	if diff := cmp.Diff(want, e.Evaluate(policy.Target{Object: bad})); diff != "" {
		t.Errorf("bad pod (-want +got):\n%s", diff)
	}
	want = []policy.Result{{Policy: "enforced", Mode: policy.Enforce}, {Policy: "audited", Mode: policy.Audit}}
	if diff := cmp.Diff(want, e.Evaluate(policy.Target{Object: good})); diff != "" {
		t.Errorf("good pod: every applying rule has a result (-want +got):\n%s", diff)
	}
	if got := e.Evaluate(policy.Target{Object: &corev1.ConfigMap{}}); len(got) != 0 {
		t.Errorf("no rule applies to a ConfigMap, got %v", got)
	}
	if got := e.Evaluate(policy.Target{}); len(got) != 0 {
		t.Errorf("no rule applies to no object, got %v", got)
	}
	for id, want := range map[policy.ID]policy.Mode{"enforced": policy.Enforce, "audited": policy.Audit, "off": policy.Disabled, "unknown": policy.Disabled} {
		if got := e.Mode(id); got != want {
			t.Errorf("Mode(%s) = %s, want %s", id, got, want)
		}
	}
}

func TestEngineEvaluateEffect(t *testing.T) {
	e, err := policy.NewEngine(
		[]policy.Rule{fakeRule{id: "validates"}, fakeRule{id: "mutates", effect: policy.Mutating}},
		map[policy.ID]policy.Mode{"validates": policy.Enforce, "mutates": policy.Enforce})
	if err != nil {
		t.Fatal(err)
	}
	pod := policy.Target{Object: &corev1.Pod{}}
	for effect, want := range map[policy.Effect]policy.ID{policy.Validating: "validates", policy.Mutating: "mutates"} {
		got := e.EvaluateEffect(pod, effect)
		if len(got) != 1 || got[0].Policy != want {
			t.Errorf("EvaluateEffect(%s) = %v, want only %s", effect, got, want)
		}
	}
	if got := e.Evaluate(pod); len(got) != 2 {
		t.Errorf("Evaluate runs every effect, got %v", got)
	}
}

func TestStoreSwap(t *testing.T) {
	e1, _ := policy.NewEngine(nil, nil)
	e2, _ := policy.NewEngine(nil, nil)
	s := policy.NewStore(e1)
	if s.Load() != e1 {
		t.Fatal("Load does not return the initial engine")
	}
	changed := s.Changed()
	select {
	case <-changed:
		t.Fatal("Changed is closed before any Swap")
	default:
	}
	s.Swap(e2)
	if s.Load() != e2 {
		t.Fatal("Load does not return the swapped engine")
	}
	select {
	case <-changed:
	default:
		t.Fatal("Swap does not close the channel Changed returned before it")
	}
	select {
	case <-s.Changed():
		t.Fatal("Changed after a Swap returns a closed channel")
	default:
	}
}

func TestEngineEvaluatePolicy(t *testing.T) {
	e, err := policy.NewEngine(
		[]policy.Rule{fakeRule{id: "enforced"}, fakeRule{id: "audited"}, fakeRule{id: "off"}},
		map[policy.ID]policy.Mode{"enforced": policy.Enforce, "audited": policy.Audit, "off": policy.Disabled})
	if err != nil {
		t.Fatal(err)
	}
	bad := policy.Target{Object: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bad"}}}
	tests := []struct {
		id     policy.ID
		target policy.Target
		want   policy.Result
		wantOK bool
	}{
		{id: "enforced", target: bad, wantOK: true,
			want: policy.Result{Policy: "enforced", Mode: policy.Enforce, Findings: []policy.Finding{{Message: "bad name"}}}},
		{id: "audited", target: bad, wantOK: true,
			want: policy.Result{Policy: "audited", Mode: policy.Audit, Findings: []policy.Finding{{Message: "bad name"}}}},
		{id: "off", target: bad},
		{id: "unknown", target: bad},
		{id: "enforced", target: policy.Target{Object: &corev1.ConfigMap{}}},
	}
	for _, tt := range tests {
		got, ok := e.EvaluatePolicy(tt.target, tt.id)
		if ok != tt.wantOK {
			t.Errorf("EvaluatePolicy(%s) ok = %v, want %v", tt.id, ok, tt.wantOK)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("EvaluatePolicy(%s) (-want +got):\n%s", tt.id, diff)
		}
	}
}

// The engine has no result for an excluded object, whatever its rules do
// (fakeRule does not look at the label), and says which namespaces it skips.
func TestEngineExcluded(t *testing.T) {
	e, err := policy.NewEngine([]policy.Rule{fakeRule{id: "a"}}, map[policy.ID]policy.Mode{"a": policy.Enforce})
	if err != nil {
		t.Fatal(err)
	}
	excluded := map[string]string{policy.ExcludeLabel: "true"}
	tests := []struct {
		name                    string
		podLabels, namespace    map[string]string
		wantResults, wantSkipNS bool
	}{
		{name: "neither", wantResults: true},
		{name: "the pod excluded", podLabels: excluded},
		{name: "its namespace excluded", namespace: excluded, wantSkipNS: true},
		{name: "the label set to something else", namespace: map[string]string{policy.ExcludeLabel: "false"}, wantResults: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := policy.Target{Object: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bad", Labels: tt.podLabels}}, NamespaceLabels: tt.namespace}
			if got := e.Evaluate(target); (len(got) > 0) != tt.wantResults {
				t.Errorf("Evaluate = %v, want results: %v", got, tt.wantResults)
			}
			if _, ok := e.EvaluatePolicy(target, "a"); ok != tt.wantResults {
				t.Errorf("EvaluatePolicy applies = %v, want %v", ok, tt.wantResults)
			}
			if got := e.SkipsNamespace(tt.namespace); got != tt.wantSkipNS {
				t.Errorf("SkipsNamespace = %v, want %v", got, tt.wantSkipNS)
			}
		})
	}
}

func TestEscapePointer(t *testing.T) {
	for in, want := range map[string]string{
		"plain":                       "plain",
		"endpoint-policy.io/endpoint": "endpoint-policy.io~1endpoint",
		"a~b/c":                       "a~0b~1c",
	} {
		if got := policy.EscapePointer(in); got != want {
			t.Errorf("EscapePointer(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestResultAction(t *testing.T) {
	violation := policy.Finding{Message: "bad"}
	change := policy.Finding{Message: "set X", Annotations: map[string]string{"a": "b"}}
	tests := []struct {
		name    string
		result  policy.Result
		mayDeny bool
		want    policy.Action
	}{
		{"no findings", policy.Result{Mode: policy.Enforce}, true, policy.ActionAllow},
		{"violation in Enforce", policy.Result{Mode: policy.Enforce, Findings: []policy.Finding{violation}}, true, policy.ActionDeny},
		{"violation in Enforce on an object that may not be denied", policy.Result{Mode: policy.Enforce, Findings: []policy.Finding{violation}}, false, policy.ActionWarn},
		{"violation in Audit", policy.Result{Mode: policy.Audit, Findings: []policy.Finding{violation}}, true, policy.ActionWarn},
		{"change in Enforce", policy.Result{Mode: policy.Enforce, Findings: []policy.Finding{change}}, true, policy.ActionMutate},
		{"change in Enforce on a mirror pod", policy.Result{Mode: policy.Enforce, Findings: []policy.Finding{change}}, false, policy.ActionMutate},
		{"change in Audit", policy.Result{Mode: policy.Audit, Findings: []policy.Finding{change}}, true, policy.ActionWarn},
		{"exempted violation in Enforce", policy.Result{Mode: policy.Enforce, Findings: []policy.Finding{violation}, Exemption: &policy.Exemption{}}, true, policy.ActionExempt},
		{"exempted change in Enforce", policy.Result{Mode: policy.Enforce, Findings: []policy.Finding{change}, Exemption: &policy.Exemption{}}, true, policy.ActionExempt},
		{"exempted, held back", policy.Result{Mode: policy.Enforce, Findings: []policy.Finding{{Message: "m", Unverified: true}}, Exemption: &policy.Exemption{}}, true, policy.ActionExempt},
		{"exempted violation in Audit", policy.Result{Mode: policy.Audit, Findings: []policy.Finding{violation}, Exemption: &policy.Exemption{}}, true, policy.ActionExempt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.result.Action(tt.mayDeny); got != tt.want {
				t.Errorf("Action(%v) = %q, want %q", tt.mayDeny, got, tt.want)
			}
		})
	}
}
