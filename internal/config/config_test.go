package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/apiserver"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/kubeproxy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/kubevip"
	"github.com/endpoint-policy/endpoint-policy/internal/registry"
)

const header = "apiVersion: endpoint-policy.io/v1alpha1\nkind: PolicyConfiguration\n"

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		want    func(*config.PolicyConfiguration) // edits to the defaults
		wantErr string
	}{
		{name: "minimal file keeps every default", file: header, want: func(*config.PolicyConfiguration) {}},
		{name: "the documented example", file: header + `mode: Enforce
policies:
  host-network-endpoint:
    mode: Enforce
    host: localhost
    port: 7443
    override: IPLiterals
  apiserver-probe-host:
    mode: Audit
  apiserver-advertise-address:
    mode: Enforce
  kube-vip-ipvs-backends:
    mode: Enforce
  kube-proxy-node-deleting:
    mode: Enforce
    podSelectors:
      - matchLabels: {k8s-app: kube-proxy}
      - matchLabels: {component: kube-proxy}
      - matchLabels: {app: kubernetes, role: proxy}
  kube-proxy-readiness-probe:
    mode: Audit
audit:
  interval: 5m
  maxReportResults: 100
`, want: func(*config.PolicyConfiguration) {}},
		{name: "audit settings", file: header + "audit:\n  interval: 30s\n  maxReportResults: 500\n",
			want: func(c *config.PolicyConfiguration) {
				c.Audit.Interval = metav1.Duration{Duration: 30 * time.Second}
				c.Audit.MaxReportResults = 500
			}},
		{name: "a partial audit section keeps the other default", file: header + "audit:\n  maxReportResults: 10\n",
			want: func(c *config.PolicyConfiguration) { c.Audit.MaxReportResults = 10 }},
		{name: "audit interval below 1s", file: header + "audit:\n  interval: 100ms\n",
			wantErr: `audit.interval: Invalid value: "100ms": must be at least 1s`},
		{name: "audit interval not a duration", file: header + "audit:\n  interval: often\n",
			wantErr: `audit.interval: Invalid value: "often": must be a duration`},
		{name: "no report results", file: header + "audit:\n  maxReportResults: 0\n",
			wantErr: "audit.maxReportResults: Invalid value: 0: must be between 1 and 500"},
		{name: "too many report results", file: header + "audit:\n  maxReportResults: 501\n",
			wantErr: "audit.maxReportResults: Invalid value: 501"},
		{name: "report API", file: header + "audit:\n  reportAPI: openreports.io\n",
			want: func(c *config.PolicyConfiguration) { c.Audit.ReportAPI = config.ReportAPIOpenReports }},
		{name: "unknown report API", file: header + "audit:\n  reportAPI: policyreports\n",
			wantErr: `audit.reportAPI: Unsupported value: "policyreports": supported values: "Auto", "wgpolicyk8s.io", "openreports.io"`},
		{name: "unknown audit field", file: header + "audit:\n  intervall: 1m\n",
			wantErr: `unknown field "audit.intervall"`},
		{name: "a pod selector list replaces the default list whole", file: header + `policies:
  kube-proxy-node-deleting:
    podSelectors:
      - matchLabels: {app: kube-proxy}
`, want: func(c *config.PolicyConfiguration) {
			c.Policies[kubeproxy.NodeDeletingID].Settings.(*kubeproxy.Settings).PodSelectors = []metav1.LabelSelector{{MatchLabels: map[string]string{"app": "kube-proxy"}}}
		}},
		{name: "kube-proxy modes", file: header + "policies:\n  kube-proxy-node-deleting:\n    mode: Audit\n  kube-proxy-readiness-probe:\n    mode: Enforce\n",
			want: func(c *config.PolicyConfiguration) {
				c.Policies[kubeproxy.NodeDeletingID].Mode = policy.Audit
				c.Policies[kubeproxy.ReadinessProbeID].Mode = policy.Enforce
			}},
		{name: "a setting set to null keeps its default", file: header + "policies:\n  kube-proxy-node-deleting:\n    podSelectors: null\n  host-network-endpoint:\n    port: null\n    host: 127.0.0.1\n",
			want: func(c *config.PolicyConfiguration) {
				c.Policies[hostnetwork.ID].Settings.(*hostnetwork.Settings).Host = "127.0.0.1"
			}},
		{name: "no pod selectors", file: header + "policies:\n  kube-proxy-node-deleting:\n    podSelectors: []\n",
			wantErr: "policies.kube-proxy-node-deleting.podSelectors: Required value"},
		{name: "a pod selector that selects every pod", file: header + "policies:\n  kube-proxy-node-deleting:\n    podSelectors: [{}]\n",
			wantErr: "policies.kube-proxy-node-deleting.podSelectors[0]: Invalid value"},
		{name: "a pod selector with a typo", file: header + "policies:\n  kube-proxy-node-deleting:\n    podSelectors: [{matchLabel: {a: b}}]\n",
			wantErr: `unknown field "policies.kube-proxy-node-deleting.podSelectors[0].matchLabel"`},
		{name: "addresses to preserve", file: header + "policies:\n  host-network-endpoint:\n    preserve: [10.0.0.100, 10.0.0.0/24, api.example.com]\n",
			want: func(c *config.PolicyConfiguration) {
				c.Policies[hostnetwork.ID].Settings.(*hostnetwork.Settings).Preserve = []string{"10.0.0.100", "10.0.0.0/24", "api.example.com"}
			}},
		{name: "a CIDR that is not one", file: header + "policies:\n  host-network-endpoint:\n    preserve: [10.0.0.0/33]\n",
			wantErr: `policies.host-network-endpoint.preserve[0]: Invalid value: "10.0.0.0/33": must be an IP address, a DNS name or a CIDR`},
		{name: "bad readiness-probe mode", file: header + "policies:\n  kube-proxy-readiness-probe:\n    mode: audit\n",
			wantErr: `policies.kube-proxy-readiness-probe.mode: Unsupported value: "audit"`},
		{name: "control-plane policies", file: header + "policies:\n  apiserver-probe-host:\n    mode: Enforce\n  kube-vip-ipvs-backends:\n    mode: Disabled\n",
			want: func(c *config.PolicyConfiguration) {
				c.Policies[apiserver.ProbeHostID].Mode = policy.Enforce
				c.Policies[kubevip.ID].Mode = policy.Disabled
			}},
		{name: "bad control-plane policy mode", file: header + "policies:\n  apiserver-advertise-address:\n    mode: enforce\n",
			wantErr: `policies.apiserver-advertise-address.mode: Unsupported value: "enforce"`},
		{name: "control-plane policies have no settings", file: header + "policies:\n  apiserver-probe-host:\n    host: x\n",
			wantErr: `unknown field "policies.apiserver-probe-host.host"`},
		{name: "partial policy settings keep the other defaults", file: header + `policies:
  host-network-endpoint:
    port: 6443
`, want: func(c *config.PolicyConfiguration) {
			c.Policies[hostnetwork.ID].Settings.(*hostnetwork.Settings).Port = 6443
		}},
		{name: "JSON works too", file: `{"apiVersion":"endpoint-policy.io/v1alpha1","kind":"PolicyConfiguration","mode":"Audit"}`,
			want: func(c *config.PolicyConfiguration) { c.Mode = policy.Audit }},
		{name: "global Audit", file: header + "mode: Audit\n",
			want: func(c *config.PolicyConfiguration) { c.Mode = policy.Audit }},
		{name: "policy Disabled", file: header + "policies:\n  host-network-endpoint:\n    mode: Disabled\n",
			want: func(c *config.PolicyConfiguration) { c.Policies[hostnetwork.ID].Mode = policy.Disabled }},
		{name: "custom balancer", file: header + "policies:\n  host-network-endpoint:\n    host: 127.0.0.1\n    port: 6443\n    override: Always\n",
			want: func(c *config.PolicyConfiguration) {
				c.Policies[hostnetwork.ID].Settings.(*hostnetwork.Settings).Host = "127.0.0.1"
				c.Policies[hostnetwork.ID].Settings.(*hostnetwork.Settings).Port = 6443
				c.Policies[hostnetwork.ID].Settings.(*hostnetwork.Settings).Override = hostnetwork.OverrideAlways
			}},

		{name: "unknown top-level field", file: header + "modes: Audit\n", wantErr: `unknown field "modes"`},
		{name: "unknown policy ID", file: header + "policies:\n  host-network-endpoints:\n    mode: Audit\n",
			wantErr: `unknown field "policies.host-network-endpoints"`},
		{name: "unknown policy field", file: header + "policies:\n  host-network-endpoint:\n    hots: localhost\n",
			wantErr: `unknown field "policies.host-network-endpoint.hots"`},
		{name: "duplicate key", file: header + "mode: Audit\nmode: Enforce\n", wantErr: `"mode"`},
		{name: "bad global mode", file: header + "mode: enforce\n", wantErr: `mode: Unsupported value: "enforce"`},
		{name: "global Disabled is not a global mode", file: header + "mode: Disabled\n", wantErr: `mode: Unsupported value: "Disabled"`},
		{name: "bad policy mode", file: header + "policies:\n  host-network-endpoint:\n    mode: Warn\n",
			wantErr: `policies.host-network-endpoint.mode: Unsupported value: "Warn"`},
		{name: "port 0", file: header + "policies:\n  host-network-endpoint:\n    port: 0\n",
			wantErr: "policies.host-network-endpoint.port: Invalid value: 0: must be between 1 and 65535"},
		{name: "port 70000", file: header + "policies:\n  host-network-endpoint:\n    port: 70000\n",
			wantErr: "policies.host-network-endpoint.port: Invalid value: 70000"},
		{name: "port as a string", file: header + "policies:\n  host-network-endpoint:\n    port: \"7443\"\n",
			wantErr: "port"},
		{name: "empty host", file: header + "policies:\n  host-network-endpoint:\n    host: \"\"\n",
			wantErr: "policies.host-network-endpoint.host: Required value"},
		{name: "host with a scheme", file: header + "policies:\n  host-network-endpoint:\n    host: https://localhost\n",
			wantErr: "policies.host-network-endpoint.host: Invalid value"},
		{name: "bad override", file: header + "policies:\n  host-network-endpoint:\n    override: IPs\n",
			wantErr: `policies.host-network-endpoint.override: Unsupported value: "IPs"`},
		{name: "endpointConfigMaps replaced whole", file: header + "endpointConfigMaps: [kube-system/api-endpoint, kube-system/cilium-config]\n",
			want: func(c *config.PolicyConfiguration) {
				c.EndpointConfigMaps = []string{"kube-system/api-endpoint", "kube-system/cilium-config"}
			}},
		{name: "endpointConfigMaps empty: none", file: header + "endpointConfigMaps: []\n",
			want: func(c *config.PolicyConfiguration) { c.EndpointConfigMaps = []string{} }},
		{name: "endpointConfigMaps null: the default", file: header + "endpointConfigMaps: null\n", want: func(*config.PolicyConfiguration) {}},
		{name: "endpointConfigMaps without a namespace", file: header + "endpointConfigMaps: [cilium-config]\n",
			wantErr: `endpointConfigMaps[0]: Invalid value: "cilium-config": must be "namespace/name"`},
		{name: "endpointConfigMaps with a bad name", file: header + "endpointConfigMaps: [kube-system/Cilium_Config]\n",
			wantErr: `endpointConfigMaps[0]: Invalid value: "kube-system/Cilium_Config": name: `},
		{name: "endpointConfigMaps twice", file: header + "endpointConfigMaps: [a/b, a/b]\n",
			wantErr: `endpointConfigMaps[1]: Duplicate value: "a/b"`},
		{name: "missing apiVersion", file: "kind: PolicyConfiguration\n", wantErr: `apiVersion: Unsupported value: ""`},
		{name: "wrong apiVersion", file: "apiVersion: endpoint-policy.io/v1\nkind: PolicyConfiguration\n",
			wantErr: `apiVersion: Unsupported value: "endpoint-policy.io/v1"`},
		{name: "wrong kind", file: "apiVersion: endpoint-policy.io/v1alpha1\nkind: Config\n", wantErr: `kind: Unsupported value: "Config"`},
		{name: "empty file", file: "", wantErr: "apiVersion"},
		{name: "not YAML", file: "mode: [", wantErr: "not valid YAML"},
		{name: "not a map", file: "- a\n- b\n", wantErr: "cannot decode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := config.Parse([]byte(tt.file))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := config.Default()
			tt.want(want)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("configuration (-want +got):\n%s", diff)
			}
		})
	}
}

func TestModes(t *testing.T) {
	tests := []struct {
		name       string
		global     policy.Mode
		hostNet    policy.Mode
		wantHostNe policy.Mode
	}{
		{"enforce/enforce", policy.Enforce, policy.Enforce, policy.Enforce},
		{"enforce/audit", policy.Enforce, policy.Audit, policy.Audit},
		{"audit turns enforce into audit", policy.Audit, policy.Enforce, policy.Audit},
		{"audit keeps disabled", policy.Audit, policy.Disabled, policy.Disabled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := config.Default()
			c.Mode, c.Policies[hostnetwork.ID].Mode = tt.global, tt.hostNet
			if got := c.Modes()[hostnetwork.ID]; got != tt.wantHostNe {
				t.Fatalf("effective mode = %s, want %s", got, tt.wantHostNe)
			}
			if got := c.Modes()[apiserver.ProbeHostID]; got != policy.Audit {
				t.Errorf("apiserver-probe-host (default Audit) = %s in every global mode, want Audit", got)
			}
		})
	}
}

func TestDefaultModes(t *testing.T) {
	want := map[policy.ID]policy.Mode{
		hostnetwork.ID:               policy.Enforce,
		apiserver.ProbeHostID:        policy.Audit,
		apiserver.AdvertiseAddressID: policy.Enforce,
		kubevip.ID:                   policy.Enforce,
		kubeproxy.NodeDeletingID:     policy.Enforce,
		kubeproxy.ReadinessProbeID:   policy.Audit,
	}
	// The released policies' defaults are a contract; a new policy's
	// default comes from its descriptor (TestDefaultFollowsRegistry).
	got := config.Default().Modes()
	for id, mode := range want {
		if got[id] != mode {
			t.Errorf("default mode of %s = %q, want %q", id, got[id], mode)
		}
	}
}

// What Default marshals to is a file that Parse reads back to Default: the
// tests and the chart write configurations this way.
func TestMarshalRoundTrip(t *testing.T) {
	want := config.Default()
	want.Policies[hostnetwork.ID].Settings.(*hostnetwork.Settings).Port = 6443
	want.Policies[kubevip.ID].Mode = policy.Disabled
	data, err := yaml.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := config.Parse(data)
	if err != nil {
		t.Fatalf("Parse(Marshal(config)): %v\n%s", err, data)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s\n%s", diff, data)
	}
}

// Every policy of the registry has an entry in the defaults, in its
// descriptor's default mode, and builds into the engine.
func TestDefaultFollowsRegistry(t *testing.T) {
	c := config.Default()
	if len(c.Policies) != len(registry.Policies) {
		t.Errorf("%d policies configured, %d registered", len(c.Policies), len(registry.Policies))
	}
	for _, d := range registry.Policies {
		if p := c.Policies[d.ID]; p == nil || p.Mode != d.DefaultMode || (p.Settings == nil) != (d.DefaultSettings == nil) {
			t.Errorf("%s: configured %+v, descriptor default mode %s", d.ID, p, d.DefaultMode)
		}
	}
	e, err := c.Engine()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range registry.Policies {
		if e.Mode(d.ID) != d.DefaultMode {
			t.Errorf("engine runs %s in %s, want %s", d.ID, e.Mode(d.ID), d.DefaultMode)
		}
	}
}

func TestRestartRequired(t *testing.T) {
	running := config.Default()
	same := config.Default()
	same.Policies[hostnetwork.ID].Settings.(*hostnetwork.Settings).Port = 6443
	same.Policies[kubeproxy.NodeDeletingID].Mode = policy.Audit
	if errs := same.RestartRequired(running); len(errs) > 0 {
		t.Errorf("hot-reloadable changes need a restart: %v", errs)
	}
	selectors := config.Default()
	selectors.Policies[kubeproxy.NodeDeletingID].Settings.(*kubeproxy.Settings).PodSelectors =
		[]metav1.LabelSelector{{MatchLabels: map[string]string{"app": "kp"}}}
	errs := selectors.RestartRequired(running)
	if len(errs) != 1 || errs[0].Field != "policies.kube-proxy-node-deleting.podSelectors" {
		t.Errorf("a podSelectors change: %v, want one error on policies.kube-proxy-node-deleting.podSelectors", errs)
	}
	listed := config.Default()
	listed.EndpointConfigMaps = append(listed.EndpointConfigMaps, "kube-system/api-endpoint")
	if errs := listed.RestartRequired(running); len(errs) != 1 || errs[0].Field != "endpointConfigMaps" {
		t.Errorf("an endpointConfigMaps change: %v, want one error on endpointConfigMaps", errs)
	}
}
