// Package kubevip implements the kube-vip-ipvs-backends policy: kube-vip
// releases with known control-plane load-balancing bugs, described as data
// in an advisory table.
package kubevip

import (
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
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
		"kube-vip #1377); any kube-vip image, `kube-vip-iptables` and Rancher's mirrors included",
	Package: "internal/policy/kubevip",
	New:     func(policy.Settings) (policy.Rule, error) { return New(Advisories) },
}

// Advisory is one known kube-vip bug: the releases it affects and the
// configuration that triggers it.
type Advisory struct {
	// Reference names the upstream report, e.g. "kube-vip #875"; Link is
	// its address.
	Reference, Link string
	// Introduced is the first affected release, Fixed the first release
	// with the fix; releases in [Introduced, Fixed) are affected.
	Introduced, Fixed string
	// Env lists the environment variables that must all be true (as
	// kube-vip parses booleans) for the bug to apply.
	Env []string
	// Problem says what goes wrong; Fix what to do about it.
	Problem, Fix string
}

// Advisories is the advisory table. The next advisory is a row here.
var Advisories = []Advisory{{
	Reference:  "kube-vip #875",
	Link:       "https://github.com/kube-vip/kube-vip/issues/875",
	Introduced: "0.8.0",
	Fixed:      "0.8.10", // and 0.9.0 (PR #1091)
	Env:        []string{"cp_enable", "lb_enable"},
	Problem: "its IPVS control-plane load balancer never re-adds a backend that was removed after a failed health check, " +
		"so an API server that recovers gets no traffic until kube-vip is restarted",
	Fix: "upgrade to v0.8.10, v0.9.0 or later, or set lb_enable=false",
}, {
	Reference:  "kube-vip #1377",
	Link:       "https://github.com/kube-vip/kube-vip/issues/1377",
	Introduced: "1.0.1",
	Fixed:      "1.0.4",
	Env:        []string{"svc_enable"},
	Problem: "its leader election for LoadBalancer services can stall after kube-vip restarts (a rollout, a chart upgrade), " +
		"and then no node holds the service VIP: the service is unreachable",
	Fix: "upgrade to v1.0.4 or later, or stay on v1.0.0",
}}

// Rule is the kube-vip-ipvs-backends rule.
type Rule struct {
	advisories []advisory
}

type advisory struct {
	Advisory
	introduced, fixed *version.Version
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
		fixed, err := version.ParseSemantic(a.Fixed)
		if err != nil {
			return nil, fmt.Errorf("advisory %d (%s): fixed: %w", i, a.Reference, err)
		}
		if !introduced.LessThan(fixed) {
			return nil, fmt.Errorf("advisory %d (%s): introduced %s is not before fixed %s", i, a.Reference, introduced, fixed)
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
			if v.LessThan(a.introduced) || !v.LessThan(a.fixed) || !allTrue(c.Env, a.Env) {
				continue
			}
			findings = append(findings, policy.Finding{
				Field: specPath.Child("containers").Index(i).Child("image"),
				Rule:  a.Reference,
				Message: fmt.Sprintf("kube-vip %s with %s has a known bug (%s, %s): %s. Fix: %s",
					tag, conditions(a.Env), a.Reference, a.Link, a.Problem, a.Fix),
			})
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

// allTrue reports whether every variable in names is set, with a literal
// value, to a true boolean in env (the last entry of a name wins). A value
// from a ConfigMap or Secret is unknown here and does not count.
func allTrue(env []corev1.EnvVar, names []string) bool {
	for _, name := range names {
		val := ""
		for _, e := range env {
			if e.Name == name {
				val = e.Value
			}
		}
		if b, err := strconv.ParseBool(val); err != nil || !b {
			return false
		}
	}
	return true
}

func conditions(names []string) string {
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + "=true"
	}
	return strings.Join(parts, " and ")
}
