package node

import (
	"context"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/endpoint-policy/endpoint-policy/internal/policy/kubeproxy"
	"github.com/endpoint-policy/endpoint-policy/internal/testing/metricstest"
)

// kubeProxyImage is the real kube-proxy, built from the pinned module,
// under its upstream name. Its iptables come from the host (hostPath, read
// only), as the binaries an image of it would carry.
const kubeProxyImage = "registry.k8s.io/kube-proxy:v1.37.2"

var _ = Describe("kube-proxy on a node being deleted (KEP-3836, Gardener #11858)", func() {
	It("goes unready on ToBeDeletedByClusterAutoscaler, is annotated with the metric's series, and both are undone with the taint", func(ctx context.Context) {
		ds, pod := kubeProxyPod()
		Expect(k8s.Create(ctx, ds)).To(Succeed())
		DeferCleanup(func(ctx context.Context) { Expect(client.IgnoreNotFound(k8s.Delete(ctx, ds))).To(Succeed()) })
		pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: ds.Name, UID: ds.UID, Controller: ptr.To(true)}}
		Expect(k8s.Create(ctx, pod)).To(Succeed())
		DeferCleanup(func(ctx context.Context) {
			Expect(client.IgnoreNotFound(k8s.Delete(ctx, pod, client.GracePeriodSeconds(0)))).To(Succeed())
		})
		ready := func(g Gomega) bool {
			p := &corev1.Pod{}
			g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(pod), p)).To(Succeed())
			return isReady(p)
		}
		By("kube-proxy runs and is ready")
		Eventually(ready).WithTimeout(60 * time.Second).WithPolling(time.Second).Should(BeTrue())

		By("the node is tainted ToBeDeletedByClusterAutoscaler: kube-proxy's /healthz fails, the pod goes unready, the controller annotates it")
		setTaint(ctx, true)
		DeferCleanup(func(ctx context.Context) { setTaint(ctx, false) })
		Eventually(ready).WithTimeout(60 * time.Second).WithPolling(time.Second).Should(BeFalse())
		Eventually(func(g Gomega) map[string]string {
			p := &corev1.Pod{}
			g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(pod), p)).To(Succeed())
			return p.Annotations
		}).WithTimeout(30 * time.Second).WithPolling(time.Second).Should(HaveKeyWithValue(kubeproxy.NodeDeletingAnnotation, kubeproxy.ToBeDeletedTaint))
		Expect(deletingSeries()).To(HaveLen(1))

		By("the taint removed: ready again, the annotation and the series gone")
		setTaint(ctx, false)
		Eventually(ready).WithTimeout(60 * time.Second).WithPolling(time.Second).Should(BeTrue())
		Eventually(func(g Gomega) map[string]string {
			p := &corev1.Pod{}
			g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(pod), p)).To(Succeed())
			return p.Annotations
		}).WithTimeout(30 * time.Second).WithPolling(time.Second).ShouldNot(HaveKey(kubeproxy.NodeDeletingAnnotation))
		Eventually(deletingSeries).WithTimeout(30 * time.Second).Should(BeEmpty())
	})
})

func deletingSeries() []float64 {
	GinkgoHelper()
	v, err := metricstest.Values(crmetrics.Registry, "endpoint_policy_kube_proxy_node_deleting", map[string]string{"node": nodeName})
	Expect(err).NotTo(HaveOccurred())
	return v
}

// setTaint adds or removes cluster-autoscaler's ToBeDeletedByClusterAutoscaler.
func setTaint(ctx context.Context, on bool) {
	GinkgoHelper()
	Eventually(func() error {
		n := &corev1.Node{}
		if err := k8s.Get(ctx, client.ObjectKey{Name: nodeName}, n); err != nil {
			return err
		}
		var taints []corev1.Taint
		for _, t := range n.Spec.Taints {
			if t.Key != kubeproxy.ToBeDeletedTaint {
				taints = append(taints, t)
			}
		}
		if on {
			taints = append(taints, corev1.Taint{Key: kubeproxy.ToBeDeletedTaint, Value: "1765000000", Effect: corev1.TaintEffectNoSchedule})
		}
		n.Spec.Taints = taints
		return k8s.Update(ctx, n)
	}).WithTimeout(10 * time.Second).Should(Succeed())
}

// kubeProxyPod is kubeadm's kube-proxy DaemonSet (its labels, hostNetwork,
// privileged, its readiness on /healthz) and the pod of it on the node,
// bound by name: the suite runs no DaemonSet controller. kube-proxy reads
// the API server with the node's kubeconfig (a hostPath), and the host's
// iptables (iptables-nft) through hostPaths; it writes no conntrack or
// route_localnet sysctl.
func kubeProxyPod() (*appsv1.DaemonSet, *corev1.Pod) {
	labels := map[string]string{"k8s-app": "kube-proxy"}
	hostPath := func(name, path string, t corev1.HostPathType) (corev1.Volume, corev1.VolumeMount) {
		return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: path, Type: &t}}},
			corev1.VolumeMount{Name: name, MountPath: path, ReadOnly: true}
	}
	var volumes []corev1.Volume
	var mounts []corev1.VolumeMount
	for name, path := range map[string]string{"usr": "/usr", "lib": "/lib", "lib64": "/lib64", "sbin": "/sbin", "bin": "/bin", "alternatives": "/etc/alternatives"} {
		v, m := hostPath(name, path, corev1.HostPathDirectory)
		volumes, mounts = append(volumes, v), append(mounts, m)
	}
	v, m := hostPath("kubeconfig", filepath.Join(node.dir, "kubeconfig"), corev1.HostPathFile)
	m.MountPath = "/var/lib/kube-proxy/kubeconfig.conf"
	volumes, mounts = append(volumes, v), append(mounts, m)
	spec := corev1.PodSpec{
		HostNetwork: true,
		Volumes:     volumes,
		Containers: []corev1.Container{{
			Name: "kube-proxy", Image: kubeProxyImage, ImagePullPolicy: corev1.PullNever,
			Command: []string{"/endpoint-policy", "--kubeconfig=/var/lib/kube-proxy/kubeconfig.conf", "--hostname-override=" + nodeName,
				"--proxy-mode=iptables", "--conntrack-max-per-core=0", "--iptables-localhost-nodeports=false",
				"--healthz-bind-address=127.0.0.1:10256", "--metrics-bind-address=127.0.0.1:10249"},
			Env:             []corev1.EnvVar{{Name: "PATH", Value: "/usr/sbin:/usr/bin:/sbin:/bin"}},
			SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true), RunAsUser: ptr.To(int64(0))},
			VolumeMounts:    mounts,
			ReadinessProbe: &corev1.Probe{
				ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Host: "127.0.0.1", Path: "/healthz", Port: intstr.FromInt32(10256)}},
				PeriodSeconds: 1, FailureThreshold: 1,
			},
		}},
	}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-proxy", Labels: labels},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec},
		},
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-proxy-" + nodeName, Labels: labels}, Spec: *spec.DeepCopy()}
	pod.Spec.NodeName = nodeName
	return ds, pod
}
