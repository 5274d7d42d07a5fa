package kubevip_test

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/kubevip"
)

// manifestPod is `kube-vip manifest pod --interface eth0 --address ADDRESS
// --controlplane --arp --leaderElection` as kube-vip v1.2.x prints it
// (pkg/kubevip/config_generator.go, generatePodSpec): the env in its order
// (vip_nodename, from the pod's node, left out), admin.conf mounted at
// /etc/kubernetes/admin.conf. extra env entries are appended
// (the last entry of a name wins).
func manifestPod(image, address string, extra ...string) *corev1.Pod {
	p := staticPod(image, env("vip_arp", "true", "port", "6443", "vip_interface", "eth0", "vip_subnet", "32",
		"dns_mode", "first", "cp_enable", "true", "cp_namespace", "kube-system", "vip_leaderelection", "true",
		"vip_leasename", "plndr-cp-lock", "vip_leaseduration", "15", "vip_renewdeadline", "10", "vip_retryperiod", "2",
		"address", address, "prometheus_server", ":2112"))
	p.Name = "kube-vip"
	c := &p.Spec.Containers[0]
	c.Env = append(c.Env, env(extra...)...)
	c.VolumeMounts = []corev1.VolumeMount{{Name: "kubeconfig", MountPath: "/etc/kubernetes/admin.conf"}}
	p.Spec.Volumes = []corev1.Volume{{Name: "kubeconfig", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/etc/kubernetes/admin.conf"}}}}
	return p
}

func TestAdvisories2026(t *testing.T) {
	rule, err := kubevip.New(kubevip.Advisories)
	if err != nil {
		t.Fatal(err)
	}
	const img = "ghcr.io/kube-vip/kube-vip:"
	withoutKubeconfig := manifestPod(img+"v1.2.2", "192.168.0.40")
	withoutKubeconfig.Spec.Containers[0].VolumeMounts = nil
	superAdmin := manifestPod(img+"v1.2.2", "192.168.0.40")
	superAdmin.Spec.Volumes[0].HostPath.Path = "/etc/kubernetes/super-admin.conf" // kubeadm 1.29+, first control plane
	otherConfigFile := manifestPod(img+"v1.2.2", "192.168.0.40", "k8s_config_file", "/etc/kubernetes/kube-vip.conf")
	bgp := manifestPod(img+"v1.2.2", "192.168.0.40", "vip_arp", "false", "bgp_enable", "true")
	routingTable := manifestPod(img+"v1.2.2", "192.168.0.40", "vip_arp", "false", "vip_routingtable", "true")
	masquerade := func(image, address string) *corev1.Pod {
		return manifestPod(image, address, "kubernetes_addr", "127.0.0.1:6443", "lb_enable", "true", "lb_port", "6443", "lb_fwdmethod", "masquerade")
	}
	services := func(image string, extra ...string) *corev1.Pod {
		return manifestPod(image, "192.168.0.40", append([]string{"cp_enable", "false", "svc_enable", "true", "kubernetes_addr", "127.0.0.1:6443"}, extra...)...)
	}
	tests := []struct {
		name string
		pod  *corev1.Pod
		want []string // advisories, in table order
		says string   // a part of the first finding's message
	}{
		// #1654: leader election through its own VIP.
		{"#1654 ARP, admin.conf, v1.2.2", manifestPod(img+"v1.2.2", "192.168.0.40"), []string{"kube-vip #1654"},
			"kube-vip v1.2.2 with cp_enable=true and vip_arp=true and vip_leaderelection=true and kubernetes_addr unset and a kubeconfig mounted at /etc/kubernetes/admin.conf has a known bug (kube-vip #1654, https://github.com/kube-vip/kube-vip/issues/1654; v1.2.2, fixed in v1.2.3)"},
		{"#1654 super-admin.conf mounted at admin.conf", superAdmin, []string{"kube-vip #1654"}, "set kubernetes_addr"},
		{"#1654 BGP", bgp, []string{"kube-vip #1654"}, "bgp_enable=true"},
		{"#1654 the -iptables image", manifestPod("ghcr.io/kube-vip/kube-vip-iptables:v1.2.2", "192.168.0.40"), []string{"kube-vip #1654"}, ""},
		{"#1654 Rancher's mirror, tag without v", manifestPod("rancher/mirrored-kube-vip-kube-vip:1.2.2", "192.168.0.40"), []string{"kube-vip #1654"}, ""},
		{"#1654 workaround: kubernetes_addr", manifestPod(img+"v1.2.2", "192.168.0.40", "kubernetes_addr", "127.0.0.1:6443"), nil, ""},
		{"#1654 no kubeconfig mounted", withoutKubeconfig, nil, ""},
		{"#1654 k8s_config_file elsewhere, not mounted", otherConfigFile, nil, ""},
		{"#1654 routing table mode", routingTable, nil, ""},
		{"#1654 v1.2.3: fixed", manifestPod(img+"v1.2.3", "192.168.0.40"), nil, ""},
		{"#1654 v1.2.1: before", manifestPod(img+"v1.2.1", "192.168.0.40"), nil, ""},
		{"digest only: not judged", manifestPod("ghcr.io/kube-vip/kube-vip@sha256:"+strings.Repeat("c", 64), "192.168.0.40"), nil, ""},
		{"tag and digest", manifestPod(img+"v1.2.2@sha256:"+strings.Repeat("c", 64), "192.168.0.40"), []string{"kube-vip #1654"}, ""},

		// #1655: a DNS-named control-plane VIP.
		{"#1655 DNS name", manifestPod(img+"v1.2.2", "api.cluster.example", "kubernetes_addr", "127.0.0.1:6443"), []string{"kube-vip #1655"},
			"address a DNS name"},
		{"#1655 vip_address, the older name", manifestPod(img+"v1.2.2", "", "kubernetes_addr", "127.0.0.1:6443", "vip_address", "api.cluster.example"),
			[]string{"kube-vip #1655"}, "vip_address a DNS name"},
		{"#1655 an IP address", manifestPod(img+"v1.2.2", "192.168.0.40", "kubernetes_addr", "127.0.0.1:6443"), nil, ""},
		{"#1655 v1.2.3: fixed", manifestPod(img+"v1.2.3", "api.cluster.example"), nil, ""},
		{"#1654 and #1655 together", manifestPod(img+"v1.2.2", "api.cluster.example"), []string{"kube-vip #1654", "kube-vip #1655"}, ""},

		// #1590: IPVS masquerade without iptables.
		{"#1590 v1.1.0", masquerade(img+"v1.1.0", "192.168.0.40"), []string{"kube-vip #1590"},
			"lb_fwdmethod=masquerade and the kube-vip image and address an IPv4 address"},
		{"#1590 v1.2.0", masquerade(img+"v1.2.0", "192.168.0.40"), []string{"kube-vip #1590"}, "v1.1.0 up to v1.2.0, fixed in v1.2.1"},
		{"#1590 the -iptables image has iptables", masquerade("ghcr.io/kube-vip/kube-vip-iptables:v1.2.0", "192.168.0.40"), nil, ""},
		{"#1590 Rancher's -iptables mirror", masquerade("rancher/mirrored-kube-vip-kube-vip-iptables:v1.2.0", "192.168.0.40"), nil, ""},
		{"#1590 lb_fwdmethod=local", manifestPod(img+"v1.2.0", "192.168.0.40", "kubernetes_addr", "127.0.0.1:6443", "lb_enable", "true", "lb_fwdmethod", "local"), nil, ""},
		{"#1590 an IPv6 VIP", masquerade(img+"v1.2.0", "fd00::40"), nil, ""},
		{"#1590 v1.2.1: fixed", masquerade(img+"v1.2.1", "192.168.0.40"), nil, ""},
		{"#1590 v1.0.4: before", masquerade(img+"v1.0.4", "192.168.0.40"), nil, ""},

		// #1747: services without per-service election.
		{"#1747 v1.2.0", services(img + "v1.2.0"), []string{"kube-vip #1747"},
			"v1.2.0 and later; no fixed release is known yet, the last unaffected one is v1.1.2"},
		{"#1747 v1.2.3", services(img+"v1.2.3", "svc_election", "false"), []string{"kube-vip #1747"}, "svc_election not true"},
		{"#1747 routing table with leader election", services(img+"v1.2.3", "vip_arp", "false", "vip_routingtable", "true"), []string{"kube-vip #1747"}, ""},
		{"#1747 workaround: svc_election", services(img+"v1.2.3", "svc_election", "true"), nil, ""},
		{"#1747 v1.1.2: last unaffected", services(img + "v1.1.2"), nil, ""},
		{"#1747 BGP", services(img+"v1.2.3", "vip_arp", "false", "bgp_enable", "true"), nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			findings, applies := rule.Evaluate(policy.Target{Object: tt.pod})
			if !applies {
				t.Fatal("the rule does not apply to a kube-vip image")
			}
			var got []string
			for _, f := range findings {
				got = append(got, f.Rule)
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("advisories %v, want %v (findings %v)", got, tt.want, findings)
			}
			if tt.says != "" && !strings.Contains(findings[0].Message, tt.says) {
				t.Errorf("message %q does not say %q", findings[0].Message, tt.says)
			}
		})
	}
}

func TestConditionHoldsOnlyOnLiterals(t *testing.T) {
	rule, err := kubevip.New(kubevip.Advisories)
	if err != nil {
		t.Fatal(err)
	}
	p := manifestPod("ghcr.io/kube-vip/kube-vip:v1.2.2", "192.168.0.40")
	// kubernetes_addr from a ConfigMap: unknown, so not "unset".
	p.Spec.Containers[0].Env = append(p.Spec.Containers[0].Env, corev1.EnvVar{Name: "kubernetes_addr",
		ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{Key: "addr"}}})
	if findings, _ := rule.Evaluate(policy.Target{Object: p}); len(findings) != 0 {
		t.Errorf("a value from a ConfigMap counted as unset: %v", findings)
	}
}
