package kubevip_test

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/kubevip"
)

func env(kv ...string) []corev1.EnvVar {
	var out []corev1.EnvVar
	for i := 0; i < len(kv); i += 2 {
		out = append(out, corev1.EnvVar{Name: kv[i], Value: kv[i+1]})
	}
	return out
}

// controlPlaneLB is the env of `kube-vip manifest pod --controlplane
// --enableLoadBalancer`.
var controlPlaneLB = env("vip_arp", "true", "port", "6443", "cp_enable", "true", "lb_enable", "true", "lb_port", "6443", "lb_fwdmethod", "local")

func staticPod(image string, e []corev1.EnvVar) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-vip-cp1", Namespace: "kube-system"},
		Spec: corev1.PodSpec{HostNetwork: true, Containers: []corev1.Container{
			{Name: "kube-vip", Image: image, Args: []string{"manager"}, Env: e},
		}},
	}
}

func TestRule(t *testing.T) {
	rule, err := kubevip.New(kubevip.Advisories)
	if err != nil {
		t.Fatal(err)
	}
	daemonSet := &appsv1.DaemonSet{Spec: appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "other", Image: "busybox"}, {Name: "kube-vip", Image: "ghcr.io/kube-vip/kube-vip:v0.8.4", Env: controlPlaneLB}},
	}}}}
	excluded := staticPod("ghcr.io/kube-vip/kube-vip:v0.8.4", controlPlaneLB)
	excluded.Labels = map[string]string{policy.ExcludeLabel: "true"}
	fromConfigMap := append(env("cp_enable", "true"), corev1.EnvVar{Name: "lb_enable",
		ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{Key: "lb"}}})

	tests := []struct {
		name        string
		obj         client.Object
		wantApplies bool
		wantField   string // "" for no finding
	}{
		{"v0.8.0, first affected", staticPod("ghcr.io/kube-vip/kube-vip:v0.8.0", controlPlaneLB), true, "spec.containers[0].image"},
		{"v0.8.4", staticPod("ghcr.io/kube-vip/kube-vip:v0.8.4", controlPlaneLB), true, "spec.containers[0].image"},
		{"v0.8.9, last affected", staticPod("ghcr.io/kube-vip/kube-vip:v0.8.9", controlPlaneLB), true, "spec.containers[0].image"},
		{"tag without v", staticPod("ghcr.io/kube-vip/kube-vip:0.8.7", controlPlaneLB), true, "spec.containers[0].image"},
		{"tag and digest", staticPod("ghcr.io/kube-vip/kube-vip:v0.8.4@sha256:"+strings.Repeat("a", 64), controlPlaneLB), true, "spec.containers[0].image"},
		{"old Docker Hub repository", staticPod("plndr/kube-vip:v0.8.2", controlPlaneLB), true, "spec.containers[0].image"},
		{"mirror registry with a port", staticPod("registry.internal:5000/mirror/kube-vip:v0.8.3", controlPlaneLB), true, "spec.containers[0].image"},
		{"booleans as kube-vip parses them", staticPod("ghcr.io/kube-vip/kube-vip:v0.8.4", env("cp_enable", "1", "lb_enable", "True")), true, "spec.containers[0].image"},
		{"DaemonSet", daemonSet, true, "spec.template.spec.containers[1].image"},
		{"v0.8.10, fixed", staticPod("ghcr.io/kube-vip/kube-vip:v0.8.10", controlPlaneLB), true, ""},
		{"v0.9.0, fixed", staticPod("ghcr.io/kube-vip/kube-vip:v0.9.0", controlPlaneLB), true, ""},
		{"v0.7.2, before the health check", staticPod("ghcr.io/kube-vip/kube-vip:v0.7.2", controlPlaneLB), true, ""},
		{"v0.8.10 release candidate counts as v0.8.10", staticPod("ghcr.io/kube-vip/kube-vip:v0.8.10-rc.1", controlPlaneLB), true, ""},
		{"lb_enable=false", staticPod("ghcr.io/kube-vip/kube-vip:v0.8.4", env("cp_enable", "true", "lb_enable", "false")), true, ""},
		{"lb_enable unset", staticPod("ghcr.io/kube-vip/kube-vip:v0.8.4", env("cp_enable", "true")), true, ""},
		{"services only (cp_enable=false)", staticPod("ghcr.io/kube-vip/kube-vip:v0.8.4", env("cp_enable", "false", "lb_enable", "true")), true, ""},
		{"the last duplicate env entry wins", staticPod("ghcr.io/kube-vip/kube-vip:v0.8.4", append(controlPlaneLB, env("lb_enable", "false")...)), true, ""},
		{"lb_enable from a ConfigMap is unknown", staticPod("ghcr.io/kube-vip/kube-vip:v0.8.4", fromConfigMap), true, ""},
		{"latest is unknown", staticPod("ghcr.io/kube-vip/kube-vip:latest", controlPlaneLB), true, ""},
		{"untagged is unknown", staticPod("ghcr.io/kube-vip/kube-vip", controlPlaneLB), true, ""},
		{"digest only is unknown", staticPod("ghcr.io/kube-vip/kube-vip@sha256:"+strings.Repeat("b", 64), controlPlaneLB), true, ""},
		{"a floating minor tag is unknown", staticPod("ghcr.io/kube-vip/kube-vip:v0.8", controlPlaneLB), true, ""},
		{"another kube-vip image", staticPod("ghcr.io/kube-vip/kube-vip-cloud-provider:v0.8.4", controlPlaneLB), false, ""},
		{"a registry named kube-vip", staticPod("kube-vip:5000/app:v0.8.4", controlPlaneLB), false, ""},
		{"excluded", excluded, false, ""},
		{"not a workload", &corev1.Service{}, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			findings, applies := rule.Evaluate(policy.Target{Object: tt.obj})
			if applies != tt.wantApplies {
				t.Errorf("applies = %v, want %v", applies, tt.wantApplies)
			}
			if tt.wantField == "" {
				if len(findings) != 0 {
					t.Errorf("want no finding, got %v", findings)
				}
				return
			}
			if len(findings) != 1 {
				t.Fatalf("want 1 finding, got %v", findings)
			}
			f := findings[0]
			if f.Field.String() != tt.wantField {
				t.Errorf("field = %s, want %s", f.Field, tt.wantField)
			}
			for _, s := range []string{"kube-vip #875", "cp_enable=true and lb_enable=true", "never re-adds", "v0.8.10", "v0.9.0", "lb_enable=false"} {
				if !strings.Contains(f.Message, s) {
					t.Errorf("message %q does not contain %q", f.Message, s)
				}
			}
		})
	}
}

func TestNewRejectsMalformedAdvisories(t *testing.T) {
	for _, a := range []kubevip.Advisory{
		{Reference: "bad introduced", Introduced: "x", Fixed: "1.0.0"},
		{Reference: "bad fixed", Introduced: "1.0.0", Fixed: "latest"},
		{Reference: "empty range", Introduced: "1.0.0", Fixed: "1.0.0"},
		{Reference: "no configuration", Introduced: "1.0.0", Fixed: "1.0.1"},
		{Reference: "no fix and no last unaffected", Introduced: "1.0.0", When: [][]kubevip.Condition{{{Env: "a", Op: kubevip.True}}}},
		{Reference: "equals without a value", Introduced: "1.0.0", Fixed: "1.0.1", When: [][]kubevip.Condition{{{Env: "a", Op: kubevip.Equals}}}},
		{Reference: "an unknown image", Introduced: "1.0.0", Fixed: "1.0.1", When: [][]kubevip.Condition{{{Op: kubevip.Image, Value: "kube-vip-cloud-provider"}}}},
		{Reference: "an unknown op", Introduced: "1.0.0", Fixed: "1.0.1", When: [][]kubevip.Condition{{{Env: "a", Op: "maybe"}}}},
	} {
		if _, err := kubevip.New([]kubevip.Advisory{a}); err == nil || !strings.Contains(err.Error(), a.Reference) {
			t.Errorf("New(%+v) error = %v, want one naming the advisory", a, err)
		}
	}
}

func TestAnotherAdvisoryIsATableRow(t *testing.T) {
	rule, err := kubevip.New(append(kubevip.Advisories, kubevip.Advisory{
		Reference: "example #1", Introduced: "0.9.2", Fixed: "0.9.4", When: [][]kubevip.Condition{{{Env: "svc_enable", Op: kubevip.True}}},
		Problem: "p", Fix: "f",
	}))
	if err != nil {
		t.Fatal(err)
	}
	findings, _ := rule.Evaluate(policy.Target{Object: staticPod("ghcr.io/kube-vip/kube-vip:v0.9.3", env("svc_enable", "true"))})
	if len(findings) != 1 || !strings.Contains(findings[0].Message, "example #1") {
		t.Errorf("findings = %v, want the new advisory", findings)
	}
}

// kubespray's kube-vip static pod (kubespray v2.28-v2.29,
// roles/kubernetes/node/templates/manifests/kube-vip.manifest.j2) rendered
// with kube_vip_lb_fwdmethod: masquerade, kube-vip #875's IPVS
// configuration: kube_vip_image_repo is then
// ghcr.io/kube-vip/kube-vip-iptables.
func kubesprayKubeVIP(image string) *corev1.Pod {
	p := staticPod(image, env("vip_arp", "true", "port", "6443", "vip_interface", "eth0", "vip_cidr", "32",
		"dns_mode", "first", "cp_enable", "true", "cp_namespace", "kube-system", "vip_ddns", "false", "svc_enable", "false",
		"vip_leaderelection", "true", "vip_leaseduration", "5", "vip_renewdeadline", "3", "vip_retryperiod", "1",
		"lb_enable", "true", "lb_port", "6443", "lb_fwdmethod", "masquerade", "address", "10.0.0.100"))
	p.Name = "kube-vip"
	return p
}

func TestRuleImagesAndAdvisories(t *testing.T) {
	rule, err := kubevip.New(kubevip.Advisories)
	if err != nil {
		t.Fatal(err)
	}
	// kube-vip's Helm chart (kube-vip/helm-charts charts/kube-vip) with
	// services load balancing on.
	services := env("vip_arp", "true", "cp_enable", "false", "svc_enable", "true", "svc_election", "true", "vip_leaderelection", "true")
	tests := []struct {
		name string
		pod  *corev1.Pod
		want []string // the advisory each finding names, in order
	}{
		{"kubespray masquerade: kube-vip-iptables v0.8.9", kubesprayKubeVIP("ghcr.io/kube-vip/kube-vip-iptables:v0.8.9"), []string{"kube-vip #875"}},
		{"kube-vip-iptables from Docker Hub", kubesprayKubeVIP("plndr/kube-vip-iptables:v0.8.2"), []string{"kube-vip #875"}},
		{"Rancher's mirror of kube-vip", kubesprayKubeVIP("rancher/mirrored-kube-vip-kube-vip:v0.8.7"), []string{"kube-vip #875"}},
		{"Rancher's mirror of kube-vip-iptables", kubesprayKubeVIP("rancher/mirrored-kube-vip-kube-vip-iptables:v0.8.7"), []string{"kube-vip #875"}},
		{"kube-vip-iptables v0.8.10: fixed", kubesprayKubeVIP("ghcr.io/kube-vip/kube-vip-iptables:v0.8.10"), nil},
		{"services VIP, v1.0.1: first affected", staticPod("ghcr.io/kube-vip/kube-vip:v1.0.1", services), []string{"kube-vip #1377"}},
		{"services VIP, v1.0.3: last affected", staticPod("ghcr.io/kube-vip/kube-vip:v1.0.3", services), []string{"kube-vip #1377"}},
		{"services VIP, v1.0.0: before", staticPod("ghcr.io/kube-vip/kube-vip:v1.0.0", services), nil},
		{"services VIP, v1.0.4: fixed", staticPod("ghcr.io/kube-vip/kube-vip:v1.0.4", services), nil},
		{"control plane only on v1.0.2", staticPod("ghcr.io/kube-vip/kube-vip:v1.0.2", controlPlaneLB), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			findings, applies := rule.Evaluate(policy.Target{Object: tt.pod})
			if !applies {
				t.Fatal("the rule does not apply to a kube-vip image")
			}
			var got []string
			for _, f := range findings {
				for _, a := range kubevip.Advisories {
					if strings.Contains(f.Message, "("+a.Reference+", "+a.Link+";") {
						got = append(got, a.Reference)
					}
				}
				if !strings.Contains(f.Message, "Fix: ") {
					t.Errorf("message %q has no fix", f.Message)
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("advisories %v, want %v (findings %v)", got, tt.want, findings)
			}
		})
	}
}
