package policy_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

var expiry = time.Date(2026, 12, 20, 0, 0, 0, 0, time.UTC)

// podOf returns a pod in namespace ns controlled by kind/name (none when
// kind is ""), with labels.
func podOf(ns, name, kind, owner string, l map[string]string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: l}}
	if kind != "" {
		apiVersion := "apps/v1"
		if kind == "Job" {
			apiVersion = "batch/v1"
		}
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: apiVersion, Kind: kind, Name: owner, Controller: new(true)}}
	}
	return p
}

func TestExemptionMatches(t *testing.T) {
	kubeVIP := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-vip", Labels: map[string]string{"tier": "control-plane"}}}
	// The DaemonSet controller's pod: generateName only, at admission.
	kubeVIPPod := podOf("kube-system", "", "DaemonSet", "kube-vip", map[string]string{"tier": "control-plane"})
	// A Deployment's pod, through its ReplicaSet "<deployment>-<pod-template-hash>".
	webPod := podOf("apps", "web-5d4f8b9c7-x2x9q", "ReplicaSet", "web-5d4f8b9c7", map[string]string{"pod-template-hash": "5d4f8b9c7"})
	// A ReplicaSet of its own whose name merely ends like a hash.
	rsPod := podOf("apps", "web-abc-1", "ReplicaSet", "web-abc", map[string]string{"pod-template-hash": "zzz"})
	mirror := podOf("kube-system", "kube-apiserver-cp1", "Node", "cp1", nil)
	mirror.OwnerReferences[0].APIVersion = "v1"
	before, at := expiry.Add(-time.Nanosecond), expiry

	tests := []struct {
		name string
		x    policy.Exemption
		id   policy.ID
		obj  client.Object
		now  time.Time
		want bool
	}{
		{"its policy", policy.Exemption{Policies: []policy.ID{"kube-vip-ipvs-backends"}, Namespace: "kube-system"}, "kube-vip-ipvs-backends", kubeVIP, before, true},
		{"another policy", policy.Exemption{Policies: []policy.ID{"kube-vip-ipvs-backends"}, Namespace: "kube-system"}, "host-network-endpoint", kubeVIP, before, false},
		{"* covers every policy", policy.Exemption{Policies: []policy.ID{policy.AllPolicies}, Namespace: "kube-system"}, "host-network-endpoint", kubeVIP, before, true},
		{"another namespace", policy.Exemption{Policies: []policy.ID{"p"}, Namespace: "default"}, "p", kubeVIP, before, false},
		{"its kind and name", policy.Exemption{Policies: []policy.ID{"p"}, Kinds: []string{"DaemonSet"}, Names: []string{"kube-vip"}}, "p", kubeVIP, before, true},
		{"another kind", policy.Exemption{Policies: []policy.ID{"p"}, Kinds: []string{"Deployment"}, Names: []string{"kube-vip"}}, "p", kubeVIP, before, false},
		{"another name", policy.Exemption{Policies: []policy.ID{"p"}, Names: []string{"kube-vip-cloud-provider"}}, "p", kubeVIP, before, false},
		{"a DaemonSet's pod, by its DaemonSet", policy.Exemption{Policies: []policy.ID{"p"}, Kinds: []string{"DaemonSet"}, Names: []string{"kube-vip"}}, "p", kubeVIPPod, before, true},
		{"a DaemonSet's pod, by kind Pod", policy.Exemption{Policies: []policy.ID{"p"}, Kinds: []string{"Pod"}, Names: []string{"kube-vip"}}, "p", kubeVIPPod, before, false},
		{"a Deployment's pod, by its Deployment", policy.Exemption{Policies: []policy.ID{"p"}, Kinds: []string{"Deployment"}, Names: []string{"web"}}, "p", webPod, before, true},
		{"a Deployment's pod, by its ReplicaSet", policy.Exemption{Policies: []policy.ID{"p"}, Kinds: []string{"ReplicaSet"}, Names: []string{"web-5d4f8b9c7"}}, "p", webPod, before, true},
		{"a Deployment's pod, by its own name", policy.Exemption{Policies: []policy.ID{"p"}, Kinds: []string{"Pod"}, Names: []string{"web-5d4f8b9c7-x2x9q"}}, "p", webPod, before, true},
		{"a ReplicaSet whose name does not end in the hash has no Deployment", policy.Exemption{Policies: []policy.ID{"p"}, Kinds: []string{"Deployment"}, Names: []string{"web"}}, "p", rsPod, before, false},
		{"a mirror pod is not its Node's", policy.Exemption{Policies: []policy.ID{"p"}, Kinds: []string{"Node"}, Names: []string{"cp1"}}, "p", mirror, before, false},
		{"a mirror pod by name", policy.Exemption{Policies: []policy.ID{"p"}, Names: []string{"kube-apiserver-cp1"}}, "p", mirror, before, true},
		{"selector on the object's labels", policy.Exemption{Policies: []policy.ID{"p"}, Selector: labels.SelectorFromSet(labels.Set{"tier": "control-plane"})}, "p", kubeVIPPod, before, true},
		{"selector that does not match", policy.Exemption{Policies: []policy.ID{"p"}, Selector: labels.SelectorFromSet(labels.Set{"tier": "node"})}, "p", kubeVIP, before, false},
		{"every field must match", policy.Exemption{Policies: []policy.ID{"p"}, Namespace: "kube-system", Kinds: []string{"DaemonSet"}, Names: []string{"kube-vip"},
			Selector: labels.SelectorFromSet(labels.Set{"tier": "node"})}, "p", kubeVIP, before, false},
		{"a nanosecond before it expires", policy.Exemption{Policies: []policy.ID{"p"}, Namespace: "kube-system", Expires: expiry}, "p", kubeVIP, before, true},
		{"at its expiry", policy.Exemption{Policies: []policy.ID{"p"}, Namespace: "kube-system", Expires: expiry}, "p", kubeVIP, at, false},
		{"no expiry", policy.Exemption{Policies: []policy.ID{"p"}, Namespace: "kube-system"}, "p", kubeVIP, expiry.AddDate(10, 0, 0), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.x.Matches(tt.id, tt.obj, tt.now); got != tt.want {
				t.Errorf("Matches = %v, want %v (identities %v)", got, tt.want, policy.Identities(tt.obj))
			}
		})
	}
}

func TestEngineExempting(t *testing.T) {
	e, err := policy.NewEngine([]policy.Rule{fakeRule{id: "a"}, fakeRule{id: "b"}}, map[policy.ID]policy.Mode{"a": policy.Enforce, "b": policy.Enforce})
	if err != nil {
		t.Fatal(err)
	}
	now := expiry.Add(-time.Minute)
	clock := func() time.Time { return now }
	soon := &policy.Exemption{Name: "exemptions[0]", Policies: []policy.ID{"a"}, Names: []string{"bad"}, Reason: "CHG-1", Expires: expiry}
	later := &policy.Exemption{Name: "all", Policies: []policy.ID{policy.AllPolicies}, Names: []string{"bad"}, Reason: "CHG-2", Expires: expiry.Add(time.Hour)}
	x := e.Exempting([]*policy.Exemption{soon, later}, clock)

	bad := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bad"}}
	exemptions := func() map[policy.ID]string {
		out := map[policy.ID]string{}
		for _, r := range policy.Verdicts(bad, x.Evaluate(policy.Target{Object: bad})) {
			out[r.Policy] = string(r.Action)
			if r.Exemption != nil {
				out[r.Policy] += " by " + r.Exemption.Name
			}
		}
		return out
	}
	// The first that matches is the one reported.
	if diff := cmp.Diff(map[policy.ID]string{"a": "exempt by exemptions[0]", "b": "exempt by all"}, exemptions()); diff != "" {
		t.Errorf("before the expiry (-want +got):\n%s", diff)
	}
	// At its expiry, with the same engine: the next one takes over.
	now = expiry
	if diff := cmp.Diff(map[policy.ID]string{"a": "exempt by all", "b": "exempt by all"}, exemptions()); diff != "" {
		t.Errorf("at the first expiry (-want +got):\n%s", diff)
	}
	now = expiry.Add(time.Hour)
	if diff := cmp.Diff(map[policy.ID]string{"a": "deny", "b": "deny"}, exemptions()); diff != "" {
		t.Errorf("after both (-want +got):\n%s", diff)
	}
	// A compliant object has no exemption: it is allowed.
	good := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "good"}}
	for _, r := range x.Evaluate(policy.Target{Object: good}) {
		if r.Exemption != nil {
			t.Errorf("%s: a result without findings got exemption %s", r.Policy, r.Exemption.Name)
		}
	}
	// EvaluatePolicy (the kube-proxy controller's) applies them too.
	now = expiry.Add(-time.Minute)
	if r, ok := x.EvaluatePolicy(policy.Target{Object: bad}, "b"); !ok || r.Exemption != later {
		t.Errorf("EvaluatePolicy: exemption %v, want %q", r.Exemption, later.Name)
	}
	// The engine without exemptions is unchanged.
	if r, _ := e.EvaluatePolicy(policy.Target{Object: bad}, "a"); r.Exemption != nil {
		t.Errorf("Exempting changed the engine it copied")
	}

	for _, tt := range []struct {
		now  time.Time
		want time.Time
	}{
		{expiry.Add(-time.Minute), expiry},
		{expiry, expiry.Add(time.Hour)},
		{expiry.Add(time.Hour), time.Time{}},
	} {
		if got := x.NextExpiry(tt.now); !got.Equal(tt.want) {
			t.Errorf("NextExpiry(%s) = %s, want %s", tt.now, got, tt.want)
		}
	}
}

func TestExemptedMessages(t *testing.T) {
	r := policy.Result{Policy: "kube-vip-ipvs-backends", Mode: policy.Enforce, Findings: []policy.Finding{{Message: "kube-vip v0.8.6 drops IPVS backends"}},
		Exemption: &policy.Exemption{Name: "exemptions[0]", Reason: "upgrade to v0.8.10 in change CHG-4711", Expires: expiry}}
	if got, want := r.Exempted(), "[kube-vip-ipvs-backends] exempted: upgrade to v0.8.10 in change CHG-4711 (until 2026-12-20T00:00:00Z)"; got != want {
		t.Errorf("Exempted() = %q, want %q", got, want)
	}
	want := "[kube-vip-ipvs-backends] exempted: upgrade to v0.8.10 in change CHG-4711 (until 2026-12-20T00:00:00Z); kube-vip v0.8.6 drops IPVS backends"
	if got := r.ExemptedSummary(policy.Would, 10, policy.MaxNoteBytes); got != want {
		t.Errorf("ExemptedSummary() = %q, want %q", got, want)
	}
	// Cut to fit, the exemption's reason kept whole.
	if got := r.ExemptedSummary(policy.Would, 10, len(r.Exempted())+10); len(got) > len(r.Exempted())+10 || got[:len(r.Exempted())] != r.Exempted() {
		t.Errorf("ExemptedSummary cut = %q", got)
	}
	never := r
	never.Exemption = &policy.Exemption{Reason: "static address by design"}
	if got, want := never.Exempted(), "[kube-vip-ipvs-backends] exempted: static address by design"; got != want {
		t.Errorf("Exempted() without expiry = %q, want %q", got, want)
	}
}

// TestMutationPodOwners: the pod mutator's pod carries its ownerReferences
// raw; Owners decodes them when an exemption needs them.
func TestMutationPodOwners(t *testing.T) {
	for _, tt := range []struct {
		name, raw string
		want      []policy.Identity
		wantErr   bool
	}{
		{"a DaemonSet's pod", `{"metadata":{"generateName":"kube-vip-","ownerReferences":[{"apiVersion":"apps/v1","kind":"DaemonSet","name":"kube-vip","uid":"u","controller":true}]}}`,
			[]policy.Identity{{Kind: "DaemonSet", Name: "kube-vip"}}, false},
		{"no owners", `{"metadata":{"name":"p"}}`, []policy.Identity{{Kind: "Pod", Name: "p"}}, false},
		{"null owners", `{"metadata":{"name":"p","ownerReferences":null}}`, []policy.Identity{{Kind: "Pod", Name: "p"}}, false},
		{"owners that do not decode", `{"metadata":{"name":"p","ownerReferences":{"kind":"DaemonSet"}}}`, nil, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mp, err := policy.DecodeMutationPod([]byte(tt.raw))
			if err != nil {
				t.Fatal(err)
			}
			pod, err := mp.Pod()
			if err != nil {
				t.Fatal(err)
			}
			if pod.OwnerReferences, err = mp.Owners(); (err != nil) != tt.wantErr {
				t.Fatalf("Owners error = %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if diff := cmp.Diff(tt.want, policy.Identities(pod)); diff != "" {
				t.Errorf("Identities (-want +got):\n%s", diff)
			}
		})
	}
}
