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
//	  kube-proxy-readiness-probe:
//	    mode: Audit
//	audit:
//	  interval: 5m
//	  maxReportResults: 100
//
// Every field is optional except apiVersion and kind; what is left out keeps
// its built-in default. Unknown fields, unknown policy IDs and invalid values
// are errors that name the field.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/apiserver"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/kubeproxy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/kubevip"
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
}

// Audit configures the background audit of the objects in the cluster.
type Audit struct {
	// Interval is how often every object is evaluated again, besides on
	// start and on every change.
	Interval metav1.Duration `json:"interval,omitzero"`
	// MaxReportResults caps the results listed in one PolicyReport; the
	// report's summary still counts every result.
	MaxReportResults int `json:"maxReportResults,omitempty"`
}

const (
	// DefaultAuditInterval is audit.interval's default.
	DefaultAuditInterval = 5 * time.Minute
	// DefaultMaxReportResults is audit.maxReportResults' default.
	DefaultMaxReportResults = 100
	// MaxReportResultsLimit bounds audit.maxReportResults: with messages
	// capped at 1 KiB, a report stays far below etcd's object size limit.
	MaxReportResultsLimit = 500
)

// Policies holds each policy's settings, keyed by policy ID.
type Policies struct {
	HostNetworkEndpoint       HostNetworkEndpoint   `json:"host-network-endpoint,omitzero"`
	APIServerProbeHost        PolicyMode            `json:"apiserver-probe-host,omitzero"`
	APIServerAdvertiseAddress PolicyMode            `json:"apiserver-advertise-address,omitzero"`
	KubeVIPIPVSBackends       PolicyMode            `json:"kube-vip-ipvs-backends,omitzero"`
	KubeProxyNodeDeleting     KubeProxyNodeDeleting `json:"kube-proxy-node-deleting,omitzero"`
	KubeProxyReadinessProbe   PolicyMode            `json:"kube-proxy-readiness-probe,omitzero"`
}

// PolicyMode configures a policy that has no settings besides its mode.
type PolicyMode struct {
	Mode policy.Mode `json:"mode,omitempty"`
}

// HostNetworkEndpoint configures the host-network-endpoint policy.
type HostNetworkEndpoint struct {
	Mode     policy.Mode          `json:"mode,omitempty"`
	Host     string               `json:"host,omitempty"`
	Port     int32                `json:"port,omitempty"`
	Override hostnetwork.Override `json:"override,omitempty"`
}

// Settings returns the rule settings.
func (h HostNetworkEndpoint) Settings() hostnetwork.Settings {
	return hostnetwork.Settings{Host: h.Host, Port: h.Port, Override: h.Override}
}

// KubeProxyNodeDeleting configures the kube-proxy-node-deleting policy.
type KubeProxyNodeDeleting struct {
	Mode policy.Mode `json:"mode,omitempty"`
	// PodSelectors select the kube-proxy pods; a pod is selected when any
	// selector matches. A file that sets the list replaces it whole. The
	// controller's pod cache is built from it at start, so a change takes a
	// restart (a reload that changes it is refused).
	PodSelectors []metav1.LabelSelector `json:"podSelectors,omitempty"`
}

// Settings returns the rule settings.
func (k KubeProxyNodeDeleting) Settings() kubeproxy.Settings {
	return kubeproxy.Settings{PodSelectors: k.PodSelectors}
}

// Default returns the built-in configuration, used when no file is given and
// as the base that a file's fields override.
func Default() *PolicyConfiguration {
	hn := hostnetwork.DefaultSettings()
	return &PolicyConfiguration{
		APIVersion: APIVersion,
		Kind:       Kind,
		Mode:       policy.Enforce,
		Policies: Policies{
			HostNetworkEndpoint: HostNetworkEndpoint{Mode: policy.Enforce, Host: hn.Host, Port: hn.Port, Override: hn.Override},
			// kubeadm itself pins the probes to the node IP, which is fine
			// with static addresses: users on DHCP switch this to Enforce.
			APIServerProbeHost:        PolicyMode{Mode: policy.Audit},
			APIServerAdvertiseAddress: PolicyMode{Mode: policy.Enforce},
			KubeVIPIPVSBackends:       PolicyMode{Mode: policy.Enforce},
			KubeProxyNodeDeleting:     KubeProxyNodeDeleting{Mode: policy.Enforce, PodSelectors: kubeproxy.DefaultPodSelectors()},
			// A /healthz readiness probe is a monitoring problem, not an
			// outage: report it, do not block the DaemonSet.
			KubeProxyReadinessProbe: PolicyMode{Mode: policy.Audit},
		},
		Audit: Audit{Interval: metav1.Duration{Duration: DefaultAuditInterval}, MaxReportResults: DefaultMaxReportResults},
	}
}

// Parse decodes a configuration file (YAML or JSON) strictly onto the
// defaults and validates it. Errors name the offending field.
func Parse(data []byte) (*PolicyConfiguration, error) {
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	// Fields the file leaves out keep their defaults: decoding merges into an
	// existing struct, and an explicit empty value ("", 0) still overwrites,
	// so that validation can reject it.
	cfg := Default()
	cfg.APIVersion, cfg.Kind = "", ""
	// A list in the file replaces the default list: decoding into the
	// default's elements would merge their matchLabels into the file's.
	cfg.Policies.KubeProxyNodeDeleting.PodSelectors = nil
	if err := checkDurations(js); err != nil {
		return nil, err
	}
	strictErrs, err := sigsjson.UnmarshalStrict(js, cfg)
	if err != nil {
		return nil, fmt.Errorf("cannot decode: %w", err)
	}
	if len(strictErrs) > 0 {
		// Strict errors carry their own path: unknown field "policies.foo".
		return nil, errors.Join(strictErrs...)
	}
	if cfg.Policies.KubeProxyNodeDeleting.PodSelectors == nil {
		cfg.Policies.KubeProxyNodeDeleting.PodSelectors = kubeproxy.DefaultPodSelectors()
	}
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, errs.ToAggregate()
	}
	return cfg, nil
}

// checkDurations reports a duration that does not parse with its field path:
// the decoder's own error does not say which field it was.
func checkDurations(js []byte) error {
	var doc struct {
		Audit struct {
			Interval any `json:"interval"`
		} `json:"audit"`
	}
	if json.Unmarshal(js, &doc) != nil || doc.Audit.Interval == nil {
		return nil // the decoder reports what is wrong with the shape
	}
	v, ok := doc.Audit.Interval.(string)
	if _, err := time.ParseDuration(v); !ok || err != nil {
		return field.Invalid(field.NewPath("audit", "interval"), doc.Audit.Interval, "must be a duration such as 5m or 30s")
	}
	return nil
}

// Validate returns every problem with c, with field paths.
func (c *PolicyConfiguration) Validate() field.ErrorList {
	var errs field.ErrorList
	if c.APIVersion != APIVersion {
		errs = append(errs, field.NotSupported(field.NewPath("apiVersion"), c.APIVersion, []string{APIVersion}))
	}
	if c.Kind != Kind {
		errs = append(errs, field.NotSupported(field.NewPath("kind"), c.Kind, []string{Kind}))
	}
	if c.Mode != policy.Enforce && c.Mode != policy.Audit {
		errs = append(errs, field.NotSupported(field.NewPath("mode"), c.Mode, []policy.Mode{policy.Enforce, policy.Audit}))
	}
	p := field.NewPath("policies")
	hn := p.Child(string(hostnetwork.ID))
	errs = append(errs, validateMode(hn.Child("mode"), c.Policies.HostNetworkEndpoint.Mode)...)
	errs = append(errs, c.Policies.HostNetworkEndpoint.Settings().Validate(hn)...)
	errs = append(errs, validateMode(p.Child(string(apiserver.ProbeHostID), "mode"), c.Policies.APIServerProbeHost.Mode)...)
	errs = append(errs, validateMode(p.Child(string(apiserver.AdvertiseAddressID), "mode"), c.Policies.APIServerAdvertiseAddress.Mode)...)
	errs = append(errs, validateMode(p.Child(string(kubevip.ID), "mode"), c.Policies.KubeVIPIPVSBackends.Mode)...)
	kp := p.Child(string(kubeproxy.NodeDeletingID))
	errs = append(errs, validateMode(kp.Child("mode"), c.Policies.KubeProxyNodeDeleting.Mode)...)
	errs = append(errs, c.Policies.KubeProxyNodeDeleting.Settings().Validate(kp)...)
	errs = append(errs, validateMode(p.Child(string(kubeproxy.ReadinessProbeID), "mode"), c.Policies.KubeProxyReadinessProbe.Mode)...)
	a := field.NewPath("audit")
	if c.Audit.Interval.Duration < time.Second {
		errs = append(errs, field.Invalid(a.Child("interval"), c.Audit.Interval.Duration.String(), "must be at least 1s"))
	}
	if n := c.Audit.MaxReportResults; n < 1 || n > MaxReportResultsLimit {
		errs = append(errs, field.Invalid(a.Child("maxReportResults"), n, fmt.Sprintf("must be between 1 and %d", MaxReportResultsLimit)))
	}
	return errs
}

func validateMode(fldPath *field.Path, m policy.Mode) field.ErrorList {
	if m.Valid() {
		return nil
	}
	return field.ErrorList{field.NotSupported(fldPath, m, []policy.Mode{policy.Enforce, policy.Audit, policy.Disabled})}
}

// Modes returns each policy's effective mode: its own, except that a global
// Audit turns Enforce into Audit. Disabled stays Disabled.
func (c *PolicyConfiguration) Modes() map[policy.ID]policy.Mode {
	modes := map[policy.ID]policy.Mode{
		hostnetwork.ID:               c.Policies.HostNetworkEndpoint.Mode,
		apiserver.ProbeHostID:        c.Policies.APIServerProbeHost.Mode,
		apiserver.AdvertiseAddressID: c.Policies.APIServerAdvertiseAddress.Mode,
		kubevip.ID:                   c.Policies.KubeVIPIPVSBackends.Mode,
		kubeproxy.NodeDeletingID:     c.Policies.KubeProxyNodeDeleting.Mode,
		kubeproxy.ReadinessProbeID:   c.Policies.KubeProxyReadinessProbe.Mode,
	}
	if c.Mode == policy.Audit {
		for id, m := range modes {
			if m == policy.Enforce {
				modes[id] = policy.Audit
			}
		}
	}
	return modes
}
