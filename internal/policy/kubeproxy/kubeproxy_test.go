package kubeproxy_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/kubeproxy"
)

// nodes is a policy.Cluster that knows some nodes.
type nodes map[string]*corev1.Node

func (n nodes) Node(name string) (*corev1.Node, bool) { node, ok := n[name]; return node, ok }

func (nodes) APIServerPods() ([]*corev1.Pod, bool) { return nil, true }

var (
	clock   = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	tainted = time.Date(2026, 11, 23, 9, 30, 0, 0, time.UTC)
	deleted = time.Date(2026, 11, 23, 9, 45, 0, 0, time.UTC)
)

func node(name string, edit func(*corev1.Node)) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if edit != nil {
		edit(n)
	}
	return n
}

func toBeDeleted(value string) func(*corev1.Node) {
	return func(n *corev1.Node) {
		n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: kubeproxy.ToBeDeletedTaint, Value: value, Effect: corev1.TaintEffectNoSchedule})
	}
}

func beingDeleted(n *corev1.Node) { n.DeletionTimestamp = &metav1.Time{Time: deleted} }

var cluster = nodes{
	"ok": node("ok", nil),
	"soft": node("soft", func(n *corev1.Node) {
		n.Spec.Taints = []corev1.Taint{{Key: kubeproxy.DeletionCandidateTaint, Value: "1700000000", Effect: corev1.TaintEffectPreferNoSchedule}}
	}),
	"tainted":         node("tainted", toBeDeleted(strconv.FormatInt(tainted.Unix(), 10))),
	"tainted-no-time": node("tainted-no-time", toBeDeleted("")),
	"tainted-noexec": node("tainted-noexec", func(n *corev1.Node) {
		n.Spec.Taints = []corev1.Taint{{Key: kubeproxy.ToBeDeletedTaint, Effect: corev1.TaintEffectNoExecute, TimeAdded: &metav1.Time{Time: tainted}}}
	}),
	"deleting":         node("deleting", beingDeleted),
	"tainted-deleting": node("tainted-deleting", func(n *corev1.Node) { toBeDeleted(strconv.FormatInt(tainted.Unix(), 10))(n); beingDeleted(n) }),
}

func kubeProxyPod(nodeName string, labels, annotations map[string]string) *corev1.Pod {
	if labels == nil {
		labels = map[string]string{"k8s-app": "kube-proxy"}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-proxy-x", Namespace: "kube-system", Labels: labels, Annotations: annotations},
		Spec:       corev1.PodSpec{NodeName: nodeName, HostNetwork: true, Containers: []corev1.Container{{Name: "kube-proxy"}}},
	}
}

func annotated(reason string, since time.Time) map[string]string {
	return map[string]string{kubeproxy.NodeDeletingAnnotation: reason, kubeproxy.NodeDeletingSinceAnnotation: since.Format(time.RFC3339)}
}

func TestNodeDeleting(t *testing.T) {
	rule, err := kubeproxy.NewNodeDeletingRule(kubeproxy.DefaultSettings(), func() time.Time { return clock })
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		obj         client.Object
		cluster     policy.Cluster
		nsLabels    map[string]string
		wantApplies bool
		wantSet     map[string]string
		wantRemove  []string
	}{
		{name: "tainted node: reason and the taint's Unix time", obj: kubeProxyPod("tainted", nil, nil), wantApplies: true,
			wantSet: annotated(kubeproxy.ReasonToBeDeleted, tainted)},
		{name: "static kube-proxy (component label)", obj: kubeProxyPod("tainted", map[string]string{"component": "kube-proxy"}, nil), wantApplies: true,
			wantSet: annotated(kubeproxy.ReasonToBeDeleted, tainted)},
		{name: "taint without a time: the clock", obj: kubeProxyPod("tainted-no-time", nil, nil), wantApplies: true,
			wantSet: annotated(kubeproxy.ReasonToBeDeleted, clock)},
		{name: "NoExecute taint: TimeAdded", obj: kubeProxyPod("tainted-noexec", nil, nil), wantApplies: true,
			wantSet: annotated(kubeproxy.ReasonToBeDeleted, tainted)},
		{name: "node being deleted: its deletionTimestamp", obj: kubeProxyPod("deleting", nil, nil), wantApplies: true,
			wantSet: annotated(kubeproxy.ReasonNodeDeletion, deleted)},
		{name: "taint and deletion: the taint first", obj: kubeProxyPod("tainted-deleting", nil, nil), wantApplies: true,
			wantSet: annotated(kubeproxy.ReasonToBeDeleted, tainted)},
		{name: "already annotated: nothing to do", obj: kubeProxyPod("tainted", nil, annotated(kubeproxy.ReasonToBeDeleted, tainted)), wantApplies: true},
		{name: "annotated with a since from the clock: kept", obj: kubeProxyPod("tainted-no-time", nil, annotated(kubeproxy.ReasonToBeDeleted, clock.Add(-time.Hour))), wantApplies: true},
		{name: "annotated for the deletion, then tainted too: kept", obj: kubeProxyPod("tainted-deleting", nil, annotated(kubeproxy.ReasonNodeDeletion, deleted)), wantApplies: true},
		{name: "annotated with a broken since: rewritten", obj: kubeProxyPod("tainted", nil, map[string]string{kubeproxy.NodeDeletingAnnotation: kubeproxy.ReasonToBeDeleted, kubeproxy.NodeDeletingSinceAnnotation: "yesterday"}), wantApplies: true,
			wantSet: annotated(kubeproxy.ReasonToBeDeleted, tainted)},
		{name: "annotated with a reason that no longer holds: replaced", obj: kubeProxyPod("deleting", nil, annotated(kubeproxy.ReasonToBeDeleted, tainted)), wantApplies: true,
			wantSet: annotated(kubeproxy.ReasonNodeDeletion, deleted)},
		{name: "scale-down cancelled: both removed", obj: kubeProxyPod("ok", nil, annotated(kubeproxy.ReasonToBeDeleted, tainted)), wantApplies: true,
			wantRemove: []string{kubeproxy.NodeDeletingAnnotation, kubeproxy.NodeDeletingSinceAnnotation}},
		{name: "scale-down cancelled, only the reason left: removed", obj: kubeProxyPod("ok", nil, map[string]string{kubeproxy.NodeDeletingAnnotation: "x"}), wantApplies: true,
			wantRemove: []string{kubeproxy.NodeDeletingAnnotation}},
		{name: "healthy node", obj: kubeProxyPod("ok", nil, nil), wantApplies: true},
		{name: "soft taint does not count", obj: kubeProxyPod("soft", nil, nil), wantApplies: true},
		{name: "not a kube-proxy pod", obj: func() *corev1.Pod {
			p := kubeProxyPod("tainted", map[string]string{"app": "cilium"}, nil)
			p.Spec.Containers[0].Name = "cilium-agent"
			return p
		}()},
		{name: "not yet bound", obj: kubeProxyPod("", nil, nil)},
		{name: "unknown node: no verdict", obj: kubeProxyPod("gone", nil, nil)},
		{name: "no cluster view: no verdict", obj: kubeProxyPod("tainted", nil, nil), cluster: policy.Cluster(nil)},
		{name: "excluded pod", obj: kubeProxyPod("tainted", map[string]string{"k8s-app": "kube-proxy", policy.ExcludeLabel: "true"}, nil)},
		{name: "excluded namespace", obj: kubeProxyPod("tainted", nil, nil), nsLabels: map[string]string{policy.ExcludeLabel: "true"}},
		{name: "not a pod", obj: &appsv1.DaemonSet{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.cluster
			if c == nil && !strings.HasPrefix(tt.name, "no cluster") {
				c = cluster
			}
			findings, applies := rule.Evaluate(policy.Target{Object: tt.obj, Cluster: c, NamespaceLabels: tt.nsLabels})
			if applies != tt.wantApplies {
				t.Errorf("applies = %v, want %v", applies, tt.wantApplies)
			}
			if tt.wantSet == nil && tt.wantRemove == nil {
				if len(findings) != 0 {
					t.Fatalf("want no findings, got %v", findings)
				}
				return
			}
			if len(findings) != 1 {
				t.Fatalf("want one finding, got %v", findings)
			}
			f := findings[0]
			if diff := cmp.Diff(tt.wantSet, f.Annotations); diff != "" {
				t.Errorf("annotations (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantRemove, f.RemoveAnnotations); diff != "" {
				t.Errorf("removals (-want +got):\n%s", diff)
			}
			if f.Field.String() != "metadata.annotations" || len(f.Patch) != 0 {
				t.Errorf("finding %v: want only annotations under metadata.annotations", f)
			}
			want := "annotate " + kubeproxy.NodeDeletingAnnotation
			if tt.wantRemove != nil {
				want = "remove " + kubeproxy.NodeDeletingAnnotation
			}
			if !strings.HasPrefix(f.Message, want) || !strings.Contains(f.Message, tt.obj.(*corev1.Pod).Spec.NodeName) {
				t.Errorf("message %q: want it to start with %q and name the node", f.Message, want)
			}
		})
	}
}

func TestNodeDeletingSelectors(t *testing.T) {
	custom := kubeproxy.Settings{PodSelectors: []metav1.LabelSelector{{
		MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app.kubernetes.io/name", Operator: metav1.LabelSelectorOpIn, Values: []string{"kube-proxy", "kube-proxy-windows"}}},
	}}}
	rule, err := kubeproxy.NewNodeDeletingRule(custom, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	for labels, want := range map[string]bool{
		"app.kubernetes.io/name=kube-proxy-windows": true,
		"k8s-app=kube-proxy":                        false,
	} {
		k, v, _ := strings.Cut(labels, "=")
		if got := rule.Selects(map[string]string{k: v}); got != want {
			t.Errorf("Selects(%s) = %v, want %v", labels, got, want)
		}
	}

	p := field.NewPath("policies", "kube-proxy-node-deleting")
	for _, tt := range []struct {
		name    string
		s       kubeproxy.Settings
		wantErr string
	}{
		{name: "defaults", s: kubeproxy.DefaultSettings()},
		{name: "custom", s: custom},
		{name: "none", s: kubeproxy.Settings{PodSelectors: []metav1.LabelSelector{}}, wantErr: "policies.kube-proxy-node-deleting.podSelectors: Required value"},
		{name: "empty selector", s: kubeproxy.Settings{PodSelectors: []metav1.LabelSelector{{}}}, wantErr: "podSelectors[0]: Invalid value: \"{}\": an empty selector selects every pod"},
		{name: "bad label value", s: kubeproxy.Settings{PodSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"k8s-app": "kube proxy"}}}}, wantErr: "podSelectors[0].matchLabels"},
		{name: "bad operator", s: kubeproxy.Settings{PodSelectors: []metav1.LabelSelector{{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Like"}}}}}, wantErr: "podSelectors[0].matchExpressions[0].operator"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.s.Validate(p).ToAggregate()
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Validate = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestReadinessProbe(t *testing.T) {
	probe := func(path string) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path}}}
	}
	ds := func(c corev1.Container) *appsv1.DaemonSet {
		return &appsv1.DaemonSet{Spec: appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "sidecar", ReadinessProbe: probe("/healthz")}, c}}}}}
	}
	pod := func(c corev1.Container) *corev1.Pod {
		return &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{c}}}
	}
	tests := []struct {
		name        string
		obj         client.Object
		wantApplies bool
		wantField   string
	}{
		{name: "DaemonSet with /healthz readiness", obj: ds(corev1.Container{Name: "kube-proxy", ReadinessProbe: probe("/healthz")}), wantApplies: true,
			wantField: "spec.template.spec.containers[1].readinessProbe.httpGet.path"},
		{name: "pod, container found by its command", obj: pod(corev1.Container{Name: "proxy", Command: []string{"/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/config.conf"}, ReadinessProbe: probe("healthz/")}), wantApplies: true,
			wantField: "spec.containers[0].readinessProbe.httpGet.path"},
		{name: "query string", obj: pod(corev1.Container{Name: "kube-proxy", ReadinessProbe: probe("/healthz?verbose")}), wantApplies: true,
			wantField: "spec.containers[0].readinessProbe.httpGet.path"},
		{name: "/livez is the fix", obj: ds(corev1.Container{Name: "kube-proxy", ReadinessProbe: probe("/livez")}), wantApplies: true},
		{name: "liveness on /healthz is not this policy's business", obj: pod(corev1.Container{Name: "kube-proxy", LivenessProbe: probe("/healthz")}), wantApplies: true},
		{name: "tcp readiness", obj: pod(corev1.Container{Name: "kube-proxy", ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{}}}}), wantApplies: true},
		{name: "/healthzz is another path", obj: pod(corev1.Container{Name: "kube-proxy", ReadinessProbe: probe("/healthzz")}), wantApplies: true},
		{name: "no kube-proxy container", obj: pod(corev1.Container{Name: "cilium-agent", ReadinessProbe: probe("/healthz")})},
		{name: "excluded", obj: func() client.Object {
			p := pod(corev1.Container{Name: "kube-proxy", ReadinessProbe: probe("/healthz")})
			p.Labels = map[string]string{policy.ExcludeLabel: "true"}
			return p
		}()},
		{name: "not a workload", obj: &corev1.ConfigMap{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			findings, applies := kubeproxy.ReadinessProbeRule{}.Evaluate(policy.Target{Object: tt.obj})
			if applies != tt.wantApplies {
				t.Errorf("applies = %v, want %v", applies, tt.wantApplies)
			}
			if tt.wantField == "" {
				if len(findings) != 0 {
					t.Fatalf("want no findings, got %v", findings)
				}
				return
			}
			if len(findings) != 1 || findings[0].Field.String() != tt.wantField {
				t.Fatalf("want one finding at %s, got %v", tt.wantField, findings)
			}
			for _, s := range []string{"v1.30", "/livez", kubeproxy.ToBeDeletedTaint} {
				if !strings.Contains(findings[0].Message, s) {
					t.Errorf("message %q does not say %q", findings[0].Message, s)
				}
			}
			if findings[0].Mutates() {
				t.Error("a validating rule's finding mutates")
			}
		})
	}
}

// gardenerKubeProxy is a kube-proxy pod of Gardener's DaemonSet for one
// worker pool (gardener/gardener pkg/component/networking/kubeproxy), before
// Gardener moved its readiness probe to /livez: labels app=kubernetes,
// role=proxy.
func gardenerKubeProxy(node string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-proxy-worker-1-v1.31.1-abcde", Namespace: "kube-system",
			Labels: map[string]string{"app": "kubernetes", "role": "proxy", "pool": "worker-1", "version": "1.31.1"}},
		Spec: corev1.PodSpec{NodeName: node, HostNetwork: true, Containers: []corev1.Container{{
			Name: "kube-proxy", Image: "registry.k8s.io/kube-proxy:v1.31.1",
			Command: []string{"/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy-config/config.yaml", "--v=2"},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: "/healthz", Port: intstr.FromInt32(10256)}}},
		}}},
	}
}

// One definition of a kube-proxy pod for both policies.
func TestIsKubeProxyPod(t *testing.T) {
	selectors, err := kubeproxy.DefaultSettings().Selectors()
	if err != nil {
		t.Fatal(err)
	}
	gardener := gardenerKubeProxy("n")
	renamed := gardenerKubeProxy("n")
	renamed.Spec.Containers[0].Name, renamed.Spec.Containers[0].Command = "proxy", []string{"/hyperkube", "kube-proxy"}
	cilium := kubeProxyPod("n", map[string]string{"k8s-app": "cilium"}, nil)
	cilium.Spec.Containers[0].Name = "cilium-agent"
	for _, tc := range []struct {
		name   string
		labels map[string]string
		spec   *corev1.PodSpec
		want   bool
	}{
		{"kubeadm's DaemonSet", map[string]string{"k8s-app": "kube-proxy"}, nil, true},
		{"a static pod", map[string]string{"component": "kube-proxy"}, nil, true},
		{"Gardener's, as the controller's cache holds it (no containers)", gardener.Labels, nil, true},
		{"Gardener's pod", gardener.Labels, &gardener.Spec, true},
		{"labels of its own, a kube-proxy container", map[string]string{"app": "proxy"}, &gardener.Spec, true},
		{"a Cilium agent", cilium.Labels, &cilium.Spec, false},
		{"Gardener's labels without role=proxy", map[string]string{"app": "kubernetes", "role": "apiserver"}, &cilium.Spec, false},
	} {
		if got := kubeproxy.IsKubeProxyPod(tc.labels, tc.spec, selectors); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}

	// Both policies recognise Gardener's pods.
	nodeDeleting, err := kubeproxy.NewNodeDeletingRule(kubeproxy.DefaultSettings(), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if !nodeDeleting.Selects(gardener.Labels) {
		t.Error("kube-proxy-node-deleting's default selectors miss Gardener's kube-proxy")
	}
	for _, p := range []*corev1.Pod{gardener, renamed} {
		findings, applies := kubeproxy.ReadinessProbeRule{}.Evaluate(policy.Target{Object: p})
		if !applies || len(findings) != 1 || findings[0].Field.String() != "spec.containers[0].readinessProbe.httpGet.path" {
			t.Errorf("readiness probe on %s (container %q): applies %v, %v", p.Name, p.Spec.Containers[0].Name, applies, findings)
		}
	}
}
