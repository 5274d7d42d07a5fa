package apiserver_test

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/apiserver"
)

// want is one expected finding: where, and words its message must contain.
type want struct {
	field    string
	contains []string
}

func check(t *testing.T, r policy.Rule, target policy.Target, wantApplies bool, wants []want) {
	t.Helper()
	findings, applies := r.Evaluate(target)
	if applies != wantApplies {
		t.Errorf("applies = %v, want %v", applies, wantApplies)
	}
	if len(findings) != len(wants) {
		t.Fatalf("got %d findings, want %d:\n%v", len(findings), len(wants), findings)
	}
	for i, w := range wants {
		if got := findings[i].Field.String(); got != w.field {
			t.Errorf("finding %d field = %s, want %s", i, got, w.field)
		}
		for _, s := range w.contains {
			if !strings.Contains(findings[i].Message, s) {
				t.Errorf("finding %d message %q does not contain %q", i, findings[i].Message, s)
			}
		}
		if findings[i].Mutates() {
			t.Errorf("finding %d of a validating rule carries a patch", i)
		}
	}
}

func httpProbe(host string) *corev1.Probe {
	return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
		Host: host, Path: "/livez", Port: intstr.FromInt32(6443), Scheme: corev1.URISchemeHTTPS}}}
}

func tcpProbe(host string) *corev1.Probe {
	return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Host: host, Port: intstr.FromInt32(6443)}}}
}

// kubeadmAPIServer is the container of kubeadm's kube-apiserver static pod,
// its three probes on host.
func kubeadmAPIServer(host string, args ...string) corev1.Container {
	return corev1.Container{
		Name:           "kube-apiserver",
		Image:          "registry.k8s.io/kube-apiserver:v1.37.2",
		Command:        append([]string{"kube-apiserver"}, args...),
		LivenessProbe:  httpProbe(host),
		ReadinessProbe: httpProbe(host),
		StartupProbe:   httpProbe(host),
	}
}

func pod(containers ...corev1.Container) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-apiserver-cp1", Namespace: "kube-system"},
		Spec:       corev1.PodSpec{HostNetwork: true, Containers: containers},
	}
}

func TestProbeHost(t *testing.T) {
	probes := func(prefix, ip string) []want {
		return []want{
			{prefix + ".livenessProbe.httpGet.host", []string{"livenessProbe", `"kube-apiserver"`, ip, "kube-apiserver0+strategic.yaml", "FQDN"}},
			{prefix + ".readinessProbe.httpGet.host", []string{"readinessProbe", ip}},
			{prefix + ".startupProbe.httpGet.host", []string{"startupProbe", ip}},
		}
	}
	deployment := &appsv1.Deployment{Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "sidecar"}, kubeadmAPIServer("10.1.2.3")}}}}}
	mirror := pod(kubeadmAPIServer("192.168.1.10"))
	mirror.Annotations = map[string]string{policy.MirrorPodAnnotation: "hash"}
	excluded := pod(kubeadmAPIServer("192.168.1.10"))
	excluded.Labels = map[string]string{policy.ExcludeLabel: "true"}

	tests := []struct {
		name        string
		obj         client.Object
		nsLabels    map[string]string
		wantApplies bool
		want        []want
	}{
		{"kubeadm output: IPv4 on all three probes", pod(kubeadmAPIServer("192.168.1.10")), nil, true, probes("spec.containers[0]", "192.168.1.10")},
		{"IPv6", pod(kubeadmAPIServer("fd00::10")), nil, true, probes("spec.containers[0]", "fd00::10")},
		{"IPv4 loopback", pod(kubeadmAPIServer("127.0.0.1")), nil, true, nil},
		{"other 127/8 loopback", pod(kubeadmAPIServer("127.0.1.1")), nil, true, nil},
		{"IPv6 loopback", pod(kubeadmAPIServer("::1")), nil, true, nil},
		{"DNS name", pod(kubeadmAPIServer("cp1.example.com")), nil, true, nil},
		{"empty host (the pod IP)", pod(kubeadmAPIServer("")), nil, true, nil},
		{"tcpSocket probe", pod(corev1.Container{Name: "kube-apiserver", LivenessProbe: tcpProbe("10.0.0.5")}), nil, true,
			[]want{{"spec.containers[0].livenessProbe.tcpSocket.host", []string{"livenessProbe", "10.0.0.5"}}}},
		{"gRPC probe has no host", pod(corev1.Container{Name: "kube-apiserver", LivenessProbe: &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 6443}}}}), nil, true, nil},
		{"no probes", pod(corev1.Container{Name: "kube-apiserver"}), nil, true, nil},
		{"found by its binary, not its name", pod(corev1.Container{Name: "apiserver", Command: []string{"/usr/local/bin/kube-apiserver", "--v=2"},
			ReadinessProbe: httpProbe("10.0.0.5")}), nil, true,
			[]want{{"spec.containers[0].readinessProbe.httpGet.host", []string{`"apiserver"`, "10.0.0.5"}}}},
		{"found by args without a command", pod(corev1.Container{Name: "api", Args: []string{"kube-apiserver"}, LivenessProbe: httpProbe("10.0.0.5")}), nil, true,
			[]want{{"spec.containers[0].livenessProbe.httpGet.host", nil}}},
		{"other containers are not this policy's business", pod(corev1.Container{Name: "etcd", LivenessProbe: httpProbe("10.0.0.5")}), nil, false, nil},
		{"Deployment of a hosted control plane", deployment, nil, true, probes("spec.template.spec.containers[1]", "10.1.2.3")},
		{"mirror pods are evaluated (admission decides not to deny them)", mirror, nil, true, probes("spec.containers[0]", "192.168.1.10")},
		{"excluded pod", excluded, nil, false, nil},
		{"excluded namespace", pod(kubeadmAPIServer("192.168.1.10")), map[string]string{policy.ExcludeLabel: "true"}, false, nil},
		{"not a pod", &corev1.ConfigMap{}, nil, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check(t, apiserver.ProbeHostRule{}, policy.Target{Object: tt.obj, NamespaceLabels: tt.nsLabels}, tt.wantApplies, tt.want)
		})
	}
}

func TestAdvertiseAddressFlag(t *testing.T) {
	tests := []struct {
		name      string
		c         corev1.Container
		wantValue string
		wantAt    string
	}{
		{"--flag=value", corev1.Container{Command: []string{"kube-apiserver", "--advertise-address=10.0.0.1", "--v=2"}}, "10.0.0.1", "c.command[1]"},
		{"--flag value", corev1.Container{Command: []string{"kube-apiserver", "--advertise-address", "10.0.0.1"}}, "10.0.0.1", "c.command[2]"},
		{"in args", corev1.Container{Command: []string{"kube-apiserver"}, Args: []string{"--advertise-address=fd00::1"}}, "fd00::1", "c.args[0]"},
		{"last one wins", corev1.Container{Command: []string{"kube-apiserver", "--advertise-address=10.0.0.1"}, Args: []string{"--advertise-address", "10.0.0.2"}}, "10.0.0.2", "c.args[1]"},
		{"flag without a value", corev1.Container{Command: []string{"kube-apiserver", "--advertise-address"}}, "", ""},
		{"a longer flag is not it", corev1.Container{Command: []string{"kube-apiserver", "--advertise-address-foo=1"}}, "", ""},
		{"absent", corev1.Container{Command: []string{"kube-apiserver", "--secure-port=6443"}}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			value, at, ok := apiserver.AdvertiseAddress(&tt.c, field.NewPath("c"))
			if ok != (tt.wantAt != "") || value != tt.wantValue || ok && at.String() != tt.wantAt {
				t.Errorf("AdvertiseAddress = %q at %v (%v), want %q at %q", value, at, ok, tt.wantValue, tt.wantAt)
			}
		})
	}
}

func kubeadmConfig(clusterConfiguration string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kubeadm-config"},
		Data:       map[string]string{"ClusterConfiguration": clusterConfiguration},
	}
}

const v1beta3 = `apiVersion: kubeadm.k8s.io/v1beta3
kind: ClusterConfiguration
kubernetesVersion: v1.30.4
controlPlaneEndpoint: lb.example.com:6443
apiServer:
  extraArgs:
    advertise-address: 10.0.0.11
    anonymous-auth: "true"
`

const v1beta4 = `apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: v1.31.0
apiServer:
  extraArgs:
  - name: anonymous-auth
    value: "true"
  - name: advertise-address
    value: 10.0.0.11
  - name: advertise-address
    value: 10.0.0.12
`

func TestAdvertiseAddressKubeadmConfig(t *testing.T) {
	fix := []string{"localAPIEndpoint.advertiseAddress", "InitConfiguration", "JoinConfiguration", "every control-plane node"}
	otherName := kubeadmConfig(v1beta3)
	otherName.Name = "kubeadm-config-backup"
	otherNamespace := kubeadmConfig(v1beta3)
	otherNamespace.Namespace = "default"
	noKey := kubeadmConfig("")
	delete(noKey.Data, "ClusterConfiguration")

	tests := []struct {
		name        string
		obj         client.Object
		wantApplies bool
		want        []want
	}{
		{"v1beta3 map", kubeadmConfig(v1beta3), true,
			[]want{{"data[ClusterConfiguration].apiServer.extraArgs[advertise-address]", append([]string{"advertise-address=10.0.0.11"}, fix...)}}},
		{"v1beta4 list, every duplicate", kubeadmConfig(v1beta4), true, []want{
			{"data[ClusterConfiguration].apiServer.extraArgs[1]", append([]string{"advertise-address=10.0.0.11"}, fix...)},
			{"data[ClusterConfiguration].apiServer.extraArgs[2]", []string{"advertise-address=10.0.0.12"}},
		}},
		{"v1beta3 without the arg", kubeadmConfig(strings.Replace(v1beta3, "    advertise-address: 10.0.0.11\n", "", 1)), true, nil},
		{"v1beta4 without the arg", kubeadmConfig("apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\napiServer:\n  extraArgs:\n  - name: v\n    value: \"2\"\n"), true, nil},
		{"no apiServer section", kubeadmConfig("apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n"), true, nil},
		{"no ClusterConfiguration key", noKey, true, nil},
		{"unparseable YAML is denied with the parse error", kubeadmConfig("apiServer:\n  extraArgs: [\n"), true,
			[]want{{"data[ClusterConfiguration]", []string{"cannot be parsed", "yaml"}}}},
		{"not a mapping", kubeadmConfig("- a\n- b\n"), true, []want{{"data[ClusterConfiguration]", []string{"cannot be parsed"}}}},
		{"extraArgs of the wrong shape", kubeadmConfig("apiServer:\n  extraArgs: advertise-address=10.0.0.1\n"), true,
			[]want{{"data[ClusterConfiguration].apiServer.extraArgs", []string{"v1beta3", "v1beta4"}}}},
		{"another ConfigMap", otherName, false, nil},
		{"kubeadm-config in another namespace", otherNamespace, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check(t, apiserver.AdvertiseAddressRule{}, policy.Target{Object: tt.obj}, tt.wantApplies, tt.want)
		})
	}
}

func TestAdvertiseAddressRawClusterConfiguration(t *testing.T) {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kubeadm.k8s.io/v1beta4",
		"kind":       "ClusterConfiguration",
		"apiServer": map[string]any{"extraArgs": []any{
			map[string]any{"name": "advertise-address", "value": "10.0.0.11"},
		}},
	}}
	check(t, apiserver.AdvertiseAddressRule{}, policy.Target{Object: u}, true,
		[]want{{"apiServer.extraArgs[0]", []string{"advertise-address=10.0.0.11"}}})

	init := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "InitConfiguration"}}
	check(t, apiserver.AdvertiseAddressRule{}, policy.Target{Object: init}, false, nil)
}

// cluster is a policy.Cluster from fixed objects; synced false models a cold
// cache.
type cluster struct {
	nodes  []*corev1.Node
	pods   []*corev1.Pod
	synced bool
}

func (c cluster) Node(name string) (*corev1.Node, bool) {
	if !c.synced {
		return nil, false
	}
	for _, n := range c.nodes {
		if n.Name == name {
			return n, true
		}
	}
	return nil, false
}

func (c cluster) APIServerPods() ([]*corev1.Pod, bool) { return c.pods, c.synced }

func node(name string, addrs ...string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for _, a := range addrs {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a})
	}
	n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeHostName, Address: name})
	return n
}

func apiServerPod(name, nodeName string, args ...string) *corev1.Pod {
	p := pod(kubeadmAPIServer("", args...))
	p.Name, p.Spec.NodeName = name, nodeName
	return p
}

func TestAdvertiseAddressPods(t *testing.T) {
	nodes := []*corev1.Node{node("cp1", "10.0.0.11"), node("cp2", "10.0.0.12", "fd00::12"), {ObjectMeta: metav1.ObjectMeta{Name: "new"}}}
	cp1 := apiServerPod("kube-apiserver-cp1", "cp1", "--advertise-address=10.0.0.11")
	known := cluster{nodes: nodes, pods: []*corev1.Pod{cp1}, synced: true}

	rsOwned := func(p *corev1.Pod) *corev1.Pod {
		p.Spec.HostNetwork = false
		p.OwnerReferences = []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "tenant-a", Controller: ptr.To(true)}}
		return p
	}
	mirrorOnCP2 := apiServerPod("kube-apiserver-cp2", "cp2", "--advertise-address=10.0.0.11")
	mirrorOnCP2.Annotations = map[string]string{policy.MirrorPodAnnotation: "hash"}
	mirrorOnCP2.OwnerReferences = []metav1.OwnerReference{{Kind: "Node", Name: "cp2", Controller: ptr.To(true)}}
	deleting := apiServerPod("kube-apiserver-old", "cp3", "--advertise-address=10.0.0.12")
	deleting.DeletionTimestamp = &metav1.Time{}
	failed := apiServerPod("kube-apiserver-failed", "cp3", "--advertise-address=10.0.0.12")
	failed.Status.Phase = corev1.PodFailed

	const at = "spec.containers[0].command[1]"
	tests := []struct {
		name        string
		pod         *corev1.Pod
		cluster     policy.Cluster
		wantApplies bool
		want        []want
	}{
		{"its own node's address", apiServerPod("kube-apiserver-cp2", "cp2", "--advertise-address=10.0.0.12"), known, true, nil},
		{"its node's IPv6 address", apiServerPod("kube-apiserver-cp2", "cp2", "--advertise-address=fd00:0::12"), known, true, nil},
		{"--flag value form", apiServerPod("kube-apiserver-cp2", "cp2", "--advertise-address", "10.0.0.12"), known, true, nil},
		{"shared with cp1 and not cp2's (kubespray #11423)", mirrorOnCP2, known, true, []want{
			{at, []string{"10.0.0.11", "not an address of node cp2", "InternalIP 10.0.0.12"}},
			{at, []string{"already used by kube-apiserver pod kube-system/kube-apiserver-cp1 on node cp1", "localAPIEndpoint.advertiseAddress"}},
		}},
		{"--flag value form, shared", apiServerPod("kube-apiserver-x", "cp2", "--advertise-address", "10.0.0.11"), known, true, []want{
			{"spec.containers[0].command[2]", []string{"not an address of node cp2"}},
			{"spec.containers[0].command[2]", []string{"already used"}},
		}},
		// kubespray #11423: three control-plane nodes from one
		// ClusterConfiguration, all advertising cp1's address. cp1 owns it:
		// it is right, the others are reported, each naming every peer in
		// one order whatever order the cache lists them in.
		{"the node that owns a shared address is not blamed", cp1,
			cluster{nodes: nodes, pods: []*corev1.Pod{mirrorOnCP2, cp1}, synced: true}, true, nil},
		{"every peer named, sorted", mirrorOnCP2, cluster{nodes: nodes, synced: true, pods: []*corev1.Pod{
			apiServerPod("kube-apiserver-cp3", "cp3", "--advertise-address=10.0.0.11"), cp1, mirrorOnCP2}}, true, []want{
			{at, []string{"not an address of node cp2"}},
			{at, []string{"already used by kube-apiserver pods kube-system/kube-apiserver-cp1 on node cp1, kube-system/kube-apiserver-cp3 on node cp3"}},
		}},
		{"same address on the same node (a restart) is fine", apiServerPod("kube-apiserver-cp1-new", "cp1", "--advertise-address=10.0.0.11"), known, true, nil},
		{"the pod itself is not another pod", cp1, known, true, nil},
		{"not its node's address, not shared", apiServerPod("kube-apiserver-cp2", "cp2", "--advertise-address=10.0.0.99"), known, true,
			[]want{{at, []string{"10.0.0.99 is not an address of node cp2"}}}},
		{"node not known yet: only the uniqueness verdict", apiServerPod("kube-apiserver-cp9", "cp9", "--advertise-address=10.0.0.11"), known, true,
			[]want{{at, []string{"already used"}}}},
		{"node without addresses yet", apiServerPod("kube-apiserver-new", "new", "--advertise-address=10.0.0.50"), known, true, nil},
		{"cold cache: no verdict", apiServerPod("kube-apiserver-cp2", "cp2", "--advertise-address=10.0.0.11"), cluster{}, false, nil},
		{"no cluster view (nil): no verdict", apiServerPod("kube-apiserver-cp2", "cp2", "--advertise-address=10.0.0.11"), nil, false, nil},
		{"not bound to a node", apiServerPod("kube-apiserver", "", "--advertise-address=10.0.0.11"), known, false, nil},
		{"no --advertise-address", apiServerPod("kube-apiserver-cp2", "cp2"), known, false, nil},
		{"an unexpanded variable is not an IP", apiServerPod("kube-apiserver-cp2", "cp2", "--advertise-address=$(HOST_IP)"), known, false, nil},
		{"hosted control plane replicas share their load balancer address by design",
			rsOwned(apiServerPod("tenant-a-1", "cp2", "--advertise-address=10.0.0.11")), known, false, nil},
		{"deleting and failed pods are not competitors", apiServerPod("kube-apiserver-cp2", "cp2", "--advertise-address=10.0.0.12"),
			cluster{nodes: nodes, pods: []*corev1.Pod{deleting, failed}, synced: true}, true, nil},
		{"hosted control plane pods are not competitors", apiServerPod("kube-apiserver-cp1", "cp1", "--advertise-address=10.0.0.11"),
			cluster{nodes: nodes, pods: []*corev1.Pod{rsOwned(apiServerPod("tenant-a-1", "cp2", "--advertise-address=10.0.0.11"))}, synced: true}, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check(t, apiserver.AdvertiseAddressRule{}, policy.Target{Object: tt.pod, Cluster: tt.cluster}, tt.wantApplies, tt.want)
		})
	}
}

func TestIsAPIServer(t *testing.T) {
	for _, tt := range []struct {
		c    corev1.Container
		want bool
	}{
		{corev1.Container{Name: "kube-apiserver"}, true},
		{corev1.Container{Name: "x", Command: []string{"kube-apiserver"}}, true},
		{corev1.Container{Name: "x", Command: []string{"/usr/local/bin/kube-apiserver", "--v=2"}}, true},
		{corev1.Container{Name: "x", Args: []string{"/kube-apiserver"}}, true},
		{corev1.Container{Name: "x", Command: []string{"/bin/sh", "-c"}, Args: []string{"kube-apiserver"}}, false},
		{corev1.Container{Name: "x", Command: []string{"kube-apiserver-proxy"}}, false},
		{corev1.Container{Name: "kube-apiserver-proxy"}, false},
	} {
		if got := apiserver.IsAPIServer(&tt.c); got != tt.want {
			t.Errorf("IsAPIServer(%+v) = %v, want %v", tt.c, got, tt.want)
		}
	}
}
