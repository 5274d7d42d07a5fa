// Package config holds the policy configuration file: its versioned shape,
// built-in defaults, strict decoding and validation.
//
//	apiVersion: endpoint-policy.io/v1alpha1
//	kind: PolicyConfiguration
//	mode: Enforce
//	policies:
//	  host-network-endpoint:
//	    mode: Enforce
//	    host: localhost
//	    port: 7443
//	    override: IPLiterals
//	  apiserver-probe-host:
//	    mode: Audit
//	  apiserver-advertise-address:
//	    mode: Enforce
//	  kube-vip-ipvs-backends:
//	    mode: Enforce
//	  kube-proxy-node-deleting:
//	    mode: Enforce
//	    podSelectors:
//	      - matchLabels: {k8s-app: kube-proxy}
//	      - matchLabels: {component: kube-proxy}
//	      - matchLabels: {app: kubernetes, role: proxy}
//	  kube-proxy-readiness-probe:
//	    mode: Audit
//	audit:
//	  interval: 5m
//	  maxReportResults: 100
//	  reportAPI: Auto
//	endpointConfigMaps:
//	  - kube-system/cilium-config
//	  - calico-system/kubernetes-services-endpoint
//	exemptions:
//	  - policies: [kube-vip-ipvs-backends]
//	    namespace: kube-system
//	    kinds: [DaemonSet]
//	    names: [kube-vip]
//	    reason: upgrade to v0.8.10 in change CHG-4711
//	    expires: "2026-12-20T00:00:00Z"
//
// Every field is optional except apiVersion and kind; what is left out keeps
// its built-in default. Unknown fields, unknown policy IDs and invalid values
// are errors that name the field.
package config

import (
	"encoding/json"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/registry"
)

const (
	// APIVersion and Kind identify the configuration file's format.
	APIVersion = "endpoint-policy.io/v1alpha1"
	Kind       = "PolicyConfiguration"
)

// PolicyConfiguration is the configuration file.
type PolicyConfiguration struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// Mode is the global mode: Enforce (each policy runs in its own mode) or
	// Audit (every enabled policy runs in Audit).
	Mode     policy.Mode `json:"mode,omitempty"`
	Policies Policies    `json:"policies,omitempty"`
	// Audit configures the background audit.
	Audit Audit `json:"audit,omitzero"`
	// EndpointConfigMaps are the ConfigMaps, "namespace/name", that may
	// carry the API endpoint for hostNetwork pods and that the server may
	// read (Cilium's k8sServiceHostRef and cilium-config, Calico's
	// kubernetes-services-endpoint): references to them are resolved and
	// judged, references elsewhere are reported as not judged. The chart
	// grants get, list and watch on exactly these. Read at start: changing
	// it takes a restart.
	EndpointConfigMaps []string `json:"endpointConfigMaps"`
	// Exemptions let policies' findings on the objects they match stand,
	// each for a reason and until its expiry (exemptions.go).
	Exemptions []Exemption `json:"exemptions,omitempty"`
}

// DefaultEndpointConfigMaps are endpointConfigMaps' default: where Calico
// (the operator's tigera-operator and calico-system, a manifest install's
// kube-system) and Cilium (cilium-config) keep the API endpoint.
var DefaultEndpointConfigMaps = []string{
	"calico-system/kubernetes-services-endpoint",
	"kube-system/kubernetes-services-endpoint",
	"tigera-operator/kubernetes-services-endpoint",
	"kube-system/cilium-config",
}

// EndpointConfigMapNames returns EndpointConfigMaps as names; c must be
// valid.
func (c *PolicyConfiguration) EndpointConfigMapNames() []types.NamespacedName {
	out := make([]types.NamespacedName, 0, len(c.EndpointConfigMaps))
	for _, v := range c.EndpointConfigMaps {
		ns, name, _ := strings.Cut(v, "/")
		out = append(out, types.NamespacedName{Namespace: ns, Name: name})
	}
	return out
}

// Audit configures the background audit of the objects in the cluster.
type Audit struct {
	// Interval is how often every object is evaluated again, besides on
	// start and on every change.
	Interval metav1.Duration `json:"interval,omitzero"`
	// MaxReportResults caps the results listed in one PolicyReport; the
	// report's summary still counts every result.
	MaxReportResults int `json:"maxReportResults,omitempty"`
	// ReportAPI is the report API the audit writes: Auto (each of
	// wgpolicyk8s.io and openreports.io whose CRDs the cluster serves, both
	// when both), wgpolicyk8s.io or openreports.io.
	ReportAPI ReportAPI `json:"reportAPI,omitempty"`
}

// ReportAPI names the API of the audit's reports.
type ReportAPI string

const (
	// ReportAPIAuto writes one report API: openreports.io where the cluster
	// serves it, else wgpolicyk8s.io (never both: a reader of both, such as
	// Policy Reporter, would list every result twice).
	ReportAPIAuto ReportAPI = "Auto"
	// ReportAPIWGPolicy is wgpolicyk8s.io/v1alpha2 PolicyReport and
	// ClusterPolicyReport (Kyverno, Policy Reporter).
	ReportAPIWGPolicy ReportAPI = "wgpolicyk8s.io"
	// ReportAPIOpenReports is openreports.io/v1alpha1 Report and
	// ClusterReport (Kyverno since 1.15 behind a flag, Policy Reporter
	// since 3.2).
	ReportAPIOpenReports ReportAPI = "openreports.io"
)

const (
	// DefaultAuditInterval is audit.interval's default.
	DefaultAuditInterval = 5 * time.Minute
	// DefaultMaxReportResults is audit.maxReportResults' default.
	DefaultMaxReportResults = 100
	// MaxReportResultsLimit bounds audit.maxReportResults: with messages
	// capped at 1 KiB, a report stays far below etcd's object size limit.
	MaxReportResultsLimit = 500
)

// Policies holds each policy's configuration, keyed by policy ID: one entry
// per policy of the registry.
type Policies map[policy.ID]*Policy

// Policy is one policy's configuration: policies.<id> in the file, its mode
// next to its settings.
type Policy struct {
	Mode policy.Mode
	// Settings are the policy's settings besides its mode (the type its
	// descriptor's DefaultSettings returns), nil for a policy that has none.
	Settings policy.Settings
}

// MarshalJSON writes the policy as the file holds it: mode next to the
// settings' fields.
func (p Policy) MarshalJSON() ([]byte, error) {
	fields := map[string]json.RawMessage{}
	if p.Settings != nil {
		data, err := json.Marshal(p.Settings)
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(data, &fields); err != nil {
			return nil, err
		}
	}
	if p.Mode != "" {
		mode, err := json.Marshal(p.Mode)
		if err != nil {
			return nil, err
		}
		fields["mode"] = mode
	}
	return json.Marshal(fields)
}

// Default returns the built-in configuration, used when no file is given and
// as the base that a file's fields override: each policy of the registry in
// its default mode with its default settings.
func Default() *PolicyConfiguration {
	policies := make(Policies, len(registry.Policies))
	for _, d := range registry.Policies {
		p := &Policy{Mode: d.DefaultMode}
		if d.DefaultSettings != nil {
			p.Settings = d.DefaultSettings()
		}
		policies[d.ID] = p
	}
	return &PolicyConfiguration{
		APIVersion: APIVersion,
		Kind:       Kind,
		Mode:       policy.Enforce,
		Policies:   policies,
		Audit:      Audit{Interval: metav1.Duration{Duration: DefaultAuditInterval}, MaxReportResults: DefaultMaxReportResults, ReportAPI: ReportAPIAuto},

		EndpointConfigMaps: slices.Clone(DefaultEndpointConfigMaps),
	}
}
