package cpendpoint_test

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/cpendpoint"
	"github.com/endpoint-policy/endpoint-policy/internal/testing/fixtures"
)

// cluster is a cluster view with control-plane nodes.
type cluster struct {
	nodes []*corev1.Node
	known bool
}

func (cluster) Node(string) (*corev1.Node, bool)     { return nil, false }
func (cluster) APIServerPods() ([]*corev1.Pod, bool) { return nil, true }
func (c cluster) NodesLabelled(string) ([]*corev1.Node, bool) {
	return c.nodes, c.known
}

func node(name string, ips ...string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{cpendpoint.ControlPlaneLabel: ""}}}
	for _, ip := range ips {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip})
	}
	n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeHostName, Address: name})
	return n
}

// three is kubespray #11423's shape: three control-plane nodes.
var three = cluster{known: true, nodes: []*corev1.Node{
	node("cp-1", "10.0.0.11", "fd00::11"), node("cp-2", "10.0.0.12"), node("cp-3", "10.0.0.13"),
}}

func clusterConfiguration(version, endpoint string) string {
	return "apiVersion: kubeadm.k8s.io/" + version + "\nkind: ClusterConfiguration\nkubernetesVersion: v1.37.2\n" +
		"controlPlaneEndpoint: " + endpoint + "\nnetworking:\n  serviceSubnet: 10.96.0.0/12\n"
}

func kubeadmConfig(version, endpoint string) *corev1.ConfigMap {
	cm := fixtures.KubeadmConfig()
	cm.Data["ClusterConfiguration"] = clusterConfiguration(version, endpoint)
	return cm
}

func kubeadmFile(version, endpoint string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(clusterConfiguration(version, endpoint)), &u.Object); err != nil {
		panic(err)
	}
	return u
}

// clusterInfo is kube-public/cluster-info as kubeadm's bootstrap-token phase
// writes it (cmd/kubeadm/app/phases/bootstraptoken/clusterinfo): a
// kubeconfig with one unnamed cluster, the CA and the server.
func clusterInfo(server string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-public", Name: "cluster-info"},
		Data: map[string]string{"kubeconfig": `apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==
    server: ` + server + `
  name: ""
contexts: null
current-context: ""
kind: Config
preferences: {}
users: null
`}}
}

// kubeProxyConfigMap is kube-system/kube-proxy as kubeadm's proxy addon
// writes it (cmd/kubeadm/app/phases/addons/proxy/manifests.go,
// KubeProxyConfigMap19).
func kubeProxyConfigMap(server string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-proxy", Labels: map[string]string{"app": "kube-proxy"}},
		Data: map[string]string{"kubeconfig.conf": `apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt
    server: ` + server + `
  name: default
contexts:
- context:
    cluster: default
    namespace: default
    user: default
  name: default
current-context: default
users:
- name: default
  user:
    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token`,
			"config.conf": "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: iptables\n"}}
}

// kubeUpProxy is kube-up's GCE kube-proxy static pod
// (cluster/gce/manifests/kube-proxy.manifest), its shell line rendered with
// --master.
func kubeUpProxy(master string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-proxy-node-1",
		Labels: map[string]string{"tier": "node", "component": "kube-proxy"}},
		Spec: corev1.PodSpec{HostNetwork: true, NodeName: "node-1", Containers: []corev1.Container{{
			Name: "kube-proxy", Image: "registry.k8s.io/kube-proxy-amd64:v1.37.2",
			Command: []string{"/bin/sh", "-c", "exec kube-proxy --master=" + master +
				" --kubeconfig=/var/lib/kube-proxy/kubeconfig --cluster-cidr=10.64.0.0/14 --oom-score-adj=-998 --v=2 1>>/var/log/kube-proxy.log 2>&1"},
		}}}}
}

func kubeProxyDaemonSet(args ...string) *appsv1.DaemonSet {
	p := fixtures.KubeProxy("")
	p.Spec.Containers[0].Command = append([]string{"/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/config.conf"}, args...)
	return &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-proxy"},
		Spec: appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: p.Labels}, Spec: p.Spec}}}
}

func TestRule(t *testing.T) {
	tests := []struct {
		name    string
		obj     client.Object
		cluster policy.Cluster
		applies bool
		want    []string // field, rule and message parts of each finding
	}{
		{name: "kubeadm-config v1beta4: the first node's IP", obj: kubeadmConfig("v1beta4", "10.0.0.11:6443"), cluster: three, applies: true,
			want: []string{"data[ClusterConfiguration].controlPlaneEndpoint", "kubeadm-control-plane-endpoint",
				"controlPlaneEndpoint is 10.0.0.11:6443, the address of control-plane node cp-1 only, one of 3",
				"every kubelet and every node that joins", "in the API server certificate's SANs"}},
		{name: "kubeadm-config v1beta3: the second node's IP, no port", obj: kubeadmConfig("v1beta3", "10.0.0.12"), cluster: three, applies: true,
			want: []string{"control-plane node cp-2 only"}},
		{name: "kubeadm file v1beta4", obj: kubeadmFile("v1beta4", "10.0.0.13:6443"), cluster: three, applies: true,
			want: []string{"controlPlaneEndpoint", "control-plane node cp-3 only"}},
		{name: "kubeadm file v1beta3, IPv6", obj: kubeadmFile("v1beta3", "'[fd00::11]:6443'"), cluster: three, applies: true,
			want: []string{"control-plane node cp-1 only"}},
		{name: "a DNS name is fine", obj: kubeadmConfig("v1beta4", "cp.example.com:6443"), cluster: three, applies: true},
		{name: "a VIP no node has is fine", obj: kubeadmConfig("v1beta4", "10.0.0.10:6443"), cluster: three, applies: true},
		{name: "loopback is fine", obj: kubeProxyConfigMap("https://127.0.0.1:7445"), cluster: three, applies: true},
		{name: "a hostname is not resolved", obj: kubeadmConfig("v1beta4", "cp-1:6443"), cluster: three, applies: true},
		{name: "one control-plane node: nothing else to reach", obj: kubeadmConfig("v1beta4", "10.0.0.11:6443"),
			cluster: cluster{known: true, nodes: three.nodes[:1]}, applies: true},
		{name: "an address two nodes report is not one node's", obj: kubeadmConfig("v1beta4", "10.0.0.20:6443"),
			cluster: cluster{known: true, nodes: []*corev1.Node{node("cp-1", "10.0.0.20"), node("cp-2", "10.0.0.20")}}, applies: true},
		{name: "control-plane nodes unknown: no verdict", obj: kubeadmConfig("v1beta4", "10.0.0.11:6443"), cluster: cluster{}},
		{name: "no cluster: no verdict", obj: kubeadmConfig("v1beta4", "10.0.0.11:6443")},
		{name: "no controlPlaneEndpoint", obj: kubeadmConfig("v1beta4", `""`), cluster: three, applies: true},
		{name: "cluster-info", obj: clusterInfo("https://10.0.0.11:6443"), cluster: three, applies: true,
			want: []string{"data[kubeconfig]", "cluster-info-server", "the kubeconfig in kube-public/cluster-info is https://10.0.0.11:6443",
				"control-plane node cp-1 only", "kubeadm join discovers it", "k8sServiceHost: auto"}},
		{name: "cluster-info behind a VIP", obj: clusterInfo("https://10.0.0.10:6443"), cluster: three, applies: true},
		{name: "kube-proxy's kubeconfig", obj: kubeProxyConfigMap("https://10.0.0.12:6443"), cluster: three, applies: true,
			want: []string{"data[kubeconfig.conf]", "kube-proxy-kubeconfig-server", "control-plane node cp-2 only",
				"every kube-proxy on every node", "node-local API load balancer"}},
		{name: "a kubeconfig that does not parse", obj: func() client.Object {
			cm := kubeProxyConfigMap("x")
			cm.Data["kubeconfig.conf"] = "clusters: [\n"
			return cm
		}(), cluster: three, applies: true, want: []string{"data[kubeconfig.conf]", "cannot be parsed as a kubeconfig"}},
		{name: "another ConfigMap", obj: &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "coredns"}}, cluster: three},
		{name: "kube-up's kube-proxy: --master in a shell line", obj: kubeUpProxy("https://10.0.0.11"), cluster: three, applies: true,
			want: []string{"spec.containers[0].command[2]", "kube-proxy-master", `kube-proxy's --master in container "kube-proxy" is https://10.0.0.11,`,
				"control-plane node cp-1 only"}},
		{name: "kube-up's kube-proxy with a DNS name", obj: kubeUpProxy("https://kubernetes-master"), cluster: three, applies: true},
		{name: "a kube-proxy DaemonSet with --master URL as two arguments", obj: kubeProxyDaemonSet("--master", "https://10.0.0.13:6443"),
			cluster: three, applies: true, want: []string{"spec.template.spec.containers[0].command[2]", "control-plane node cp-3 only"}},
		{name: "kubeadm's kube-proxy DaemonSet: no --master", obj: kubeProxyDaemonSet(), cluster: three, applies: true},
		{name: "not kube-proxy", obj: fixtures.CiliumOperatorPinned(), cluster: three},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			findings, applies := cpendpoint.Rule{}.Evaluate(policy.Target{Object: tt.obj, Cluster: tt.cluster})
			if applies != tt.applies {
				t.Errorf("applies = %v, want %v (findings %v)", applies, tt.applies, findings)
			}
			if tt.want == nil {
				if len(findings) > 0 {
					t.Errorf("findings %v, want none", findings)
				}
				return
			}
			if len(findings) != 1 {
				t.Fatalf("findings %v, want one", findings)
			}
			f := findings[0]
			text := f.Field.String() + " " + f.Rule + " " + f.Message
			for _, part := range tt.want {
				if !strings.Contains(text, part) {
					t.Errorf("finding %q lacks %q", text, part)
				}
			}
			if f.Rule == "" {
				t.Error("the finding names no rule")
			}
		})
	}
}
