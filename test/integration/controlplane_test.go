package integration

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/apiserver"
)

const (
	// How long the API server may take to see a new webhook configuration,
	// and the server to see a new configuration file or cache contents.
	settle  = 20 * time.Second
	polling = 200 * time.Millisecond
)

// deniedDuringDryRun waits until a dry-run create of obj is denied with a
// message containing want: the API server and the server's cache have
// caught up. The object is not created.
func deniedDuringDryRun(ctx context.Context, obj client.Object, want string) {
	GinkgoHelper()
	Eventually(func() error {
		return k8s.Create(ctx, obj.DeepCopyObject().(client.Object), client.DryRunAll)
	}).WithTimeout(settle).WithPolling(polling).Should(MatchError(ContainSubstring(want)))
}

// warnedDuringDryRun waits until a dry-run create of obj is admitted with a
// warning containing want.
func warnedDuringDryRun(ctx context.Context, obj client.Object, want string) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		got := clientWarnings.During(func() {
			g.Expect(k8s.Create(ctx, obj.DeepCopyObject().(client.Object), client.DryRunAll)).To(Succeed())
		})
		g.Expect(got).To(ContainElement(ContainSubstring(want)))
	}).WithTimeout(settle).WithPolling(polling).Should(Succeed())
}

// useConfig switches the server to the built-in configuration changed by
// edit, for the rest of the spec.
func useConfig(edit func(*config.PolicyConfiguration)) {
	writeConfig(configYAML(edit))
	DeferCleanup(func() { writeConfig(configYAML(nil)) })
}

func probeOn(host string) *corev1.Probe {
	return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
		Host: host, Path: "/livez", Port: intstr.FromInt32(6443), Scheme: corev1.URISchemeHTTPS}}}
}

// apiServerContainer is kubeadm's kube-apiserver container: probes on
// probeHost and the given flags.
func apiServerContainer(probeHost string, flags ...string) corev1.Container {
	return corev1.Container{
		Name:           "kube-apiserver",
		Image:          "registry.k8s.io/kube-apiserver:v1.37.2",
		Command:        append([]string{"kube-apiserver", "--secure-port=6443"}, flags...),
		LivenessProbe:  probeOn(probeHost),
		ReadinessProbe: probeOn(probeHost),
		StartupProbe:   probeOn(probeHost),
	}
}

// apiServerPod is a kube-apiserver pod as kubeadm's static pod manifest
// describes it, bound to nodeName.
func apiServerPod(namespace, nodeName string, c corev1.Container) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "kube-apiserver-", Namespace: namespace,
			Labels: map[string]string{"component": "kube-apiserver", "tier": "control-plane"},
		},
		Spec: corev1.PodSpec{HostNetwork: true, NodeName: nodeName, Containers: []corev1.Container{c}},
	}
}

// asMirrorPod marks p as the kubelet's mirror of a static pod.
func asMirrorPod(p *corev1.Pod) *corev1.Pod {
	p.Annotations = map[string]string{policy.MirrorPodAnnotation: "0123456789abcdef"}
	return p
}

// newNode creates a Node with the given InternalIP and deletes it afterwards.
func newNode(ctx context.Context, internalIP string) string {
	GinkgoHelper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{GenerateName: "cp-"}}
	Expect(k8s.Create(ctx, n)).To(Succeed())
	DeferCleanup(func(ctx context.Context) { Expect(client.IgnoreNotFound(k8s.Delete(ctx, n))).To(Succeed()) })
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: internalIP}, {Type: corev1.NodeHostName, Address: n.Name}}
	Expect(k8s.Status().Update(ctx, n)).To(Succeed())
	return n.Name
}

func kubeadmConfigMap(clusterConfiguration string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kubeadm-config"},
		Data:       map[string]string{"ClusterConfiguration": clusterConfiguration},
	}
}

func kubeVIPDaemonSet(namespace, tag string) *appsv1.DaemonSet {
	labels := map[string]string{"app": "kube-vip"}
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "kube-vip-", Namespace: namespace},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{HostNetwork: true, Containers: []corev1.Container{{
					Name: "kube-vip", Image: "ghcr.io/kube-vip/kube-vip:" + tag, Args: []string{"manager"},
					Env: envVars("vip_arp", "true", "address", "10.0.0.100", "cp_enable", "true", "lb_enable", "true", "lb_port", "6443"),
				}}},
			},
		},
	}
}

func apiServerDeployment(namespace string, c corev1.Container) *appsv1.Deployment {
	labels := map[string]string{"app": "tenant-apiserver"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "tenant-apiserver-", Namespace: namespace},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{c}},
			},
		},
	}
}

const (
	v1beta3WithArg = `apiVersion: kubeadm.k8s.io/v1beta3
kind: ClusterConfiguration
kubernetesVersion: v1.30.4
controlPlaneEndpoint: lb.example.com:6443
apiServer:
  extraArgs:
    advertise-address: 10.0.0.11
    authorization-mode: Node,RBAC
`
	v1beta4WithArg = `apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: v1.31.0
controlPlaneEndpoint: lb.example.com:6443
apiServer:
  extraArgs:
  - name: authorization-mode
    value: Node,RBAC
  - name: advertise-address
    value: 10.0.0.11
`
	v1beta4WithoutArg = `apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: v1.31.0
controlPlaneEndpoint: lb.example.com:6443
apiServer:
  extraArgs:
  - name: authorization-mode
    value: Node,RBAC
`
)

var _ = Describe("apiserver-advertise-address on kube-system/kubeadm-config", func() {
	It("denies advertise-address in apiServer.extraArgs in v1beta3 and v1beta4, and accepts the config without it", func(ctx context.Context) {
		deniedDuringDryRun(ctx, kubeadmConfigMap(v1beta3WithArg), "[apiserver-advertise-address] data[ClusterConfiguration].apiServer.extraArgs[advertise-address]")

		err := k8s.Create(ctx, kubeadmConfigMap(v1beta3WithArg))
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "denied: %v", err)
		Expect(err).To(MatchError(ContainSubstring("localAPIEndpoint.advertiseAddress")))

		err = k8s.Create(ctx, kubeadmConfigMap(v1beta4WithArg))
		Expect(err).To(MatchError(ContainSubstring("[apiserver-advertise-address] data[ClusterConfiguration].apiServer.extraArgs[1]: advertise-address=10.0.0.11")))

		cm := kubeadmConfigMap(v1beta4WithoutArg)
		Expect(k8s.Create(ctx, cm)).To(Succeed())
		DeferCleanup(func(ctx context.Context) { Expect(client.IgnoreNotFound(k8s.Delete(ctx, cm))).To(Succeed()) })

		By("an update that adds the arg is denied too")
		cm.Data["ClusterConfiguration"] = v1beta4WithArg
		Expect(k8s.Update(ctx, cm)).To(MatchError(ContainSubstring("[apiserver-advertise-address]")))

		By("unparseable YAML is denied with the parse error")
		cm.Data["ClusterConfiguration"] = "apiServer:\n  extraArgs: [\n"
		Expect(k8s.Update(ctx, cm)).To(MatchError(ContainSubstring("cannot be parsed as a kubeadm ClusterConfiguration")))

		By("other ConfigMaps are never sent to the webhook")
		other := kubeadmConfigMap(v1beta3WithArg)
		other.Name = "kubeadm-config-backup"
		Expect(k8s.Create(ctx, other)).To(Succeed())
		DeferCleanup(func(ctx context.Context) { Expect(client.IgnoreNotFound(k8s.Delete(ctx, other))).To(Succeed()) })
	})

	It("only warns in Audit", func(ctx context.Context) {
		useConfig(func(c *config.PolicyConfiguration) { c.Policies[apiserver.AdvertiseAddressID].Mode = policy.Audit })
		warnedDuringDryRun(ctx, kubeadmConfigMap(v1beta3WithArg), "[apiserver-advertise-address] data[ClusterConfiguration]")
	})
})

var _ = Describe("apiserver-probe-host", func() {
	var ns string
	BeforeEach(func(ctx context.Context) { ns = newNamespace(ctx, nil) })

	It("denies a kube-apiserver Deployment with IP-pinned probes in Enforce and warns in Audit (the default)", func(ctx context.Context) {
		useConfig(func(c *config.PolicyConfiguration) { c.Policies[apiserver.ProbeHostID].Mode = policy.Enforce })
		d := apiServerDeployment(ns, apiServerContainer("10.0.0.11"))
		deniedDuringDryRun(ctx, d, "[apiserver-probe-host] spec.template.spec.containers[0].livenessProbe.httpGet.host")
		err := k8s.Create(ctx, d.DeepCopy())
		Expect(err).To(MatchError(ContainSubstring("targets the IP 10.0.0.11")))
		Expect(err).To(MatchError(ContainSubstring("kube-apiserver0+strategic.yaml")))
		Expect(err).To(MatchError(ContainSubstring("spec.template.spec.containers[0].startupProbe.httpGet.host")))

		By("a DNS name is fine")
		Expect(k8s.Create(ctx, apiServerDeployment(ns, apiServerContainer("cp1.example.com")))).To(Succeed())

		By("back in Audit, the default")
		writeConfig(configYAML(nil))
		warned := counter("endpoint_policy_admission_decisions_total", map[string]string{"policy": "apiserver-probe-host", "action": "warn"})
		warnedDuringDryRun(ctx, d, "[apiserver-probe-host] spec.template.spec.containers[0].readinessProbe.httpGet.host")
		got := clientWarnings.During(func() { Expect(k8s.Create(ctx, d)).To(Succeed()) })
		Expect(got).To(HaveLen(3), "one warning per probe: %v", got)
		Expect(counter("endpoint_policy_admission_decisions_total",
			map[string]string{"policy": "apiserver-probe-host", "action": "warn"})).To(BeNumerically(">=", warned+2))
	})

	It("never blocks an update that leaves the pod template as it was", func(ctx context.Context) {
		d := apiServerDeployment(ns, apiServerContainer("10.0.0.11"))
		Expect(k8s.Create(ctx, d)).To(Succeed(), "admitted in Audit")

		useConfig(func(c *config.PolicyConfiguration) { c.Policies[apiserver.ProbeHostID].Mode = policy.Enforce })
		deniedDuringDryRun(ctx, apiServerDeployment(ns, apiServerContainer("10.0.0.11")), "[apiserver-probe-host]")

		patch := client.MergeFrom(d.DeepCopy())
		d.Labels = map[string]string{"touched": "true"}
		d.Spec.Replicas = ptr.To[int32](3)
		Expect(k8s.Patch(ctx, d, patch)).To(Succeed(), "labels and scale do not touch the template")

		patch = client.MergeFrom(d.DeepCopy())
		d.Spec.Template.Spec.Containers[0].LivenessProbe.HTTPGet.Host = "10.0.0.12"
		Expect(k8s.Patch(ctx, d, patch)).To(MatchError(ContainSubstring("[apiserver-probe-host]")))
	})

	It("admits a mirror pod with warnings for the client, an Event and a metric, whatever the mode", func(ctx context.Context) {
		useConfig(func(c *config.PolicyConfiguration) { c.Policies[apiserver.ProbeHostID].Mode = policy.Enforce })
		nodeName := newNode(ctx, "10.0.0.11")
		deniedDuringDryRun(ctx, apiServerPod(ns, nodeName, apiServerContainer("10.0.0.11")), "[apiserver-probe-host]")

		mirror := asMirrorPod(apiServerPod(ns, nodeName, apiServerContainer("10.0.0.11")))
		got := clientWarnings.During(func() { Expect(k8s.Create(ctx, mirror)).To(Succeed()) })
		Expect(got).To(ContainElement(HavePrefix("[apiserver-probe-host] spec.containers[0].livenessProbe.httpGet.host: the livenessProbe")))

		Eventually(func(g Gomega) {
			events := &eventsv1.EventList{}
			g.Expect(k8s.List(ctx, events, client.InNamespace(ns))).To(Succeed())
			g.Expect(events.Items).To(ContainElement(SatisfyAll(
				HaveField("Regarding.Name", mirror.Name),
				HaveField("Regarding.UID", mirror.UID),
				HaveField("Reason", "PolicyViolation"),
				HaveField("Type", corev1.EventTypeWarning),
				HaveField("Note", ContainSubstring("[apiserver-probe-host] spec.containers[0].livenessProbe.httpGet.host")),
			)))
		}).WithTimeout(settle).WithPolling(polling).Should(Succeed())
	})
})

var _ = Describe("apiserver-advertise-address on kube-apiserver pods", func() {
	var ns, cpA, cpB string
	BeforeEach(func(ctx context.Context) {
		ns = newNamespace(ctx, nil)
		cpA = newNode(ctx, "10.0.0.11")
		cpB = newNode(ctx, "10.0.0.12")
	})

	It("reports the second of two kube-apiservers on two nodes that share an advertise address", func(ctx context.Context) {
		first := asMirrorPod(apiServerPod(ns, cpA, apiServerContainer("", "--advertise-address=10.0.0.11")))
		got := clientWarnings.During(func() { Expect(k8s.Create(ctx, first)).To(Succeed()) })
		Expect(got).NotTo(ContainElement(ContainSubstring("[apiserver-advertise-address]")), "its own node's address")

		second := apiServerPod(ns, cpB, apiServerContainer("", "--advertise-address", "10.0.0.11"))
		want := "already used by kube-apiserver pod " + ns + "/" + first.Name + " on node " + cpA
		deniedDuringDryRun(ctx, second, want)
		err := k8s.Create(ctx, second.DeepCopy())
		Expect(err).To(MatchError(ContainSubstring("[apiserver-advertise-address] spec.containers[0].command[3]: --advertise-address 10.0.0.11")))

		By("as a mirror pod it is admitted, with the warning")
		got = clientWarnings.During(func() { Expect(k8s.Create(ctx, asMirrorPod(second))).To(Succeed()) })
		Expect(got).To(ContainElement(ContainSubstring(want)))
	})

	It("reports an advertise address that is not one of its node's addresses", func(ctx context.Context) {
		p := apiServerPod(ns, cpA, apiServerContainer("", "--advertise-address=10.0.0.99"))
		deniedDuringDryRun(ctx, p, "--advertise-address 10.0.0.99 is not an address of node "+cpA)

		By("its own address is fine")
		Expect(k8s.Create(ctx, apiServerPod(ns, cpB, apiServerContainer("", "--advertise-address=10.0.0.12")))).To(Succeed())
	})

	It("gives no verdict for a node it does not know", func(ctx context.Context) {
		// Wait until the cache knows the nodes, so that "unknown" is about
		// the node and not a cold cache.
		deniedDuringDryRun(ctx, apiServerPod(ns, cpA, apiServerContainer("", "--advertise-address=10.0.0.99")), "is not an address")
		Expect(k8s.Create(ctx, apiServerPod(ns, "cp-not-registered-yet", apiServerContainer("", "--advertise-address=10.0.0.99")))).To(Succeed())
	})
})

var _ = Describe("kube-vip-ipvs-backends", func() {
	It("denies a kube-vip v0.8.4 DaemonSet with the control-plane load balancer and admits v0.8.10", func(ctx context.Context) {
		ns := newNamespace(ctx, nil)
		deniedDuringDryRun(ctx, kubeVIPDaemonSet(ns, "v0.8.4"), "[kube-vip-ipvs-backends] spec.template.spec.containers[0].image")
		err := k8s.Create(ctx, kubeVIPDaemonSet(ns, "v0.8.4"))
		Expect(err).To(MatchError(ContainSubstring("kube-vip #875")))
		Expect(err).To(MatchError(ContainSubstring("lb_enable=false")))

		Expect(k8s.Create(ctx, kubeVIPDaemonSet(ns, "v0.8.10"))).To(Succeed())

		lbOff := kubeVIPDaemonSet(ns, "v0.8.4")
		lbOff.Spec.Template.Spec.Containers[0].Env = envVars("cp_enable", "true", "lb_enable", "false")
		Expect(k8s.Create(ctx, lbOff)).To(Succeed())
	})
})
