package registry_test

import (
	"fmt"
	"iter"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/endpoint-policy/endpoint-policy/internal/cluster"
	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/cpendpoint"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
	"github.com/endpoint-policy/endpoint-policy/internal/testing/fixtures"
)

// shuffled is a cluster view that hands out what it holds in a new order at
// every call, as a cache does across restarts and resyncs: kube-apiserver
// pods, nodes and their agent reports, the verified endpoints.
type shuffled struct {
	*cluster.Endpoints
	nodes map[string]*corev1.Node
	pods  []*corev1.Pod
	rnd   *rand.Rand
}

func (s *shuffled) Node(name string) (*corev1.Node, bool) { n, ok := s.nodes[name]; return n, ok }

func (s *shuffled) APIServerPods() ([]*corev1.Pod, bool) { return permute(s.rnd, s.pods), true }

func (s *shuffled) Nodes() iter.Seq[hostnetwork.NodeReport] {
	return slices.Values(permute(s.rnd, slices.Collect(s.Endpoints.Nodes())))
}

func (s *shuffled) NodesVerifying(endpoint string) iter.Seq[hostnetwork.NodeReport] {
	return slices.Values(permute(s.rnd, slices.Collect(s.Endpoints.NodesVerifying(endpoint))))
}

func (s *shuffled) Groups() []string { return permute(s.rnd, s.Endpoints.Groups()) }

func (s *shuffled) NodesLabelled(key string) ([]*corev1.Node, bool) {
	var out []*corev1.Node
	for _, n := range s.nodes {
		if _, ok := n.Labels[key]; ok {
			out = append(out, n)
		}
	}
	return permute(s.rnd, out), true
}

func permute[T any](rnd *rand.Rand, in []T) []T {
	out := slices.Clone(in)
	rnd.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// orderCluster is kubespray #11423's shape (three control-plane nodes from
// one ClusterConfiguration, every kube-apiserver advertising the first
// node's address) beside workers whose node agents disagree: some verified
// localhost:7443, some the KubePrism candidate, some nothing, more than a
// warning names.
func orderCluster(t *testing.T) (nodes map[string]*corev1.Node, pods []*corev1.Pod, endpoints *cluster.Endpoints) {
	t.Helper()
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	endpoints = cluster.NewEndpoints(func() time.Time { return now }, func() bool { return true })
	nodes = map[string]*corev1.Node{}
	addNode := func(name, ip string, labels map[string]string, endpoint string, status hostnetwork.Status) {
		labels["kubernetes.io/os"] = "linux"
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}}}
		nodes[name] = n
		endpoints.SetNode(n)
		checks := []hostnetwork.Check{{Endpoint: "localhost:7443", Status: status, Message: "checked " + name}}
		if endpoint == "127.0.0.1:7445" {
			checks = append(checks, hostnetwork.Check{Endpoint: endpoint, Status: hostnetwork.StatusVerified, Message: "ok"})
		}
		l, err := hostnetwork.NewLease("ep", hostnetwork.Report{Node: name, Endpoint: endpoint, Checks: checks, RenewTime: now}, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if err := endpoints.SetLease(l); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("cp-%d", i)
		addNode(name, fmt.Sprintf("10.0.0.1%d", i), map[string]string{"node-role.kubernetes.io/control-plane": ""}, "localhost:7443", hostnetwork.StatusVerified)
		p := fixtures.APIServerMirrorPod()
		p.Name, p.UID, p.Spec.NodeName = "kube-apiserver-"+name, types.UID("uid-"+name), name
		c := &p.Spec.Containers[0]
		for j, a := range c.Command {
			if strings.HasPrefix(a, "--advertise-address=") {
				c.Command[j] = "--advertise-address=10.0.0.11"
			}
		}
		pods = append(pods, p)
	}
	for i := 1; i <= 8; i++ {
		switch name := fmt.Sprintf("w-%d", i); {
		case i <= 3:
			addNode(name, fmt.Sprintf("10.0.1.%d", i), map[string]string{}, "localhost:7443", hostnetwork.StatusVerified)
		case i <= 5:
			addNode(name, fmt.Sprintf("10.0.1.%d", i), map[string]string{}, "127.0.0.1:7445", hostnetwork.StatusUnreachable)
		default:
			addNode(name, fmt.Sprintf("10.0.1.%d", i), map[string]string{}, "", hostnetwork.StatusUnreachable)
		}
	}
	endpoints.Refresh()
	return nodes, pods, endpoints
}

// TestFindingsIgnoreCacheOrder: a finding is a function of the cluster
// state, not of the order a cache lists it in. Every policy of the registry
// (so every rule that reads policy.Cluster, and every one added later)
// evaluates the same objects against the same cluster handed out in 50
// orders, and must find the same thing each time: a message naming
// "whichever peer came first" rewrote every report, reset every timestamp
// and made report viewers notify again with nothing changed (issue 22).
// Every finding names its rule.
func TestFindingsIgnoreCacheOrder(t *testing.T) {
	nodes, pods, endpoints := orderCluster(t)
	cfg := config.Default()
	for _, host := range []string{"localhost", "auto"} {
		hn := cfg.Policies[hostnetwork.ID].Settings.(*hostnetwork.Settings)
		hn.Host = host
		engine, err := cfg.Engine()
		if err != nil {
			t.Fatal(err)
		}
		operator := fixtures.CiliumOperatorPinned() // a Deployment's pod: may run on any worker
		operator.Spec.NodeName = ""
		clusterInfo := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: cpendpoint.ClusterInfoNamespace, Name: cpendpoint.ClusterInfoName},
			Data: map[string]string{cpendpoint.ClusterInfoKey: "apiVersion: v1\nkind: Config\nclusters:\n- name: b\n  cluster: {server: https://10.0.0.12:6443}\n" +
				"- name: a\n  cluster: {server: https://10.0.0.11:6443}\n"}}
		kubeadm := fixtures.KubeadmConfig()
		kubeadm.Data["ClusterConfiguration"] = strings.Replace(kubeadm.Data["ClusterConfiguration"],
			"controlPlaneEndpoint: cp.example.com:6443", "controlPlaneEndpoint: 10.0.0.11:6443", 1)
		targets := []client.Object{kubeadm, clusterInfo, operator, fixtures.KubeProxy("w-1")}
		for _, p := range pods {
			targets = append(targets, p)
		}
		for _, obj := range targets {
			t.Run(host+"/"+obj.GetObjectKind().GroupVersionKind().Kind+"/"+obj.GetName(), func(t *testing.T) {
				var first string
				for seed := range uint64(50) {
					view := &shuffled{Endpoints: endpoints, nodes: nodes, pods: pods, rnd: rand.New(rand.NewPCG(seed, 1))}
					got := render(engine.Evaluate(policy.Target{Object: obj, Cluster: view}))
					if seed == 0 {
						first = got
						continue
					}
					if got != first {
						t.Fatalf("order %d found something else:\n%s\nthe first order found:\n%s", seed, got, first)
					}
				}
				if strings.Contains(first, "rule=\"\"") {
					t.Errorf("a finding names no rule:\n%s", first)
				}
			})
		}
	}
}

func render(results []policy.Result) string {
	var b strings.Builder
	for _, r := range results {
		for _, f := range r.Findings {
			fmt.Fprintf(&b, "%s rule=%q %s unverified=%v\n", r.Policy, f.Rule, f.String(), f.Unverified)
		}
	}
	return b.String()
}
