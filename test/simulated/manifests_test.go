package simulated

import (
	"os"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func writeFile(path string, data []byte) error { return os.WriteFile(path, data, 0o600) }

func hostNetworkPod(name string, env []corev1.EnvVar) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: name + "-", Namespace: "kube-system"},
		Spec: corev1.PodSpec{HostNetwork: true, Containers: []corev1.Container{{
			Name: name, Image: "registry.k8s.io/pause:3.10", Env: env,
		}}},
	}
}

var pinned = []corev1.EnvVar{{Name: "KUBERNETES_SERVICE_HOST", Value: "10.0.1.16"}, {Name: "KUBERNETES_SERVICE_PORT", Value: "6443"}}

// kubeProxyDaemonSet is kubeadm's kube-proxy DaemonSet
// (cmd/kubeadm/app/phases/addons/proxy/manifests.go, v1.37), its volumes
// left out: kwok runs no container.
func kubeProxyDaemonSet() *appsv1.DaemonSet {
	labels := map[string]string{"k8s-app": "kube-proxy"}
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-proxy", Namespace: "kube-system", Labels: labels},
		Spec: appsv1.DaemonSetSpec{
			Selector:       &metav1.LabelSelector{MatchLabels: labels},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{
						Name: "kube-proxy", Image: "registry.k8s.io/kube-proxy:v1.37.2",
						Command: []string{"/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/config.conf", "--hostname-override=$(NODE_NAME)"},
						Env: []corev1.EnvVar{{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{
							FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}}},
						SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)},
					}},
					HostNetwork:        true,
					ServiceAccountName: "kube-proxy",
					PriorityClassName:  "system-node-critical",
					Tolerations:        []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					NodeSelector:       map[string]string{corev1.LabelOSStable: "linux"},
				},
			},
		},
	}
}

// ciliumAgentDaemonSet is the shape of Cilium's agent DaemonSet
// (install/kubernetes/cilium/templates/cilium-agent/daemonset.yaml, v1.16)
// with k8sServiceHost pinned to one control-plane IP: k0s #5740.
func ciliumAgentDaemonSet() *appsv1.DaemonSet {
	labels := map[string]string{"k8s-app": "cilium", "app.kubernetes.io/name": "cilium-agent", "app.kubernetes.io/part-of": "cilium"}
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "cilium", Namespace: "kube-system", Labels: labels},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"k8s-app": "cilium"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{
						Name: "cilium-agent", Image: "quay.io/cilium/cilium:v1.16.5",
						Command: []string{"cilium-agent"}, Args: []string{"--config-dir=/tmp/cilium/config-map"},
						Env: append([]corev1.EnvVar{{Name: "K8S_NODE_NAME", ValueFrom: &corev1.EnvVarSource{
							FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}}}, pinned...),
					}},
					HostNetwork:        true,
					ServiceAccountName: "cilium",
					PriorityClassName:  "system-node-critical",
					Tolerations:        []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					NodeSelector:       map[string]string{corev1.LabelOSStable: "linux"},
				},
			},
		},
	}
}

// ciliumOperatorDeployment is the shape of Cilium's operator Deployment
// (install/kubernetes/cilium/templates/cilium-operator/deployment.yaml,
// v1.16): two replicas, hostNetwork, every taint tolerated, one per node.
func ciliumOperatorDeployment() *appsv1.Deployment {
	labels := map[string]string{"io.cilium/app": "operator", "name": "cilium-operator"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "cilium-operator", Namespace: "kube-system", Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{
						Name: "cilium-operator", Image: "quay.io/cilium/operator-generic:v1.16.5",
						Command: []string{"cilium-operator-generic"}, Env: pinned,
					}},
					HostNetwork:        true,
					ServiceAccountName: "cilium-operator",
					PriorityClassName:  "system-cluster-critical",
					Tolerations:        []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					NodeSelector:       map[string]string{corev1.LabelOSStable: "linux"},
					Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
						RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
							LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"io.cilium/app": "operator"}},
							TopologyKey:   corev1.LabelHostname,
						}},
					}},
				},
			},
		},
	}
}
