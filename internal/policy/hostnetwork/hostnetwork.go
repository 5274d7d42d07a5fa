// Package hostnetwork implements the host-network-endpoint policy: containers
// of hostNetwork pods reach the API server through the node-local load
// balancer (for example k0s NLLB on localhost:7443) instead of one pinned
// control-plane address.
//
// A hostNetwork pod's in-cluster client reads only KUBERNETES_SERVICE_HOST and
// KUBERNETES_SERVICE_PORT. When they are pinned to one control-plane IP (as
// Cilium's k8sServiceHost does), the component loses the API as soon as that
// one node fails, although the others are healthy (k0s issue #5740).
//
// A rewrite to an endpoint that does not answer, or whose certificate does
// not name the host, would turn that into a cluster-wide outage. With
// verification Required the rule rewrites a pod only to an endpoint that the
// node agent (internal/agent, one Lease per node: lease.go) verified on
// every node the pod can run on (verify.go).
package hostnetwork

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
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

// Descriptor describes the policy to the registry.
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
)

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
	default:
		errs = append(errs, validateHost(fldPath.Child("host"), s.Host)...)
	}
	if !s.Auto() && (s.Port < 1 || s.Port > 65535) {
		errs = append(errs, field.Invalid(fldPath.Child("port"), s.Port, "must be between 1 and 65535, inclusive"))
	}
	switch s.Override {
	case OverrideIPLiterals, OverrideAlways, OverrideNever:
	default:
		errs = append(errs, field.NotSupported(fldPath.Child("override"), s.Override,
			[]Override{OverrideIPLiterals, OverrideAlways, OverrideNever}))
	}
	seen := map[string]bool{}
	for i, c := range s.Candidates {
		p := fldPath.Child("candidates").Index(i)
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
	for i, v := range s.Preserve {
		p := fldPath.Child("preserve").Index(i)
		if strings.Contains(v, "/") {
			if _, err := netip.ParsePrefix(v); err != nil {
				errs = append(errs, field.Invalid(p, v, "must be an IP address, a DNS name or a CIDR (10.0.0.0/24, fd00::/64)"))
			}
			continue
		}
		errs = append(errs, validateHost(p, v)...)
	}
	switch s.Verification {
	case VerificationRequired, VerificationOff:
	default:
		errs = append(errs, field.NotSupported(fldPath.Child("verification"), s.Verification,
			[]Verification{VerificationRequired, VerificationOff}))
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

// Rule is the host-network-endpoint rule.
type Rule struct {
	settings Settings
	fixed    target // the configured endpoint; zero under host: auto
	// preserved are Settings.Preserve parsed: names (lower case) and
	// addresses, and CIDRs.
	preservedHosts    map[string]bool
	preservedPrefixes []netip.Prefix
}

// preserved reports whether host is one of Settings.Preserve.
func (r *Rule) preserved(host string) bool {
	if addr, ok := parseIP(host); ok {
		if r.preservedHosts[addr.Unmap().String()] {
			return true
		}
		for _, p := range r.preservedPrefixes {
			if p.Contains(addr.Unmap()) {
				return true
			}
		}
		return false
	}
	return r.preservedHosts[strings.ToLower(strings.TrimSuffix(host, "."))]
}

// target is an endpoint to point containers at.
type target struct {
	host, port string
	endpoint   string // "<host>:<port>" for EndpointAnnotation
}

func targetOf(endpoint string) (target, error) {
	host, port, err := net.SplitHostPort(endpoint)
	if err != nil {
		return target{}, err
	}
	return target{host: host, port: port, endpoint: endpoint}, nil
}

var _ policy.Rule = (*Rule)(nil)

// New returns the rule for s, or an error when s is not valid.
func New(s Settings) (*Rule, error) {
	if errs := s.Validate(field.NewPath(string(ID))); len(errs) > 0 {
		return nil, errs.ToAggregate()
	}
	r := &Rule{settings: s, preservedHosts: map[string]bool{}}
	for _, v := range s.Preserve {
		if p, err := netip.ParsePrefix(v); err == nil {
			r.preservedPrefixes = append(r.preservedPrefixes, p.Masked())
		} else if addr, ok := parseIP(v); ok {
			r.preservedHosts[addr.Unmap().String()] = true
		} else {
			r.preservedHosts[strings.ToLower(strings.TrimSuffix(v, "."))] = true
		}
	}
	if !s.Auto() {
		r.fixed = target{host: s.Host, port: strconv.Itoa(int(s.Port)), endpoint: s.Endpoint()}
	}
	return r, nil
}

// ID implements policy.Rule.
func (r *Rule) ID() policy.ID { return ID }

// Effect implements policy.Rule: the rule mutates.
func (r *Rule) Effect() policy.Effect { return policy.Mutating }

// Evaluate implements policy.Rule. It applies to hostNetwork pods that are
// neither excluded nor mirror pods, and returns one finding per container
// whose endpoint it would change. With verification Required, the change is
// made only to an endpoint the node agents verified on every node the pod
// can run on; otherwise the one finding is Unverified and says why. A
// front-end without the agents' reports (check) gets the change, with a
// message that admission applies it only where verified.
func (r *Rule) Evaluate(t policy.Target) ([]policy.Finding, bool) {
	pod, ok := t.Object.(*corev1.Pod)
	if !ok {
		return r.template(t)
	}
	if !pod.Spec.HostNetwork || policy.Excluded(pod, t.NamespaceLabels) || policy.IsMirrorPod(pod) {
		return nil, false
	}
	if r.settings.Verification == VerificationOff {
		return r.findings(pod, r.fixed), true
	}
	// Under host: auto the endpoint is not known until the nodes are: first
	// see whether any container would change at all.
	probe := r.fixed
	if r.settings.Auto() {
		probe = target{host: HostAuto, port: "0", endpoint: HostAuto}
	}
	findings := r.findings(pod, probe)
	if len(findings) == 0 {
		return nil, true
	}
	v, online := t.Cluster.(Verifications)
	if !online {
		return r.offline(findings), true
	}
	endpoint, warning := verify(pod, v, r.fixed.endpoint)
	if warning != "" {
		return []policy.Finding{{Rule: RuleUnverified, Message: warning, Unverified: true}}, true
	}
	if endpoint == r.fixed.endpoint {
		return findings, true
	}
	tgt, err := targetOf(endpoint)
	if err != nil {
		return []policy.Finding{{Rule: RuleUnverified, Message: fmt.Sprintf("not rewritten: the verified endpoint %q is not host:port", endpoint), Unverified: true}}, true
	}
	return r.findings(pod, tgt), true
}

// template reports, on a workload whose pod template is hostNetwork, what
// the pods it creates will get at admission: Template findings, never a
// patch of the workload. A Helm-rendered Cilium install with its operator
// pinned to a control-plane IP (k0s #5740) is seen before it ships.
func (r *Rule) template(t policy.Target) ([]policy.Finding, bool) {
	spec, specPath, ok := policy.PodSpecOf(t.Object)
	if !ok || !spec.HostNetwork || policy.Excluded(t.Object, t.NamespaceLabels) {
		return nil, false
	}
	probe := r.fixed
	if r.settings.Auto() {
		probe = target{host: HostAuto, port: "0", endpoint: HostAuto}
	}
	findings := r.specFindings(spec, specPath, probe)
	if len(findings) == 0 {
		return nil, true
	}
	if r.settings.Auto() {
		// Which endpoint is not known before the nodes are: unverified, as
		// a pod is offline.
		return []policy.Finding{{Field: specPath, Rule: RulePodTemplate, Template: true, Unverified: true,
			Message: "pods created from this template will be rewritten: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT pointed at the " +
				"endpoint the node agent verified on their node (host: auto)"}}, true
	}
	where := ""
	if r.settings.Verification == VerificationRequired {
		where = ", where the node agent verified " + r.fixed.endpoint + " on their node"
	}
	out := make([]policy.Finding, len(findings))
	for i, f := range findings {
		out[i] = policy.Finding{Field: f.Field, Rule: RulePodTemplate, Template: true,
			Message: "pods created from this template will be rewritten" + where + ": " + f.Message}
	}
	return out, true
}

// offline words findings for a front-end that has no agent reports.
func (r *Rule) offline(findings []policy.Finding) []policy.Finding {
	if r.settings.Auto() {
		return []policy.Finding{{
			Rule: RuleUnverified,
			Message: "point KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT at the endpoint the node agent verified on the pod's node " +
				"(host: auto): admission rewrites the pod only where one endpoint is verified on every node it can run on",
			Unverified: true,
		}}
	}
	for i := range findings {
		findings[i].Message += "; admission applies it only where the node agent verified " + r.fixed.endpoint + " on the pod's node"
	}
	return findings
}

// findings returns one finding per container that must change to point at
// t.
func (r *Rule) findings(pod *corev1.Pod, t target) []policy.Finding {
	return r.specFindings(&pod.Spec, field.NewPath("spec"), t)
}

// specFindings returns one finding per container of spec, at specPath,
// that must change to point at t.
func (r *Rule) specFindings(spec *corev1.PodSpec, specPath *field.Path, t target) []policy.Finding {
	var findings []policy.Finding
	for i := range spec.InitContainers {
		if f, ok := r.container(t, &spec.InitContainers[i], specPath, "initContainers", i, "init container"); ok {
			findings = append(findings, f)
		}
	}
	for i := range spec.Containers {
		if f, ok := r.container(t, &spec.Containers[i], specPath, "containers", i, "container"); ok {
			findings = append(findings, f)
		}
	}
	return findings
}

// envState is what a container says about one variable. Like the kubelet,
// the last entry of a name wins; all entries of that name are rewritten
// together so that no stale duplicate remains.
type envState struct {
	indexes   []int // every entry with this name, in order
	value     string
	valueFrom bool
	// envFrom names the container's envFrom sources that may set the
	// variable, when env does not (an env entry overrides envFrom).
	envFrom string
}

func (e envState) present() bool { return len(e.indexes) > 0 }

// fromEnvFrom reports whether only envFrom may set the variable.
func (e envState) fromEnvFrom() bool { return !e.present() && e.envFrom != "" }

func (e envState) String() string {
	switch {
	case e.fromEnvFrom():
		return "possibly set by envFrom " + e.envFrom
	case !e.present():
		// The kubelet injects the variable at run time; the spec has none.
		return "not set in the spec"
	case e.valueFrom:
		return "valueFrom"
	default:
		return strconv.Quote(e.value)
	}
}

// envFromSources describes c's envFrom sources that may produce name: a
// ConfigMap or Secret whose prefix is a prefix of name (Calico's manifest
// gives calico-node KUBERNETES_SERVICE_HOST and _PORT through
// `envFrom: configMapRef: kubernetes-services-endpoint`).
func envFromSources(c *corev1.Container, name string) string {
	var out []string
	for _, src := range c.EnvFrom {
		if !strings.HasPrefix(name, src.Prefix) {
			continue
		}
		switch {
		case src.ConfigMapRef != nil:
			out = append(out, fmt.Sprintf("configMapRef %q", src.ConfigMapRef.Name))
		case src.SecretRef != nil:
			out = append(out, fmt.Sprintf("secretRef %q", src.SecretRef.Name))
		}
	}
	return strings.Join(out, ", ")
}

// container decides what to change in one container and returns the finding,
// with the minimal patch, when anything changes.
func (r *Rule) container(t target, c *corev1.Container, specPath *field.Path, list string, index int, kind string) (policy.Finding, bool) {
	var host, port envState
	for i := range c.Env {
		var s *envState
		switch c.Env[i].Name {
		case EnvHost:
			s = &host
		case EnvPort:
			s = &port
		default:
			continue
		}
		s.indexes = append(s.indexes, i)
		s.value, s.valueFrom = c.Env[i].Value, c.Env[i].ValueFrom != nil
	}
	host.envFrom, port.envFrom = envFromSources(c, EnvHost), envFromSources(c, EnvPort)

	setHost, hostIsOurs := r.decideHost(t, host)
	// The port follows the host: a host we set gets our port, or the pair
	// points nowhere. A host that already names ours gets our port where it
	// has none (the kubelet would fill in the Service's 443); a port the user
	// chose beside it is theirs unless Override is Always. A host we leave
	// alone keeps its port.
	portDiffers := !port.present() || port.valueFrom || port.value != t.port
	var setPort bool
	switch {
	case setHost:
		setPort = portDiffers
	case hostIsOurs:
		setPort = (!port.present() && !port.fromEnvFrom()) || (r.settings.Override == OverrideAlways && portDiffers)
	}
	if !setHost && !setPort {
		return policy.Finding{}, false
	}

	envPath := "/spec/" + list + "/" + strconv.Itoa(index) + "/env"
	var ops []jsonpatch.Operation
	var added []map[string]string // new entries, in the API's JSON shape
	var changes []string
	apply := func(name, value string, s envState) {
		changes = append(changes, fmt.Sprintf("%s=%s (was %s)", name, value, s))
		if !s.present() {
			added = append(added, map[string]string{"name": name, "value": value})
			return
		}
		for _, i := range s.indexes {
			if e := c.Env[i]; e.ValueFrom == nil && e.Value == value {
				continue
			}
			ops = append(ops, jsonpatch.Operation{
				Operation: "replace",
				Path:      envPath + "/" + strconv.Itoa(i),
				Value:     map[string]string{"name": name, "value": value},
			})
		}
	}
	if setHost {
		apply(EnvHost, t.host, host)
	}
	if setPort {
		apply(EnvPort, t.port, port)
	}
	switch {
	case len(added) == 0:
	case len(c.Env) == 0:
		// No env list yet (or an empty one): create it in one operation.
		ops = append(ops, jsonpatch.Operation{Operation: "add", Path: envPath, Value: added})
	default:
		for _, e := range added {
			ops = append(ops, jsonpatch.Operation{Operation: "add", Path: envPath + "/-", Value: e})
		}
	}

	return policy.Finding{
		Field:       specPath.Child(list).Index(index).Child("env"),
		Rule:        RuleServiceHostEnv,
		Message:     fmt.Sprintf("set %s in %s %q", strings.Join(changes, ", "), kind, c.Name),
		Patch:       ops,
		Annotations: map[string]string{EndpointAnnotation: t.endpoint},
	}, true
}

// decideHost returns whether KUBERNETES_SERVICE_HOST must be set, and whether
// it already names the configured host.
func (r *Rule) decideHost(t target, host envState) (set, ours bool) {
	switch {
	case host.fromEnvFrom():
		// Like valueFrom: set where the spec is read, not in it.
		return r.settings.Override == OverrideAlways, false
	case !host.present():
		return true, false
	case host.valueFrom:
		return r.settings.Override == OverrideAlways, false
	case host.value == t.host:
		return false, true
	case r.preserved(host.value):
		// An address the user trusts to reach every API server.
		return false, false
	case host.value == "":
		// An empty host breaks in-cluster configuration outright; setting it
		// is adding it.
		return true, false
	case isPinnedIP(host.value):
		return r.settings.Override != OverrideNever, false
	default:
		// A DNS name or a loopback address: already a deliberate choice.
		return r.settings.Override == OverrideAlways, false
	}
}

// parseIP parses an IP literal, IPv6 with or without brackets.
func parseIP(s string) (netip.Addr, bool) {
	addr, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"))
	return addr, err == nil
}

func isIP(s string) bool {
	_, ok := parseIP(s)
	return ok
}

// isPinnedIP reports whether s is an IP literal that names one machine other
// than this one: any IPv4 or IPv6 address except loopback.
func isPinnedIP(s string) bool {
	addr, ok := parseIP(s)
	return ok && !addr.IsLoopback()
}
