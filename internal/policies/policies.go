// Package policies wires every policy into an engine from a configuration.
// It is the one place that lists the policies; front-ends build their engine
// here and never construct rules themselves.
package policies

import (
	"fmt"
	"time"

	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/apiserver"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/kubeproxy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/kubevip"
)

// Build returns the engine for cfg, which must be valid (config.Parse or
// config.Default).
func Build(cfg *config.PolicyConfiguration) (*policy.Engine, error) {
	hn, err := hostnetwork.New(cfg.Policies.HostNetworkEndpoint.Settings())
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", hostnetwork.ID, err)
	}
	kv, err := kubevip.New(kubevip.Advisories)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", kubevip.ID, err)
	}
	nd, err := kubeproxy.NewNodeDeletingRule(cfg.Policies.KubeProxyNodeDeleting.Settings(), time.Now)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", kubeproxy.NodeDeletingID, err)
	}
	return policy.NewEngine([]policy.Rule{
		hn,
		apiserver.ProbeHostRule{},
		apiserver.AdvertiseAddressRule{},
		kv,
		nd,
		kubeproxy.ReadinessProbeRule{},
	}, cfg.Modes())
}
