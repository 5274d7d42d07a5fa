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
		name:  "a static pod manifest directory (other files ignored)",
		paths: []string{td + "/manifests"},
		want: []verdict{
			{"host-network-endpoint", "mutate", "Pod", "kube-system", "etcd", td + "/manifests/etcd.yaml#0"},
			{"host-network-endpoint", "mutate", "Pod", "kube-system", "kube-apiserver", td + "/manifests/kube-apiserver.yaml#0"},
			{"apiserver-probe-host", "warn", "Pod", "kube-system", "kube-apiserver", td + "/manifests/kube-apiserver.yaml#0"},
			{"apiserver-probe-host", "warn", "Pod", "kube-system", "kube-apiserver", td + "/manifests/kube-apiserver.yaml#0"},
			{"apiserver-probe-host", "warn", "Pod", "kube-system", "kube-apiserver", td + "/manifests/kube-apiserver.yaml#0"},
		},
		sum: check.Summary{Objects: 2, Warn: 3, Mutate: 2},
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
