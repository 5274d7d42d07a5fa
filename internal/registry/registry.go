// Package registry is the list of every policy: one descriptor per rule
// package. The configuration's defaults, decoding, validation and modes, the
// engine every front-end builds, and the docs' policy table derive from it.
// Adding a policy is its package, one line here, its doc page and its chart
// values.
package registry

import (
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/apiserver"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/cpendpoint"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/kubeproxy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/kubevip"
)

// Policies lists every policy, in the order the engine runs them and the
// docs show them.
var Policies = []policy.Descriptor{
	hostnetwork.Descriptor,
	apiserver.ProbeHostDescriptor,
	apiserver.AdvertiseAddressDescriptor,
	kubevip.Descriptor,
	kubeproxy.NodeDeletingDescriptor,
	kubeproxy.ReadinessProbeDescriptor,
	cpendpoint.Descriptor,
}

// Lookup returns the descriptor of the policy id.
func Lookup(id policy.ID) (policy.Descriptor, bool) {
	for _, d := range Policies {
		if d.ID == id {
			return d, true
		}
	}
	return policy.Descriptor{}, false
}

// IDs returns every policy's ID, in Policies' order.
func IDs() []policy.ID {
	out := make([]policy.ID, len(Policies))
	for i, d := range Policies {
		out[i] = d.ID
	}
	return out
}
