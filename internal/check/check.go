// Package check is the offline front-end of the policy engine behind
// `endpoint-policy check`: it reads manifests from files (Pods, workloads,
// the kubeadm-config ConfigMap, raw kubeadm configuration files, static pod
// manifests), evaluates every policy on them and reports what admission
// would do with each. It holds no rule logic: the objects given together
// stand in for the cluster (policy.Cluster), so that a policy that needs
// cluster state (advertise address uniqueness) sees them.
package check

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/apiserver"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/cpendpoint"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
)

// Finding is one finding of one policy on one object, with what admission
// would do about it. The JSON shape is a contract.
type Finding struct {
	Policy    policy.ID     `json:"policy"`
	Action    policy.Action `json:"action"`
	Kind      string        `json:"kind"`
	Namespace string        `json:"namespace"`
	Name      string        `json:"name"`
	Source    string        `json:"source"`
	Message   string        `json:"message"`
	// Exemption, for action exempt: the exemption's name, its reason and
	// its expiry (RFC 3339, empty for never).
	Exemption string `json:"exemption,omitempty"`
	Reason    string `json:"reason,omitempty"`
	Expires   string `json:"expires,omitempty"`

	// Field is the offending field ("spec.containers[0].image"), "" when
	// the finding names none; object is where it was read: for SARIF's
	// locations, not in the JSON contract.
	Field  string  `json:"-"`
	object *Object `json:"-"`
}

// Summary counts the objects read and the findings by action.
type Summary struct {
	Objects int `json:"objects"`
	Skipped int `json:"skipped"`
	// SkippedPatches counts kubeadm patch files under a patches directory
	// (not objects).
	SkippedPatches int `json:"skippedPatches,omitempty"`
	Deny           int `json:"deny"`
	Warn           int `json:"warn"`
	Mutate         int `json:"mutate"`
	// Unverified counts changes admission makes only where the node agents
	// verified the endpoint, which check cannot know (host: auto).
	Unverified int `json:"unverified,omitempty"`
	// Exempt counts findings an exemption covers: they never fail the
	// check.
	Exempt int `json:"exempt,omitempty"`
}

// Report is the outcome of a check. The JSON shape is a contract.
type Report struct {
	Findings []Finding `json:"findings"`
	Summary  Summary   `json:"summary"`
	// Policies counts each policy's findings by action (check --cluster).
	Policies map[policy.ID]map[policy.Action]int `json:"policies,omitempty"`
	// InForce names the configuration the verdicts were compared with
	// (check --cluster, the server's ConfigMap, when readable), and
	// Changes are the verdicts that differ under the candidate.
	InForce string   `json:"inForce,omitempty"`
	Changes []Change `json:"changes,omitempty"`
}

// Check evaluates every policy of engine on the objects of in.
func Check(in *Input, engine *policy.Engine) Report {
	listed := in.EndpointConfigMaps
	if listed == nil {
		listed = config.Default().EndpointConfigMapNames()
	}
	cluster := newFileCluster(in.Objects, listed)
	var view policy.Cluster = cluster
	if in.Verifications != nil {
		view = liveCluster{cluster, in.Verifications}
	}
	r := Report{Findings: []Finding{}, Summary: Summary{Objects: len(in.Objects), Skipped: in.Skipped, SkippedPatches: in.SkippedPatches}}
	for i := range in.Objects {
		o := &in.Objects[i]
		t := policy.Target{Object: o.Object, NamespaceLabels: cluster.namespaces[o.Object.GetNamespace()], Cluster: view}
		for _, res := range policy.Verdicts(o.Object, engine.Evaluate(t)) {
			action := res.Action
			if o.StaticPod {
				// Admission cannot refuse a mirror pod, but a static pod's
				// file can still be fixed before the kubelet reads it: a
				// violation in Enforce stays a deny (and exit 1).
				action = res.Result.Action(true)
			}
			if action == policy.ActionAllow {
				continue
			}
			for _, f := range res.Findings {
				r.Findings = append(r.Findings, newFinding(o, res.Result, f, action))
				r.Summary.count(action)
			}
		}
	}
	return r
}

// newFinding is f, of result res on o, with what admission does: action.
func newFinding(o *Object, res policy.Result, f policy.Finding, action policy.Action) Finding {
	finding := Finding{
		Policy:    res.Policy,
		Action:    action,
		Kind:      o.Object.GetObjectKind().GroupVersionKind().Kind,
		Namespace: o.Object.GetNamespace(),
		Name:      o.Object.GetName(),
		Source:    o.Source,
		// Nothing is changed offline: a change is what would change.
		Message: f.Text(policy.Would),
		object:  o,
	}
	if f.Field != nil {
		finding.Field = f.Field.String()
	}
	if x := res.Exemption; x != nil {
		finding.Message = x.Text() + "; " + finding.Message
		finding.Exemption, finding.Reason = x.Name, x.Reason
		if !x.Expires.IsZero() {
			finding.Expires = x.Expires.UTC().Format(time.RFC3339)
		}
	}
	return finding
}

// count counts one finding of action.
func (s *Summary) count(action policy.Action) {
	switch action {
	case policy.ActionExempt:
		s.Exempt++
	case policy.ActionDeny:
		s.Deny++
	case policy.ActionWarn:
		s.Warn++
	case policy.ActionMutate:
		s.Mutate++
	case policy.ActionUnverified:
		s.Unverified++
	}
}

// liveCluster is the cluster check --cluster read: its objects, and the node
// agents' reports from their Leases.
type liveCluster struct {
	*fileCluster
	hostnetwork.Verifications
}

// fileCluster is the cluster as far as the input tells: its Nodes,
// Namespaces and kube-apiserver pods (labelled as the admission cache selects
// them). What the input does not contain is unknown, as a cold cache is.
type fileCluster struct {
	nodes         map[string]*corev1.Node
	namespaces    map[string]map[string]string
	apiServerPods []*corev1.Pod
	// listed are endpointConfigMaps, each with its ConfigMap from the
	// files (nil when none has its name).
	listed map[types.NamespacedName]*corev1.ConfigMap
}

var (
	_ policy.Cluster           = (*fileCluster)(nil)
	_ cpendpoint.LabelledNodes = (*fileCluster)(nil)
	_ policy.ConfigMaps        = (*fileCluster)(nil)
)

func newFileCluster(objects []Object, listed []types.NamespacedName) *fileCluster {
	c := &fileCluster{nodes: map[string]*corev1.Node{}, namespaces: map[string]map[string]string{},
		listed: map[types.NamespacedName]*corev1.ConfigMap{}}
	for _, nn := range listed {
		c.listed[nn] = nil
	}
	for _, o := range objects {
		switch obj := o.Object.(type) {
		case *corev1.ConfigMap:
			// In any file, before or after the pods that read it.
			if nn := (types.NamespacedName{Namespace: obj.Namespace, Name: obj.Name}); c.Listed(nn.Namespace, nn.Name) {
				c.listed[nn] = obj
			}
		case *corev1.Node:
			c.nodes[obj.Name] = obj
		case *corev1.Namespace:
			c.namespaces[obj.Name] = obj.Labels
		case *corev1.Pod:
			if obj.Labels[apiserver.ComponentLabel] == apiserver.ComponentValue {
				c.apiServerPods = append(c.apiServerPods, obj)
			}
		}
	}
	return c
}

// Node implements policy.Cluster.
func (c *fileCluster) Node(name string) (*corev1.Node, bool) {
	n, ok := c.nodes[name]
	return n, ok
}

// APIServerPods implements policy.Cluster. Files hold everything the user
// chose to give, so the answer is always known.
func (c *fileCluster) APIServerPods() ([]*corev1.Pod, bool) { return c.apiServerPods, true }

// ConfigMap implements policy.ConfigMaps: a listed ConfigMap of the files
// is Known; one the files do not hold is Unknown (they may leave it out),
// as a cold cache's.
func (c *fileCluster) ConfigMap(namespace, name string) (*corev1.ConfigMap, policy.Knowledge) {
	cm, listed := c.listed[types.NamespacedName{Namespace: namespace, Name: name}]
	switch {
	case !listed:
		return nil, policy.NotListed
	case cm == nil:
		return nil, policy.Unknown
	}
	return cm, policy.Known
}

// Listed implements policy.ConfigMaps.
func (c *fileCluster) Listed(namespace, name string) bool {
	_, ok := c.listed[types.NamespacedName{Namespace: namespace, Name: name}]
	return ok
}

// NodesLabelled implements cpendpoint.LabelledNodes: the Nodes in the files
// with label key. Without a Node in the files it cannot tell: no verdict,
// rather than "fine".
func (c *fileCluster) NodesLabelled(key string) ([]*corev1.Node, bool) {
	if len(c.nodes) == 0 {
		return nil, false
	}
	var out []*corev1.Node
	for _, n := range c.nodes {
		if _, ok := n.Labels[key]; ok {
			out = append(out, n)
		}
	}
	return out, true
}
