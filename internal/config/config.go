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
//
// Every field is optional except apiVersion and kind; what is left out keeps
// its built-in default. Unknown fields, unknown policy IDs and invalid values
// are errors that name the field.
package config

import (
	"errors"
	"fmt"

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
}

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
