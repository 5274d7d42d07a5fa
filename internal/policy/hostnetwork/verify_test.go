package hostnetwork_test

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/endpoint-policy/endpoint-policy/internal/cluster"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
)

// agentCluster is a cluster view with node agent reports (admission's), on
// a fixed clock.
type agentCluster struct {
	*cluster.Endpoints
}

func (agentCluster) Node(string) (*corev1.Node, bool)     { return nil, false }
func (agentCluster) APIServerPods() ([]*corev1.Pod, bool) { return nil, true }

var now = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// testNodes: control-plane cp-1 (tainted) and workers w-1..w-6. Pools: a
// (w-1, w-2), b (w-3, w-4), mixed (w-2, w-5); w-5 is tainted dedicated=db.
func testNodes(t *testing.T, synced bool) agentCluster {
	t.Helper()
	c := agentCluster{cluster.NewEndpoints(func() time.Time { return now }, func() bool { return synced })}
	add := func(name string, labels map[string]string, taint string, endpoint string, status hostnetwork.Status, age time.Duration) {
		labels["kubernetes.io/os"] = "linux"
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
		if taint != "" {
			n.Spec.Taints = []corev1.Taint{{Key: taint, Effect: corev1.TaintEffectNoSchedule}}
		}
		c.SetNode(n)
		if status == "" {
			return
		}
		checks := []hostnetwork.Check{{Endpoint: "localhost:7443", Status: status, Message: "checked " + name}}
		if endpoint == "127.0.0.1:7445" {
			checks = append(checks, hostnetwork.Check{Endpoint: endpoint, Status: hostnetwork.StatusVerified, Message: "ok"})
		}
		l, err := hostnetwork.NewLease("ep", hostnetwork.Report{Node: name, Endpoint: endpoint, Checks: checks, RenewTime: now.Add(-age)}, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.SetLease(l); err != nil {
			t.Fatal(err)
		}
	}
	ok := hostnetwork.StatusVerified
	add("cp-1", map[string]string{}, "node-role.kubernetes.io/control-plane", "localhost:7443", ok, 0)
	add("w-1", map[string]string{"pool": "a"}, "", "localhost:7443", ok, 0)
	add("w-2", map[string]string{"pool": "a", "mixed": "true"}, "", "localhost:7443", ok, time.Minute)
	add("w-3", map[string]string{"pool": "b"}, "", "", hostnetwork.StatusUnreachable, 0)
	add("w-4", map[string]string{"pool": "b"}, "", "", "", 0)
	add("w-5", map[string]string{"mixed": "true"}, "dedicated", "127.0.0.1:7445", hostnetwork.StatusUnreachable, 0)
	add("w-6", map[string]string{"pool": "c"}, "", "localhost:7443", ok, 4*time.Minute) // stale: 3 heartbeats of 1m
	c.Refresh()
	return c
}

type podShape func(*corev1.Pod)

func bound(node string) podShape { return func(p *corev1.Pod) { p.Spec.NodeName = node } }

// daemonSetPod is what the DaemonSet controller creates: no nodeName, the
// node in required node affinity (pkg/controller/daemon/util.ReplaceDaemonSetPodNodeNameNodeAffinity).
func daemonSetPod(node string) podShape {
	return func(p *corev1.Pod) {
		p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{node}}},
			}}},
		}}
		p.Spec.Tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
	}
}

func selecting(kv ...string) podShape {
	return func(p *corev1.Pod) {
		p.Spec.NodeSelector = map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			p.Spec.NodeSelector[kv[i]] = kv[i+1]
		}
	}
}

func tolerating(key string) podShape {
	return func(p *corev1.Pod) {
		p.Spec.Tolerations = append(p.Spec.Tolerations, corev1.Toleration{Key: key, Operator: corev1.TolerationOpExists})
	}
}

func TestRuleVerification(t *testing.T) {
	fixed := hostnetwork.DefaultSettings()
	auto := hostnetwork.DefaultSettings()
	auto.Host = hostnetwork.HostAuto

	tests := []struct {
		name     string
		settings hostnetwork.Settings
		shape    []podShape
		unsynced bool
		// wantEndpoint is the endpoint the pod is rewritten to; "" when it
		// is not, and wantWarning is then part of the warning.
		wantEndpoint string
		wantWarning  string
	}{
		{name: "bound to a verified node", settings: fixed, shape: []podShape{bound("w-1")}, wantEndpoint: "localhost:7443"},
		{name: "bound to an unreachable node", settings: fixed, shape: []podShape{bound("w-3")},
			wantWarning: "not rewritten: localhost:7443 is not verified on node(s) w-3: Unreachable: checked w-3"},
		{name: "bound to a node without an agent", settings: fixed, shape: []podShape{bound("w-4")},
			wantWarning: "on node(s) w-4: NoReport: no node agent has reported from this node"},
		{name: "bound to a node unknown yet", settings: fixed, shape: []podShape{bound("w-9")},
			wantWarning: "on node(s) w-9: NoReport"},
		{name: "bound to a node whose report is stale", settings: fixed, shape: []podShape{bound("w-6")},
			wantWarning: "on node(s) w-6: Stale: the node agent's last report is from 2026-12-01T11:56:00Z, more than 3 heartbeats ago"},
		{name: "DaemonSet pod for a verified node", settings: fixed, shape: []podShape{daemonSetPod("cp-1")}, wantEndpoint: "localhost:7443"},
		{name: "DaemonSet pod for a node without an agent", settings: fixed, shape: []podShape{daemonSetPod("w-4")},
			wantWarning: "on node(s) w-4: NoReport"},
		{name: "Deployment pod whose nodes are all verified", settings: fixed, shape: []podShape{selecting("pool", "a")}, wantEndpoint: "localhost:7443"},
		{name: "Deployment pod with one unverified node", settings: fixed, shape: []podShape{selecting("pool", "b")},
			wantWarning: "not rewritten: localhost:7443 is not verified on node(s) w-3, w-4: Unreachable: checked w-3"},
		{name: "Deployment pod on any untainted node", settings: fixed, shape: nil,
			wantWarning: "not verified on node(s) w-3, w-4, w-6: Unreachable"},
		{name: "Deployment pod that tolerates everything", settings: fixed, shape: []podShape{tolerating("")},
			wantWarning: "not verified on node(s) w-3, w-4, w-5 (+1 more): Unreachable"},
		{name: "Deployment pod that no node admits", settings: fixed, shape: []podShape{selecting("pool", "z")},
			wantWarning: "not rewritten: localhost:7443 is not verified on any node: no known node matches the pod's nodeSelector, node affinity and tolerations"},
		{name: "Deployment pod kept off the tainted node", settings: fixed, shape: []podShape{selecting("mixed", "true")}, wantEndpoint: "localhost:7443"},
		{name: "before the reports are loaded", settings: fixed, shape: []podShape{bound("w-1")}, unsynced: true,
			wantWarning: "not rewritten: localhost:7443 is not verified: the node agents' reports are not loaded yet"},

		{name: "auto: a node with KubePrism", settings: auto, shape: []podShape{daemonSetPod("w-5")}, wantEndpoint: "127.0.0.1:7445"},
		{name: "auto: a node with NLLB", settings: auto, shape: []podShape{bound("w-1")}, wantEndpoint: "localhost:7443"},
		{name: "auto: a node with nothing", settings: auto, shape: []podShape{bound("w-3")},
			wantWarning: "not rewritten: an endpoint (host: auto) is not verified on node(s) w-3: Unreachable: checked w-3"},
		{name: "auto: nodes that verified one endpoint", settings: auto, shape: []podShape{selecting("pool", "a")}, wantEndpoint: "localhost:7443"},
		{name: "auto: nodes that verified different endpoints", settings: auto, shape: []podShape{selecting("mixed", "true"), tolerating("dedicated")},
			wantWarning: "is not verified on node(s) w-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rule, err := hostnetwork.New(tt.settings)
			if err != nil {
				t.Fatal(err)
			}
			pod := hostNetworkPod(env(hostnetwork.EnvHost, "10.0.1.16", hostnetwork.EnvPort, "6443"))
			for _, s := range tt.shape {
				s(pod)
			}
			findings, applies := rule.Evaluate(policy.Target{Object: pod, Cluster: testNodes(t, !tt.unsynced)})
			if !applies || len(findings) != 1 {
				t.Fatalf("applies %v, findings %v; want one finding", applies, findings)
			}
			f := findings[0]
			action := policy.Result{Policy: hostnetwork.ID, Mode: policy.Enforce, Findings: findings}.Action(true)
			if tt.wantEndpoint == "" {
				if !f.Unverified || f.Mutates() || action != policy.ActionUnverified {
					t.Fatalf("finding %+v (action %s), want an unverified one", f, action)
				}
				if !strings.Contains(f.Message, tt.wantWarning) {
					t.Fatalf("warning %q, want it to contain %q", f.Message, tt.wantWarning)
				}
				return
			}
			if f.Unverified || action != policy.ActionMutate {
				t.Fatalf("finding %+v (action %s), want a rewrite to %s", f, action, tt.wantEndpoint)
			}
			if got := f.Annotations[hostnetwork.EndpointAnnotation]; got != tt.wantEndpoint {
				t.Fatalf("rewritten to %s, want %s", got, tt.wantEndpoint)
			}
			patched := applyFindings(t, pod, findings)
			host, port, _ := strings.Cut(tt.wantEndpoint, ":")
			if diff := patched.Spec.Containers[0].Env; diff[0].Value != host || diff[1].Value != port {
				t.Fatalf("env after the rewrite: %v, want %s", diff, tt.wantEndpoint)
			}
		})
	}
}

func TestRuleWithoutAgentReports(t *testing.T) {
	pinned := env(hostnetwork.EnvHost, "10.0.1.16", hostnetwork.EnvPort, "6443")
	t.Run("fixed endpoint: the rewrite, and where admission applies it", func(t *testing.T) {
		rule, err := hostnetwork.New(hostnetwork.DefaultSettings())
		if err != nil {
			t.Fatal(err)
		}
		findings, _ := rule.Evaluate(policy.Target{Object: hostNetworkPod(pinned)})
		if len(findings) != 1 || !findings[0].Mutates() ||
			!strings.HasSuffix(findings[0].Message, "; admission applies it only where the node agent verified localhost:7443 on the pod's node") {
			t.Fatalf("findings %v", findings)
		}
	})
	t.Run("auto: no endpoint to name", func(t *testing.T) {
		s := hostnetwork.DefaultSettings()
		s.Host = hostnetwork.HostAuto
		rule, err := hostnetwork.New(s)
		if err != nil {
			t.Fatal(err)
		}
		findings, _ := rule.Evaluate(policy.Target{Object: hostNetworkPod(pinned)})
		if len(findings) != 1 || !findings[0].Unverified || !strings.Contains(findings[0].Message, "(host: auto)") {
			t.Fatalf("findings %v", findings)
		}
	})
	t.Run("verification off: every pod, whatever the nodes", func(t *testing.T) {
		rule, err := hostnetwork.New(unverified())
		if err != nil {
			t.Fatal(err)
		}
		pod := hostNetworkPod(pinned)
		pod.Spec.NodeName = "w-3"
		findings, _ := rule.Evaluate(policy.Target{Object: pod, Cluster: testNodes(t, true)})
		if len(findings) != 1 || !findings[0].Mutates() || strings.Contains(findings[0].Message, "admission applies") {
			t.Fatalf("findings %v", findings)
		}
	})
	t.Run("nothing to change: no verification needed", func(t *testing.T) {
		rule, err := hostnetwork.New(hostnetwork.DefaultSettings())
		if err != nil {
			t.Fatal(err)
		}
		pod := hostNetworkPod(env(hostnetwork.EnvHost, "localhost", hostnetwork.EnvPort, "7443"))
		pod.Spec.NodeName = "w-3"
		if findings, _ := rule.Evaluate(policy.Target{Object: pod, Cluster: testNodes(t, true)}); len(findings) != 0 {
			t.Fatalf("findings %v", findings)
		}
	})
}

func TestLeaseName(t *testing.T) {
	if got := hostnetwork.LeaseName("worker-1"); got != "endpoint-policy-node-worker-1" {
		t.Fatalf("LeaseName = %s", got)
	}
	long := strings.Repeat("a", 60) + "." + strings.Repeat("b", 60) + "." + strings.Repeat("c", 60) + "." + strings.Repeat("d", 60)
	a, b := hostnetwork.LeaseName(long), hostnetwork.LeaseName(long+"x")
	if len(a) > 253 || a == b || !strings.HasPrefix(a, "endpoint-policy-node-aaaa") {
		t.Fatalf("long names %q and %q: want distinct names of at most 253 characters", a, b)
	}
}
