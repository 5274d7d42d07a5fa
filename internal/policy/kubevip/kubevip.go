// Package kubevip implements the kube-vip-ipvs-backends policy: kube-vip
// releases with known control-plane load-balancing bugs, described as data
// in an advisory table.
package kubevip

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/util/version"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

// ID is the policy's stable identifier.
const ID policy.ID = "kube-vip-ipvs-backends"

// Descriptor describes the policy to the registry. It has no settings: the
// advisory table is data in the code, reviewed with it.
var Descriptor = policy.Descriptor{
	ID:          ID,
	Effect:      policy.Validating,
	DefaultMode: policy.Enforce,
	Severity:    policy.SeverityHigh,
	Category:    policy.CategoryControlPlane,
	Summary: "kube-vip releases with known outage bugs, from an advisory table: v0.8.0–v0.8.9 with `cp_enable` and " +
		"`lb_enable` (IPVS backends never re-added, kube-vip #875); v1.0.1–v1.0.3 with `svc_enable` (services VIP lost, " +
		"kube-vip #1377); v1.2.2 in ARP or BGP control-plane mode with admin.conf mounted and no `kubernetes_addr` " +
		"(leader election through its own VIP, #1654) or a DNS-named VIP (#1655); v1.1.0–v1.2.0 with IPVS masquerade on " +
		"the image without iptables (#1590); v1.2.0+ with `svc_enable` and no `svc_election` (#1747, no fix yet); any " +
		"kube-vip image, `kube-vip-iptables` and Rancher's mirrors included",
	Package: "internal/policy/kubevip",
	New:     func(policy.Settings) (policy.Rule, error) { return New(Advisories) },
}

// Advisory is one known kube-vip bug: the releases it affects and the
// configurations that trigger it.
type Advisory struct {
	// Reference names the upstream report, e.g. "kube-vip #875"; Link is
	// its address.
	Reference, Link string
	// Introduced is the first affected release, Fixed the first release
	// with the fix; releases in [Introduced, Fixed) are affected. Fixed is
	// "" while no release fixes it: every release from Introduced is, and
	// LastUnaffected names the one to stay on.
	Introduced, Fixed, LastUnaffected string
	// When are the configurations that trigger the bug: it applies when
	// every condition of one of them holds.
	When [][]Condition
	// Problem says what goes wrong; Fix what to do about it.
	Problem, Fix string
}

// on is a shorthand for the conditions that env vars are true.
func on(names ...string) []Condition {
	out := make([]Condition, len(names))
	for i, n := range names {
		out[i] = Condition{Env: n, Op: True}
	}
	return out
}

// and joins conditions.
func and(groups ...[]Condition) []Condition {
	var out []Condition
	for _, g := range groups {
		out = append(out, g...)
	}
	return out
}

// Advisories is the advisory table. The next advisory is a row here; each
// row's conditions come from the fix's code (the affected and fixed tags).
var Advisories = []Advisory{{
	Reference:  "kube-vip #875",
	Link:       "https://github.com/kube-vip/kube-vip/issues/875",
	Introduced: "0.8.0",
	Fixed:      "0.8.10", // and 0.9.0 (PR #1091)
	When:       [][]Condition{on("cp_enable", "lb_enable")},
	Problem: "its IPVS control-plane load balancer never re-adds a backend that was removed after a failed health check, " +
		"so an API server that recovers gets no traffic until kube-vip is restarted",
	Fix: "upgrade to v0.8.10, v0.9.0 or later, or set lb_enable=false",
}, {
	Reference:  "kube-vip #1377",
	Link:       "https://github.com/kube-vip/kube-vip/issues/1377",
	Introduced: "1.0.1",
	Fixed:      "1.0.4",
	When:       [][]Condition{on("svc_enable")},
	Problem: "its leader election for LoadBalancer services can stall after kube-vip restarts (a rollout, a chart upgrade), " +
		"and then no node holds the service VIP: the service is unreachable",
	Fix: "upgrade to v1.0.4 or later, or stay on v1.0.0",
}, {
	// The client kube-vip builds for its own leader election uses
	// k8s_config_file (default /etc/kubernetes/admin.conf) when it exists
	// and kubernetes_addr is empty: the server there is the VIP itself.
	// Routing-table mode and kubernetes_addr are not affected; cp_detect
	// does not help (PR #1658).
	Reference:  "kube-vip #1654",
	Link:       "https://github.com/kube-vip/kube-vip/issues/1654",
	Introduced: "1.2.2",
	Fixed:      "1.2.3",
	When: [][]Condition{
		and(on("cp_enable", "vip_arp", "vip_leaderelection"), adminConf),
		and(on("cp_enable", "bgp_enable", "vip_leaderelection"), adminConf),
	},
	Problem: "its leader election reaches the API server through the kubeconfig, whose server is the VIP kube-vip has not raised " +
		"yet: on a cold start (every control plane restarted, a power-on, kubeadm init) no leader is ever elected and the " +
		"cluster's API endpoint stays down",
	Fix: "upgrade to v1.2.3 or later, or set kubernetes_addr to the local API server (e.g. 127.0.0.1:6443)",
}, {
	Reference:  "kube-vip #1655",
	Link:       "https://github.com/kube-vip/kube-vip/issues/1655",
	Introduced: "1.2.2",
	Fixed:      "1.2.3", // PR #1667
	When: [][]Condition{
		{{Env: "cp_enable", Op: True}, {Env: "address", Op: HostName}},
		{{Env: "cp_enable", Op: True}, {Env: "address", Op: Unset}, {Env: "vip_address", Op: HostName}},
	},
	Problem: "with the control-plane VIP given as a DNS name, the VIP disappears about 60 s after the election while the leader " +
		"keeps its lease, so no other node takes over and the API endpoint is down",
	Fix: "upgrade to v1.2.3 or later, or give the VIP as an IP address",
}, {
	// StartVipService deadlocks when adding the VIP or the IPVS balancer
	// fails: IPVS masquerade needs iptables, which the kube-vip image
	// (not kube-vip-iptables) lacks for IPv4 (PR #1594).
	Reference:  "kube-vip #1590",
	Link:       "https://github.com/kube-vip/kube-vip/issues/1590",
	Introduced: "1.1.0",
	Fixed:      "1.2.1",
	When: [][]Condition{
		and(on("cp_enable", "lb_enable"), []Condition{{Env: "lb_fwdmethod", Op: Equals, Value: "masquerade"}, {Op: Image, Value: "kube-vip"},
			{Env: "address", Op: IPv4}}),
		and(on("cp_enable", "lb_enable"), []Condition{{Env: "lb_fwdmethod", Op: Equals, Value: "masquerade"}, {Op: Image, Value: "kube-vip"},
			{Env: "address", Op: Unset}, {Env: "vip_address", Op: IPv4}}),
	},
	Problem: "adding the IPVS masquerade balancer fails without iptables, which this image lacks, and the service start deadlocks: " +
		"kube-vip wins the election, hangs silently and never raises the VIP",
	Fix: "upgrade to v1.2.1 or later, use the kube-vip-iptables image, or set lb_fwdmethod=local",
}, {
	// With services election off, losing the services lease leaves the
	// pod running without the VIP. No tag read (through v1.2.3) fixes it;
	// a v1.2.4 exists whose fix (PR #1748) is not confirmed: when it is,
	// Fixed becomes "1.2.4".
	Reference:      "kube-vip #1747",
	Link:           "https://github.com/kube-vip/kube-vip/issues/1747",
	Introduced:     "1.2.0",
	LastUnaffected: "1.1.2",
	When: [][]Condition{
		{{Env: "svc_enable", Op: True}, {Env: "svc_election", Op: NotTrue}, {Env: "vip_arp", Op: True}},
		{{Env: "svc_enable", Op: True}, {Env: "svc_election", Op: NotTrue}, {Env: "vip_routingtable", Op: True}, {Env: "vip_leaderelection", Op: True}},
	},
	Problem: "after it loses the services lease the pod stays up without the services VIP: LoadBalancer services are unreachable " +
		"until kube-vip is restarted",
	Fix: "set svc_election=true (per-service election), or stay on v1.1.2",
}}

// adminConf: the kubeconfig kube-vip reads when kubernetes_addr is empty,
// mounted (kube-vip's manifest mounts admin.conf, or super-admin.conf at
// that path).
var adminConf = []Condition{
	{Env: "kubernetes_addr", Op: Unset},
	{Env: "k8s_config_file", Op: Mounted, Value: "/etc/kubernetes/admin.conf"},
}

// Rule is the kube-vip-ipvs-backends rule.
type Rule struct {
	advisories []advisory
}

type advisory struct {
	Advisory
	introduced, fixed *version.Version // fixed nil: no release fixes it
}

var _ policy.Rule = (*Rule)(nil)

// New returns the rule for the given advisories (usually Advisories), or an
// error when one of them is malformed.
func New(advisories []Advisory) (*Rule, error) {
	r := &Rule{}
	for i, a := range advisories {
		introduced, err := version.ParseSemantic(a.Introduced)
		if err != nil {
			return nil, fmt.Errorf("advisory %d (%s): introduced: %w", i, a.Reference, err)
		}
		var fixed *version.Version
		switch {
		case a.Fixed != "":
			if fixed, err = version.ParseSemantic(a.Fixed); err != nil {
				return nil, fmt.Errorf("advisory %d (%s): fixed: %w", i, a.Reference, err)
			}
			if !introduced.LessThan(fixed) {
				return nil, fmt.Errorf("advisory %d (%s): introduced %s is not before fixed %s", i, a.Reference, introduced, fixed)
			}
		case a.LastUnaffected == "":
			return nil, fmt.Errorf("advisory %d (%s): no fixed release and no last unaffected one", i, a.Reference)
		}
		if len(a.When) == 0 {
			return nil, fmt.Errorf("advisory %d (%s): no configuration", i, a.Reference)
		}
		for j, alt := range a.When {
			if len(alt) == 0 {
				return nil, fmt.Errorf("advisory %d (%s): when[%d] is empty", i, a.Reference, j)
			}
			for k, c := range alt {
				if err := c.validate(); err != nil {
					return nil, fmt.Errorf("advisory %d (%s): when[%d][%d]: %w", i, a.Reference, j, k, err)
				}
			}
		}
		r.advisories = append(r.advisories, advisory{Advisory: a, introduced: introduced, fixed: fixed})
	}
	return r, nil
}

// ID implements policy.Rule.
func (r *Rule) ID() policy.ID { return ID }

// Effect implements policy.Rule.
func (r *Rule) Effect() policy.Effect { return policy.Validating }

// Evaluate implements policy.Rule. It applies to pods and workload pod
// templates with a kube-vip container, and returns one finding per container
// and advisory that matches.
func (r *Rule) Evaluate(t policy.Target) ([]policy.Finding, bool) {
	spec, specPath, ok := policy.PodSpecOf(t.Object)
	if !ok || policy.Excluded(t.Object, t.NamespaceLabels) {
		return nil, false
	}
	var findings []policy.Finding
	applies := false
	for i := range spec.Containers {
		c := &spec.Containers[i]
		repo, tag := splitImage(c.Image)
		if !IsKubeVIPRepository(repo) {
			continue
		}
		applies = true
		v := releaseVersion(tag)
		if v == nil {
			continue // latest, a digest only, a custom tag: unknown release
		}
		for _, a := range r.advisories {
			if v.LessThan(a.introduced) || (a.fixed != nil && !v.LessThan(a.fixed)) {
				continue
			}
			for _, alt := range a.When {
				if !allHold(alt, c, repo) {
					continue
				}
				findings = append(findings, policy.Finding{
					Field: specPath.Child("containers").Index(i).Child("image"),
					Rule:  a.Reference,
					Message: fmt.Sprintf("kube-vip %s with %s has a known bug (%s, %s; %s): %s. Fix: %s",
						tag, describe(alt), a.Reference, a.Link, a.releases(), a.Problem, a.Fix),
				})
				break
			}
		}
	}
	return findings, applies
}

// kubeVIPImages are the last path elements of kube-vip's images: the
// project publishes kube-vip and kube-vip-iptables from one source
// (ghcr.io/kube-vip/..., plndr/...; kubespray v2.28+ uses kube-vip-iptables
// with kube_vip_lb_fwdmethod: masquerade), and Rancher mirrors both as
// rancher/mirrored-kube-vip-kube-vip[-iptables].
var kubeVIPImages = map[string]bool{
	"kube-vip": true, "kube-vip-iptables": true,
	"mirrored-kube-vip-kube-vip": true, "mirrored-kube-vip-kube-vip-iptables": true,
}

// IsKubeVIPRepository reports whether an image repository (registry and
// path, without tag or digest) is kube-vip's, from any registry or mirror.
func IsKubeVIPRepository(repo string) bool {
	return kubeVIPImages[repo[strings.LastIndexByte(repo, '/')+1:]]
}

// splitImage splits an image reference into its repository and tag, dropping
// a digest. The tag is "" when the reference has none.
func splitImage(image string) (repo, tag string) {
	if i := strings.IndexByte(image, '@'); i >= 0 {
		image = image[:i]
	}
	// A colon after the last slash starts the tag; one before it is a
	// registry port.
	if i := strings.LastIndexByte(image, ':'); i > strings.LastIndexByte(image, '/') {
		return image[:i], image[i+1:]
	}
	return image, ""
}

// releaseVersion parses a release tag ("v0.8.4", "0.8.4", "v0.8.10-rc.1") by
// its major.minor.patch; nil for anything else ("latest", "v0.8", "main").
func releaseVersion(tag string) *version.Version {
	v, err := version.ParseGeneric(tag)
	if err != nil || len(v.Components()) != 3 {
		return nil
	}
	return v
}

// releases says which releases the bug affects and which fixes it.
func (a Advisory) releases() string {
	if a.Fixed == "" {
		return fmt.Sprintf("v%s and later; no fixed release is known yet, the last unaffected one is v%s", a.Introduced, a.LastUnaffected)
	}
	if last := previousOf(a.Fixed); last != a.Introduced {
		return fmt.Sprintf("v%s up to v%s, fixed in v%s", a.Introduced, last, a.Fixed)
	}
	return fmt.Sprintf("v%s, fixed in v%s", a.Introduced, a.Fixed)
}

// previousOf names the release before fixed loosely ("before 1.0.4" as
// "1.0.3"): the patch before it, or "the last before" a .0 release.
func previousOf(fixed string) string {
	v, err := version.ParseSemantic(fixed)
	if err != nil || v.Patch() == 0 {
		return "the release before v" + fixed // never an Introduced
	}
	return fmt.Sprintf("%d.%d.%d", v.Major(), v.Minor(), v.Patch()-1)
}
