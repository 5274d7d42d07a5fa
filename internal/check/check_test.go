package check_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"sigs.k8s.io/yaml"

	"github.com/endpoint-policy/endpoint-policy/internal/check"
	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/kubevip"
)

// verdict is one finding without its message.
type verdict struct {
	Policy, Action, Kind, Namespace, Name, Source string
}

func verdicts(r check.Report) []verdict {
	out := []verdict{}
	for _, f := range r.Findings {
		out = append(out, verdict{string(f.Policy), string(f.Action), f.Kind, f.Namespace, f.Name, f.Source})
	}
	return out
}

func defaultEngine(t testing.TB) *policy.Engine {
	t.Helper()
	e, err := config.Default().Engine()
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestCheckInputShapes(t *testing.T) {
	const td = "testdata"
	tests := []struct {
		name  string
		paths []string
		stdin string
		want  []verdict
		sum   check.Summary
	}{{
		name:  "multi-document YAML with an unknown kind and an empty document",
		paths: []string{td + "/multi-doc.yaml"},
		want: []verdict{
			{"host-network-endpoint", "mutate", "Pod", "kube-system", "cilium-operator", td + "/multi-doc.yaml#0"},
			// kube-vip's template leaves KUBERNETES_SERVICE_HOST unset: its
			// pods get it at admission, nothing to report.
			{"kube-vip-ipvs-backends", "deny", "DaemonSet", "kube-system", "kube-vip", td + "/multi-doc.yaml#3"},
		},
		sum: check.Summary{Objects: 2, Skipped: 1, Deny: 1, Mutate: 1},
	}, {
		name:  "JSON List with an unknown kind among its items",
		paths: []string{td + "/list.json"},
		want:  []verdict{{"host-network-endpoint", "mutate", "Pod", "monitoring", "node-agent", td + "/list.json#0"}},
		sum:   check.Summary{Objects: 2, Skipped: 1, Mutate: 1},
	}, {
		name:  "the kubeadm-config ConfigMap",
		paths: []string{td + "/kubeadm-config.yaml"},
		want:  []verdict{{"apiserver-advertise-address", "deny", "ConfigMap", "kube-system", "kubeadm-config", td + "/kubeadm-config.yaml#0"}},
		sum:   check.Summary{Objects: 1, Deny: 1},
	}, {
		name:  "raw kubeadm files, v1beta3 and v1beta4, several kinds per file",
		paths: []string{td + "/kubeadm"},
		want: []verdict{
			{"apiserver-advertise-address", "deny", "ClusterConfiguration", "", "", td + "/kubeadm/kubeadm-v1beta3.yaml#1"},
			{"apiserver-advertise-address", "deny", "ClusterConfiguration", "", "", td + "/kubeadm/kubeadm-v1beta4.yaml#1"},
			{"apiserver-advertise-address", "deny", "ClusterConfiguration", "", "", td + "/kubeadm/kubeadm-v1beta4.yaml#1"},
		},
		// Init, Cluster, Join, Cluster; the KubeletConfiguration is skipped.
		sum: check.Summary{Objects: 4, Skipped: 1, Deny: 3},
	}, {
		// Read as their mirror pods: host-network-endpoint never changes a
		// mirror pod, so no mutate line per static pod.
		name:  "a static pod manifest directory (other files ignored)",
		paths: []string{td + "/manifests"},
		want: []verdict{
			{"apiserver-probe-host", "warn", "Pod", "kube-system", "kube-apiserver", td + "/manifests/kube-apiserver.yaml#0"},
			{"apiserver-probe-host", "warn", "Pod", "kube-system", "kube-apiserver", td + "/manifests/kube-apiserver.yaml#0"},
			{"apiserver-probe-host", "warn", "Pod", "kube-system", "kube-apiserver", td + "/manifests/kube-apiserver.yaml#0"},
		},
		sum: check.Summary{Objects: 2, Warn: 3},
	}, {
		name:  "kube-up's *.manifest static pods",
		paths: []string{td + "/kube-up/manifests"},
		want:  []verdict{},
		sum:   check.Summary{Objects: 1},
	}, {
		name:  "kubeadm v1beta2, still on older clusters' disks",
		paths: []string{td + "/kubeadm-old"},
		want:  []verdict{{"apiserver-advertise-address", "deny", "ClusterConfiguration", "", "", td + "/kubeadm-old/kubeadm-v1beta2.yaml#1"}},
		sum:   check.Summary{Objects: 2, Deny: 1},
	}, {
		name:  "kubeadm patch files skipped, counted",
		paths: []string{td + "/kubeadm-patches"},
		want: []verdict{
			{"apiserver-advertise-address", "deny", "ClusterConfiguration", "", "", td + "/kubeadm-patches/kubeadm-v1beta4.yaml#1"},
			{"apiserver-advertise-address", "deny", "ClusterConfiguration", "", "", td + "/kubeadm-patches/kubeadm-v1beta4.yaml#1"},
		},
		sum: check.Summary{Objects: 2, SkippedPatches: 1, Deny: 2},
	}, {
		name:  "a comment before the first ---: the only document is #0",
		paths: []string{check.Stdin},
		stdin: "# Source: chart/templates/pod.yaml\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: default}\nspec: {hostNetwork: true, containers: [{name: c, image: i}]}\n",
		want:  []verdict{{"host-network-endpoint", "mutate", "Pod", "default", "p", "-#0"}},
		sum:   check.Summary{Objects: 1, Mutate: 1},
	}, {
		name:  "two kube-apiservers on different nodes sharing an advertise address",
		paths: []string{td + "/shared-address.yaml"},
		want: []verdict{
			{"host-network-endpoint", "mutate", "Pod", "kube-system", "kube-apiserver-cp-1", td + "/shared-address.yaml#0"},
			{"apiserver-advertise-address", "deny", "Pod", "kube-system", "kube-apiserver-cp-1", td + "/shared-address.yaml#0"},
			{"host-network-endpoint", "mutate", "Pod", "kube-system", "kube-apiserver-cp-2", td + "/shared-address.yaml#1"},
			{"apiserver-advertise-address", "deny", "Pod", "kube-system", "kube-apiserver-cp-2", td + "/shared-address.yaml#1"},
		},
		sum: check.Summary{Objects: 2, Deny: 2, Mutate: 2},
	}, {
		name:  "kubespray #11423 with the Nodes: the node that owns the address is not blamed",
		paths: []string{td + "/shared-address-nodes.yaml"},
		want: []verdict{
			{"apiserver-advertise-address", "deny", "Pod", "kube-system", "kube-apiserver-cp-2", td + "/shared-address-nodes.yaml#0"},
			{"apiserver-advertise-address", "deny", "Pod", "kube-system", "kube-apiserver-cp-2", td + "/shared-address-nodes.yaml#0"},
			{"apiserver-advertise-address", "deny", "Pod", "kube-system", "kube-apiserver-cp-3", td + "/shared-address-nodes.yaml#0"},
			{"apiserver-advertise-address", "deny", "Pod", "kube-system", "kube-apiserver-cp-3", td + "/shared-address-nodes.yaml#0"},
		},
		sum: check.Summary{Objects: 6, Deny: 4},
	}, {
		name:  "control-plane-endpoint: cp-1's address as the cluster's endpoint, with the Nodes: each object reported",
		paths: []string{td + "/control-plane-endpoint.yaml", td + "/shared-address-nodes.yaml"},
		want: []verdict{
			{"control-plane-endpoint", "warn", "ClusterConfiguration", "", "", td + "/control-plane-endpoint.yaml#0"},
			{"control-plane-endpoint", "warn", "ConfigMap", "kube-public", "cluster-info", td + "/control-plane-endpoint.yaml#1"},
			{"control-plane-endpoint", "warn", "ConfigMap", "kube-system", "kube-proxy", td + "/control-plane-endpoint.yaml#2"},
			{"control-plane-endpoint", "warn", "DaemonSet", "kube-system", "kube-proxy-gce", td + "/control-plane-endpoint.yaml#3"},
			{"apiserver-advertise-address", "deny", "Pod", "kube-system", "kube-apiserver-cp-2", td + "/shared-address-nodes.yaml#0"},
			{"apiserver-advertise-address", "deny", "Pod", "kube-system", "kube-apiserver-cp-2", td + "/shared-address-nodes.yaml#0"},
			{"apiserver-advertise-address", "deny", "Pod", "kube-system", "kube-apiserver-cp-3", td + "/shared-address-nodes.yaml#0"},
			{"apiserver-advertise-address", "deny", "Pod", "kube-system", "kube-apiserver-cp-3", td + "/shared-address-nodes.yaml#0"},
		},
		sum: check.Summary{Objects: 10, Deny: 4, Warn: 4},
	}, {
		name:  "control-plane-endpoint without Nodes in the files: no verdict",
		paths: []string{td + "/control-plane-endpoint.yaml"},
		sum:   check.Summary{Objects: 4},
	}, {
		name:  "Cilium's chart pinned to a control-plane IP: its pods will be rewritten (k0s #5740)",
		paths: []string{td + "/cilium-helm.yaml"},
		want: []verdict{
			{"host-network-endpoint", "mutate", "DaemonSet", "kube-system", "cilium", td + "/cilium-helm.yaml#0"},
			{"host-network-endpoint", "mutate", "Deployment", "kube-system", "cilium-operator", td + "/cilium-helm.yaml#1"},
		},
		sum: check.Summary{Objects: 2, Mutate: 2},
	}, {
		name:  "standard input",
		paths: []string{check.Stdin},
		stdin: "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: default}\nspec: {hostNetwork: true, containers: [{name: c, image: i}]}\n",
		want:  []verdict{{"host-network-endpoint", "mutate", "Pod", "default", "p", "-#0"}},
		sum:   check.Summary{Objects: 1, Mutate: 1},
	}, {
		name:  "nothing to report",
		paths: []string{td + "/clean"},
		want:  []verdict{},
		sum:   check.Summary{Objects: 1},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, err := check.Read(tt.paths, strings.NewReader(tt.stdin))
			if err != nil {
				t.Fatal(err)
			}
			r := check.Check(in, defaultEngine(t))
			if got := verdicts(r); !equality.Semantic.DeepEqual(got, tt.want) {
				t.Errorf("findings:\n got %v\nwant %v", got, tt.want)
			}
			if r.Summary != tt.sum {
				t.Errorf("summary = %+v, want %+v", r.Summary, tt.sum)
			}
		})
	}
}

func TestReadErrorsNameFileAndDocument(t *testing.T) {
	tests := []struct {
		name, path string
		want       []string
	}{
		{"YAML that does not parse", "testdata/invalid/broken.yaml", []string{"testdata/invalid/broken.yaml#1: not valid YAML"}},
		{"no kind", "testdata/invalid/no-kind.yaml", []string{"testdata/invalid/no-kind.yaml#0: kind: Required value"}},
		{"a field of the wrong type", "testdata/invalid/wrong-type.json", []string{"testdata/invalid/wrong-type.json#0: cannot decode object as a v1 Pod"}},
		{"every error of a directory", "testdata/invalid", []string{"broken.yaml#1", "no-kind.yaml#0", "wrong-type.json#0"}},
		{"a missing file", "testdata/missing.yaml", []string{"testdata/missing.yaml: no such file"}},
		{"a YAML error names the file's line (the document's line 3)", "testdata/invalid/broken.yaml", []string{"broken.yaml#1: not valid YAML or JSON: yaml: line 7:"}},
		{"an apiVersion Kubernetes no longer serves", "testdata/removed/kube-flannel-ds.yaml",
			[]string{`testdata/removed/kube-flannel-ds.yaml#0: apiVersion: Unsupported value: "extensions/v1beta1"`, "convert it to apps/v1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, err := check.Read([]string{tt.path}, nil)
			if err == nil {
				t.Fatalf("Read succeeded with %d objects, want an error", len(in.Objects))
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestEmitKubeadmPatches applies the emitted patch to the manifest as kubeadm
// does (strategic merge) and checks that only the pinned probes' host changed.
func TestEmitKubeadmPatches(t *testing.T) {
	const manifest = "testdata/manifests/kube-apiserver.yaml"
	in, err := check.Read([]string{manifest}, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path, err := check.EmitKubeadmPatches(in, dir, "cp-1.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "kube-apiserver0+strategic.yaml"); path != want {
		t.Fatalf("wrote %q, want %q", path, want)
	}
	patchYAML, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	patch, err := yaml.YAMLToJSON(patchYAML)
	if err != nil {
		t.Fatal(err)
	}
	origYAML, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	orig, err := yaml.YAMLToJSON(origYAML)
	if err != nil {
		t.Fatal(err)
	}
	patched, err := strategicpatch.StrategicMergePatch(orig, patch, &corev1.Pod{})
	if err != nil {
		t.Fatal(err)
	}
	var before, after corev1.Pod
	if err := yaml.Unmarshal(orig, &before); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(patched, &after); err != nil {
		t.Fatal(err)
	}
	c := &after.Spec.Containers[0]
	for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
		if p.HTTPGet.Host != "cp-1.example.com" {
			t.Errorf("%s probe host = %q, want cp-1.example.com", name, p.HTTPGet.Host)
		}
	}
	// Put the old hosts back: everything else must be as it was.
	bc := &before.Spec.Containers[0]
	c.LivenessProbe.HTTPGet.Host = bc.LivenessProbe.HTTPGet.Host
	c.ReadinessProbe.HTTPGet.Host = bc.ReadinessProbe.HTTPGet.Host
	c.StartupProbe.HTTPGet.Host = bc.StartupProbe.HTTPGet.Host
	if !equality.Semantic.DeepEqual(before, after) {
		t.Errorf("the patch changed more than the probes' host:\n%s", patchYAML)
	}

	t.Run("no pinned probe: nothing written", func(t *testing.T) {
		in, err := check.Read([]string{"testdata/manifests/etcd.yaml"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		path, err := check.EmitKubeadmPatches(in, dir+"/none", "cp-1.example.com")
		if err != nil || path != "" {
			t.Fatalf("EmitKubeadmPatches = %q, %v; want nothing written", path, err)
		}
	})
	t.Run("two nodes' manifests: an error, a patch directory is per node", func(t *testing.T) {
		in, err := check.Read([]string{manifest, manifest}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := check.EmitKubeadmPatches(in, t.TempDir(), "cp-1.example.com"); err == nil || !strings.Contains(err.Error(), "per node") {
			t.Fatalf("error = %v, want one about a directory per node", err)
		}
	})
}

// Under host: auto only admission knows each node's endpoint: check reports
// the pod as unverified, and counts it.
func TestCheckHostAuto(t *testing.T) {
	in, err := check.Read([]string{filepath.Join("testdata", "multi-doc.yaml")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Policies[hostnetwork.ID].Settings.(*hostnetwork.Settings).Host = hostnetwork.HostAuto
	engine, err := cfg.Engine()
	if err != nil {
		t.Fatal(err)
	}
	r := check.Check(in, engine)
	var got []check.Finding
	for _, f := range r.Findings {
		if f.Policy == hostnetwork.ID {
			got = append(got, f)
		}
	}
	if len(got) == 0 || r.Summary.Unverified != len(got) {
		t.Fatalf("host-network-endpoint findings %v, summary %+v", got, r.Summary)
	}
	for _, f := range got {
		if f.Action != policy.ActionUnverified || !strings.Contains(f.Message, "(host: auto)") {
			t.Errorf("finding %+v", f)
		}
	}
	var out bytes.Buffer
	if err := r.WriteTable(&out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), fmt.Sprintf(", %d unverified\n", len(got))) {
		t.Errorf("table summary does not count the unverified findings:\n%s", out.String())
	}
}

// What check reads, and what it must never report clean: issue 19's paths.
func TestReadNeverFalseClean(t *testing.T) {
	const kubeVIP = "testdata/multi-doc.yaml" // a kube-vip DaemonSet of an affected release: deny
	engine := defaultEngine(t)

	t.Run("a directory given through a symbolic link", func(t *testing.T) {
		// /etc/kubernetes/manifests is often a link into a configuration
		// management tree.
		dir := t.TempDir()
		real := filepath.Join(dir, "real")
		if err := os.Mkdir(real, 0o755); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(kubeVIP)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(real, "kube-vip.yaml"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(dir, "link")
		if err := os.Symlink(real, link); err != nil {
			t.Fatal(err)
		}
		in, err := check.Read([]string{link}, nil)
		if err != nil {
			t.Fatal(err)
		}
		r := check.Check(in, engine)
		if r.Summary.Deny != 1 || r.Findings[len(r.Findings)-1].Source != filepath.Join(link, "kube-vip.yaml")+"#3" {
			t.Errorf("through the link: %+v, want the deny named under the path given", r)
		}
	})

	t.Run("a path with no object is a warning that names it", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "kube-apiserver.conf"), []byte("not a manifest"), 0o600); err != nil {
			t.Fatal(err)
		}
		in, err := check.Read([]string{dir, kubeVIP}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(in.Warnings) != 1 || !strings.HasPrefix(in.Warnings[0], dir+": no Kubernetes object found") {
			t.Errorf("warnings = %q, want one naming %s", in.Warnings, dir)
		}
	})

	t.Run("a Helm values.yaml in a GitOps tree does not hide the deny beside it", func(t *testing.T) {
		in, err := check.Read([]string{"testdata/gitops"}, nil)
		if err == nil || !strings.Contains(err.Error(), "gitops/cilium/values.yaml#0: apiVersion: Required value") {
			t.Fatalf("error = %v, want values.yaml named", err)
		}
		if r := check.Check(in, engine); r.Summary.Deny != 1 {
			t.Errorf("summary = %+v, want the kube-vip DaemonSet's deny", r.Summary)
		}
	})

	t.Run("one unreadable file does not hide the others' verdicts", func(t *testing.T) {
		// A Helm chart's values.yaml in a GitOps tree does not parse as a
		// manifest; the kube-vip DaemonSet beside it must still be denied.
		in, err := check.Read([]string{"testdata/invalid/broken.yaml", kubeVIP}, nil)
		if err == nil || !strings.Contains(err.Error(), "broken.yaml#1") {
			t.Fatalf("error = %v, want the broken document named", err)
		}
		if r := check.Check(in, engine); r.Summary.Deny != 1 {
			t.Errorf("summary = %+v, want the deny of %s", r.Summary, kubeVIP)
		}
	})

	t.Run("--static-pods reads pods as their mirror pods", func(t *testing.T) {
		pod := "apiVersion: v1\nkind: Pod\nmetadata: {name: etcd, namespace: kube-system}\nspec: {hostNetwork: true, containers: [{name: etcd, image: i}]}\n"
		for _, static := range []bool{false, true} {
			in, err := check.ReadWith([]string{check.Stdin}, strings.NewReader(pod), check.Options{StaticPods: static})
			if err != nil {
				t.Fatal(err)
			}
			if got, want := check.Check(in, engine).Summary.Mutate, map[bool]int{false: 1, true: 0}[static]; got != want {
				t.Errorf("static pods %v: %d mutate, want %d", static, got, want)
			}
		}
	})

	t.Run("a static pod's violation is still a deny: its file can be fixed", func(t *testing.T) {
		// kube-vip as kube-vip's docs generate it (kube-vip manifest pod
		// --controlplane --enableLoadBalancer), in /etc/kubernetes/manifests.
		dir := filepath.Join(t.TempDir(), "manifests")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		pod := "apiVersion: v1\nkind: Pod\nmetadata: {name: kube-vip, namespace: kube-system}\nspec:\n  hostNetwork: true\n" +
			"  containers:\n  - {name: kube-vip, image: ghcr.io/kube-vip/kube-vip:v0.8.4, args: [manager],\n" +
			"     env: [{name: cp_enable, value: \"true\"}, {name: lb_enable, value: \"true\"}]}\n"
		if err := os.WriteFile(filepath.Join(dir, "kube-vip.yaml"), []byte(pod), 0o600); err != nil {
			t.Fatal(err)
		}
		in, err := check.Read([]string{dir}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if s := check.Check(in, engine).Summary; s.Deny != 1 || s.Mutate != 0 {
			t.Errorf("summary = %+v, want the deny and no mutate (a mirror pod is never rewritten)", s)
		}
	})

	t.Run("a top-level JSON array says what it is", func(t *testing.T) {
		_, err := check.Read([]string{check.Stdin}, strings.NewReader(`[{"apiVersion": "v1", "kind": "Pod"}]`))
		if err == nil || !strings.Contains(err.Error(), "-#0: a JSON array (or YAML sequence), not a Kubernetes object") ||
			strings.Contains(err.Error(), "Go value") {
			t.Errorf("error = %v", err)
		}
	})
}

// TestCNIFixtures: the endpoint where today's CNIs keep it, judged from the
// ConfigMaps of the files, whichever file and order they come in.
func TestCNIFixtures(t *testing.T) {
	in, err := check.Read([]string{"testdata/cni"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	listed := config.Default()
	listed.EndpointConfigMaps = append(listed.EndpointConfigMaps, "kube-system/cilium-api-endpoint")
	in.EndpointConfigMaps = listed.EndpointConfigMapNames()
	got := map[string]string{}
	for _, f := range check.Check(in, defaultEngine(t)).Findings {
		k := f.Kind + " " + f.Namespace + "/" + f.Name + " " + string(f.Policy)
		got[k] += string(f.Action) + ": " + f.Message + "\n"
	}
	for k, v := range got {
		t.Logf("%s\n%s", k, v)
	}
	want := map[string]string{
		"DaemonSet kube-system/cilium host-network-endpoint":               `container "cilium-agent" comes from ConfigMap kube-system/cilium-api-endpoint key "host" = 10.98.0.11`,
		"Deployment kube-system/cilium-operator host-network-endpoint":     `comes from ConfigMap kube-system/cilium-api-endpoint key "host" = 10.98.0.11`,
		"ConfigMap kube-system/cilium-api-endpoint control-plane-endpoint": `key "host" of ConfigMap kube-system/cilium-api-endpoint (endpointConfigMaps) is 10.98.0.11, the address of control-plane node cni-cp-1 only`,
		"ConfigMap kube-system/cilium-config control-plane-endpoint":       `k8s-api-server-urls in ConfigMap kube-system/cilium-config is https://10.98.0.12:6443, the address of control-plane node cni-cp-2 only`,
		"Deployment tigera-operator/tigera-operator host-network-endpoint": `comes from ConfigMap tigera-operator/kubernetes-services-endpoint key "KUBERNETES_SERVICE_HOST" = 10.98.0.100`,
		"DaemonSet calico-system/calico-node host-network-endpoint":        `pods created from this template will be rewritten`,
	}
	for k, part := range want {
		if !strings.Contains(got[k], part) {
			t.Errorf("%s: got %q, want it to contain %q", k, got[k], part)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d verdicts, want %d", len(got), len(want))
	}

	// Without the ConfigMap in endpointConfigMaps, Cilium's references are
	// reported as not judged, never as clean.
	in.EndpointConfigMaps = config.Default().EndpointConfigMapNames()
	for _, f := range check.Check(in, defaultEngine(t)).Findings {
		if f.Name == "cilium" && f.Policy == hostnetwork.ID && !strings.Contains(f.Message, `add "kube-system/cilium-api-endpoint" to endpointConfigMaps`) {
			t.Errorf("not listed: %s", f.Message)
		}
	}
}

// TestKubeVIP2026Fixtures: kube-vip's 2026 advisories on `kube-vip manifest
// daemonset` output: each affected configuration denied once, by its
// advisory; the fixed versions, workarounds and unaffected variants clean.
func TestKubeVIP2026Fixtures(t *testing.T) {
	in, err := check.Read([]string{"testdata/kube-vip-2026"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range check.Check(in, defaultEngine(t)).Findings {
		if f.Policy != kubevip.ID || f.Action != policy.ActionDeny {
			t.Errorf("%s/%s: %s %s: %s", f.Kind, f.Name, f.Policy, f.Action, f.Message)
			continue
		}
		got[f.Name] += f.Message
	}
	want := map[string]string{
		"kube-vip-1654": "kube-vip #1654",
		"kube-vip-1655": "kube-vip #1655",
		"kube-vip-1590": "kube-vip #1590",
		"kube-vip-1747": "kube-vip #1747",
	}
	for name, ref := range want {
		if strings.Count(got[name], "known bug") != 1 || !strings.Contains(got[name], "("+ref+", ") {
			t.Errorf("%s: %q, want one finding of %s", name, got[name], ref)
		}
	}
	if len(got) != len(want) {
		t.Errorf("denied %d DaemonSets, want %d: %v", len(got), len(want), got)
	}
	if len(in.Objects) != 11 {
		t.Errorf("read %d objects, want 11", len(in.Objects))
	}
}
