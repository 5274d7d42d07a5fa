package hostnetwork

import (
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

// ID is the policy's stable identifier.
const ID policy.ID = "host-network-endpoint"

const (
	// EnvHost and EnvPort are the two variables client-go's in-cluster
	// configuration reads.
	EnvHost = "KUBERNETES_SERVICE_HOST"
	EnvPort = "KUBERNETES_SERVICE_PORT"

	// EndpointAnnotation records, on a pod this policy changed, the endpoint
	// ("<host>:<port>") its containers were pointed at.
	EndpointAnnotation = "endpoint-policy.io/endpoint"
)

// Override says which existing KUBERNETES_SERVICE_HOST values are rewritten.
type Override string

const (
	// OverrideIPLiterals rewrites a host that is a non-loopback IP literal:
	// an address pinned to one control-plane node. DNS names, loopback and
	// valueFrom and envFrom are left alone. The default.
	OverrideIPLiterals Override = "IPLiterals"
	// OverrideAlways rewrites every value, DNS names, valueFrom and envFrom
	// included.
	OverrideAlways Override = "Always"
	// OverrideNever only adds the variables where the host is absent.
	OverrideNever Override = "Never"
)

// The checks of host-network-endpoint (report results' rule).
const (
	// RuleServiceHostEnv: a container's KUBERNETES_SERVICE_HOST/_PORT to set
	// or rewrite.
	RuleServiceHostEnv = "service-host-env"
	// RuleUnverified: a rewrite held back, the endpoint not verified on the
	// pod's nodes.
	RuleUnverified = "endpoint-unverified"
	// RulePodTemplate: the rewrite a workload's pods will get.
	RulePodTemplate = "pod-template"
	// RuleServiceHostReference: a container's KUBERNETES_SERVICE_HOST that
	// comes from a ConfigMap (valueFrom.configMapKeyRef, envFrom) holding
	// another endpoint than the node-local one, or from a Secret or a
	// ConfigMap the server may not read: reported, never rewritten.
	RuleServiceHostReference = "service-host-reference"
)

// Descriptor describes the policy to the registry.
var Descriptor = policy.Descriptor{
	ID:          ID,
	Effect:      policy.Mutating,
	DefaultMode: policy.Enforce,
	Severity:    policy.SeverityHigh,
	Category:    policy.CategoryAPIEndpoint,
	Summary: "hostNetwork pods get `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT` pointing at the node-local API load balancer " +
		"(`localhost:7443`) instead of a pinned control-plane IP, only where the node agent verified it on the pod's nodes",
	Package:         "internal/policy/hostnetwork",
	DefaultSettings: policy.DefaultsOf(DefaultSettings),
	New:             policy.NewWith(ID, New),
}

// Verification says whether a pod is rewritten only to an endpoint the node
// agents verified on its nodes.
type Verification string

const (
	// VerificationRequired rewrites a pod only to an endpoint verified, by
	// the node agent, on every node the pod can run on. The default.
	VerificationRequired Verification = "Required"
	// VerificationOff rewrites every pod to the configured endpoint,
	// whatever answers there.
	VerificationOff Verification = "Off"
)

// HostAuto as the host makes each node's first verified candidate its
// endpoint.
const HostAuto = "auto"

// Settings configure the rule: policies.host-network-endpoint in the
// configuration file.
type Settings struct {
	// Host and Port are the node-local API load balancer. Host "auto" makes
	// each node's first verified candidate its endpoint; Port is then not
	// used.
	Host string `json:"host"`
	Port int32  `json:"port"`
	// Override selects which existing values are rewritten.
	Override Override `json:"override"`
	// Candidates are the endpoints ("host:port") the node agent checks
	// besides the configured one: the node-local balancers of the
	// distributions people run, so that a failed check can name the one that
	// answers, and host: auto can pick it.
	Candidates []string `json:"candidates"`
	// Verification says whether a rewrite needs the endpoint verified on
	// the pod's nodes.
	Verification Verification `json:"verification"`
	// Preserve are hosts (IP addresses or DNS names) and CIDRs that
	// KUBERNETES_SERVICE_HOST may name and keep, whatever Override says: a
	// kube-vip or keepalived VIP, a cloud load balancer that already fronts
	// every API server.
	Preserve []string `json:"preserve"`
}

// DefaultCandidates are the node-local API endpoints of k0s (NLLB), Talos
// (KubePrism), k3s agents and kubespray workers, in that order.
func DefaultCandidates() []string {
	return []string{"localhost:7443", "127.0.0.1:7445", "127.0.0.1:6444", "localhost:6443"}
}

// DefaultSettings point at k0s' node-local load balancer, verified.
func DefaultSettings() Settings {
	return Settings{
		Host: "localhost", Port: 7443, Override: OverrideIPLiterals,
		Candidates: DefaultCandidates(), Verification: VerificationRequired, Preserve: []string{},
	}
}

// Auto reports whether each node picks its own endpoint (host: auto).
func (s Settings) Auto() bool { return s.Host == HostAuto }

// Endpoint is the configured endpoint, "host:port"; "" under host: auto.
func (s Settings) Endpoint() string {
	if s.Auto() {
		return ""
	}
	return net.JoinHostPort(s.Host, strconv.Itoa(int(s.Port)))
}

// Endpoints are the endpoints the node agent checks, in order: the
// configured one (unless host: auto), then the candidates not already
// listed.
func (s Settings) Endpoints() []string {
	var out []string
	if e := s.Endpoint(); e != "" {
		out = append(out, e)
	}
	for _, c := range s.Candidates {
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

// Validate returns the problems with s, with field paths under fldPath.
func (s Settings) Validate(fldPath *field.Path) field.ErrorList {
	errs := s.validateEndpoint(fldPath)
	switch s.Override {
	case OverrideIPLiterals, OverrideAlways, OverrideNever:
	default:
		errs = append(errs, field.NotSupported(fldPath.Child("override"), s.Override,
			[]Override{OverrideIPLiterals, OverrideAlways, OverrideNever}))
	}
	errs = append(errs, validateCandidates(fldPath.Child("candidates"), s.Candidates)...)
	errs = append(errs, validatePreserve(fldPath.Child("preserve"), s.Preserve)...)
	switch s.Verification {
	case VerificationRequired, VerificationOff:
	default:
		errs = append(errs, field.NotSupported(fldPath.Child("verification"), s.Verification,
			[]Verification{VerificationRequired, VerificationOff}))
	}
	return errs
}

// validateEndpoint checks host and port, or what host: auto needs.
func (s Settings) validateEndpoint(fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	switch {
	case s.Host == "":
		errs = append(errs, field.Required(fldPath.Child("host"), "the node-local API load balancer's host name or IP, or auto"))
	case s.Auto():
		if len(s.Candidates) == 0 {
			errs = append(errs, field.Required(fldPath.Child("candidates"), "host: auto picks each node's endpoint from the candidates"))
		}
		if s.Verification == VerificationOff {
			errs = append(errs, field.Invalid(fldPath.Child("verification"), s.Verification, "host: auto needs the node agents' verification"))
		}
		return errs
	default:
		errs = append(errs, validateHost(fldPath.Child("host"), s.Host)...)
	}
	if s.Port < 1 || s.Port > 65535 {
		errs = append(errs, field.Invalid(fldPath.Child("port"), s.Port, "must be between 1 and 65535, inclusive"))
	}
	return errs
}

// validateCandidates checks each candidate is a distinct host:port.
func validateCandidates(fldPath *field.Path, candidates []string) field.ErrorList {
	var errs field.ErrorList
	seen := map[string]bool{}
	for i, c := range candidates {
		p := fldPath.Index(i)
		host, port, err := net.SplitHostPort(c)
		if err != nil {
			errs = append(errs, field.Invalid(p, c, "must be host:port (an IPv6 address in brackets)"))
			continue
		}
		errs = append(errs, validateHost(p, host)...)
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			errs = append(errs, field.Invalid(p, c, "the port must be between 1 and 65535, inclusive"))
		}
		if seen[c] {
			errs = append(errs, field.Duplicate(p, c))
		}
		seen[c] = true
	}
	return errs
}

// validatePreserve checks each entry is an address, a name or a CIDR.
func validatePreserve(fldPath *field.Path, preserve []string) field.ErrorList {
	var errs field.ErrorList
	for i, v := range preserve {
		p := fldPath.Index(i)
		if strings.Contains(v, "/") {
			if _, err := netip.ParsePrefix(v); err != nil {
				errs = append(errs, field.Invalid(p, v, "must be an IP address, a DNS name or a CIDR (10.0.0.0/24, fd00::/64)"))
			}
			continue
		}
		errs = append(errs, validateHost(p, v)...)
	}
	return errs
}

func validateHost(p *field.Path, host string) field.ErrorList {
	if isIP(host) {
		return nil
	}
	var errs field.ErrorList
	for _, msg := range validation.IsDNS1123Subdomain(host) {
		errs = append(errs, field.Invalid(p, host, "must be an IP address or a DNS name: "+msg))
	}
	return errs
}
