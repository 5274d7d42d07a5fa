package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

// The example, as a user writes it.
const exemptionExample = `exemptions:
- policies: [kube-vip-ipvs-backends]     # required; policy IDs, or ["*"] for every policy
  namespace: kube-system                  # optional
  kinds: [DaemonSet]                      # optional
  names: [kube-vip]                       # optional
  selector: {matchLabels: {tier: control-plane}}   # optional, on the object's labels
  reason: "upgrade to v0.8.10 in change CHG-4711" # required, non-empty
  expires: "2026-12-20T00:00:00Z"         # optional, RFC 3339
`

func TestExemptionsParse(t *testing.T) {
	cfg, err := config.Parse([]byte(header + exemptionExample + `- name: static-probe
  policies: ["*"]
  names: [kube-apiserver-cp1]
  reason: the probe's address is static on this node
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []*policy.Exemption{
		{Name: "exemptions[0]", Policies: []policy.ID{"kube-vip-ipvs-backends"}, Namespace: "kube-system", Kinds: []string{"DaemonSet"},
			Names: []string{"kube-vip"}, Selector: labels.SelectorFromSet(labels.Set{"tier": "control-plane"}),
			Reason: "upgrade to v0.8.10 in change CHG-4711", Expires: time.Date(2026, 12, 20, 0, 0, 0, 0, time.UTC)},
		{Name: "static-probe", Policies: []policy.ID{policy.AllPolicies}, Names: []string{"kube-apiserver-cp1"}, Reason: "the probe's address is static on this node"},
	}
	got := cfg.EngineExemptions()
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b labels.Selector) bool {
		return (a == nil) == (b == nil) && (a == nil || a.String() == b.String())
	}),
		cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("EngineExemptions (-want +got):\n%s", diff)
	}
	e, err := cfg.Engine()
	if err != nil {
		t.Fatal(err)
	}
	if n := len(e.Exemptions()); n != 2 {
		t.Errorf("the engine applies %d exemptions, want 2", n)
	}
	// Exemptions are hot reloaded: no restart.
	if errs := cfg.RestartRequired(config.Default()); len(errs) > 0 {
		t.Errorf("RestartRequired = %v", errs)
	}
}

func TestExemptionsValidation(t *testing.T) {
	tests := []struct {
		name, file string
		wantErr    []string
	}{
		{"misspelt policy", "exemptions:\n- policies: [kube-vip-ipvs-backend]\n  namespace: kube-system\n  reason: r\n",
			[]string{`exemptions[0].policies[0]: Unsupported value: "kube-vip-ipvs-backend": supported values: "host-network-endpoint",`}},
		{"no policies", "exemptions:\n- namespace: kube-system\n  reason: r\n", []string{"exemptions[0].policies: Required value"}},
		{"* with others", "exemptions:\n- policies: [\"*\", kube-vip-ipvs-backends]\n  namespace: kube-system\n  reason: r\n",
			[]string{`exemptions[0].policies[0]: Invalid value: "*": "*" covers every policy: list it alone`}},
		{"no reason", "exemptions:\n- policies: [kube-vip-ipvs-backends]\n  namespace: kube-system\n", []string{"exemptions[0].reason: Required value"}},
		{"blank reason", "exemptions:\n- policies: [kube-vip-ipvs-backends]\n  namespace: kube-system\n  reason: '  '\n", []string{"exemptions[0].reason: Required value"}},
		{"reason too long", "exemptions:\n- policies: [kube-vip-ipvs-backends]\n  namespace: kube-system\n  reason: " + strings.Repeat("x", 257) + "\n",
			[]string{"exemptions[0].reason: Too long"}},
		{"no scope", "exemptions:\n- policies: [kube-vip-ipvs-backends]\n  reason: r\n",
			[]string{"exemptions[0]: Required value: set namespace, kinds, names or selector"}},
		{"bad namespace", "exemptions:\n- policies: [kube-vip-ipvs-backends]\n  namespace: Kube_System\n  reason: r\n", []string{`exemptions[0].namespace: Invalid value: "Kube_System"`}},
		{"unknown kind", "exemptions:\n- policies: [kube-vip-ipvs-backends]\n  kinds: [Daemonset]\n  reason: r\n",
			[]string{`exemptions[0].kinds[0]: Unsupported value: "Daemonset": supported values: "Pod", "Deployment", "StatefulSet", "DaemonSet"`}},
		{"empty name", "exemptions:\n- policies: [kube-vip-ipvs-backends]\n  names: ['']\n  reason: r\n", []string{"exemptions[0].names[0]: Required value"}},
		{"bad selector", "exemptions:\n- policies: [kube-vip-ipvs-backends]\n  selector: {matchExpressions: [{key: tier, operator: Within}]}\n  reason: r\n",
			[]string{`exemptions[0].selector.matchExpressions[0].operator: Invalid value: "Within"`}},
		{"expires not RFC 3339", "exemptions:\n- policies: [kube-vip-ipvs-backends]\n  namespace: kube-system\n  reason: r\n  expires: 2026-12-20\n",
			[]string{`exemptions[0].expires: Invalid value: "2026-12-20": must be an RFC 3339 time`}},
		{"duplicate names", "exemptions:\n- {name: a, policies: [kube-vip-ipvs-backends], namespace: ns-a, reason: r}\n- {name: a, policies: [kube-vip-ipvs-backends], namespace: ns-b, reason: r}\n",
			[]string{`exemptions[1].name: Duplicate value: "a"`}},
		{"unknown field", "exemptions:\n- policies: [kube-vip-ipvs-backends]\n  namespace: kube-system\n  reason: r\n  expiry: 2026-12-20T00:00:00Z\n",
			[]string{`unknown field "exemptions[0].expiry"`}},
		{"every problem at once", "exemptions:\n- policies: [nope]\n  kinds: [Secret]\n",
			[]string{"exemptions[0].policies[0]: Unsupported value", "exemptions[0].reason: Required value", "exemptions[0].kinds[0]: Unsupported value"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Parse([]byte(header + tt.file))
			if err == nil {
				t.Fatal("Parse accepted it")
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}
