package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const checkdata = "../../internal/check/testdata/"

func TestCheckCommand(t *testing.T) {
	auditConfig := filepath.Join(t.TempDir(), "audit.yaml")
	if err := os.WriteFile(auditConfig, []byte("apiVersion: endpoint-policy.io/v1alpha1\nkind: PolicyConfiguration\nmode: Audit\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	emptyDir := t.TempDir()
	tests := []struct {
		name       string
		args       []string
		stdin      string
		wantCode   int
		wantStdout []string
		wantStderr []string
	}{
		{name: "no deny finding", args: []string{"-f", checkdata + "clean"}, wantCode: 0,
			wantStdout: []string{"1 objects checked, 0 skipped (kinds no policy reads): 0 deny, 0 warn, 0 mutate"}},
		{name: "a deny finding", args: []string{"-f", checkdata + "kubeadm-config.yaml"}, wantCode: 1,
			wantStdout: []string{"ACTION", "deny", "apiserver-advertise-address", "ConfigMap kube-system/kubeadm-config", "kubeadm-config.yaml#0"}},
		{name: "warn only", args: []string{"-f", checkdata + "warn-only.yaml"}, wantCode: 0,
			wantStdout: []string{"warn", "kube-proxy-readiness-probe"}},
		{name: "warn only, --strict", args: []string{"--strict", "-f", checkdata + "warn-only.yaml"}, wantCode: 1},
		{name: "mutate only", args: []string{"-f", checkdata + "list.json"}, wantCode: 0,
			wantStdout: []string{"mutate", "would set KUBERNETES_SERVICE_HOST=localhost"}},
		{name: "--config in Audit turns deny into warn", args: []string{"--config", auditConfig, "-f", checkdata + "kubeadm-config.yaml"}, wantCode: 0,
			wantStdout: []string{"warn", "apiserver-advertise-address"}},
		{name: "several -f", args: []string{"-f", checkdata + "clean", "-f", checkdata + "warn-only.yaml"}, wantCode: 0,
			wantStdout: []string{"2 objects checked"}},
		{name: "standard input", args: []string{"-f", "-"}, stdin: "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {hostNetwork: true, containers: [{name: c, image: i}]}\n",
			wantCode: 0, wantStdout: []string{"Pod p", "-#0"}},
		{name: "YAML that does not parse", args: []string{"-f", checkdata + "invalid/broken.yaml"}, wantCode: 2,
			wantStderr: []string{"broken.yaml#1: not valid YAML"}},
		{name: "a file that does not parse beside a deny: the deny still printed, exit 2", args: []string{"-f", checkdata + "invalid/broken.yaml", "-f", checkdata + "kubeadm-config.yaml"},
			wantCode: 2, wantStdout: []string{"deny", "apiserver-advertise-address"}, wantStderr: []string{"broken.yaml#1: not valid YAML"}},
		{name: "a path with no object warns", args: []string{"-f", emptyDir, "-f", checkdata + "clean"}, wantCode: 0,
			wantStderr: []string{"warning: " + emptyDir + ": no Kubernetes object found"}},
		{name: "--static-pods", args: []string{"--static-pods", "-f", checkdata + "list.json"}, wantCode: 0,
			wantStdout: []string{"0 mutate"}},
		{name: "unreadable file", args: []string{"-f", checkdata + "missing.yaml"}, wantCode: 2, wantStderr: []string{"missing.yaml"}},
		{name: "no -f", args: nil, wantCode: 2, wantStderr: []string{"-f: Required value"}},
		{name: "bad -o", args: []string{"-o", "yaml", "-f", checkdata + "clean"}, wantCode: 2, wantStderr: []string{`-o "yaml": must be table, json or sarif`}},
		{name: "unknown flag", args: []string{"--nope"}, wantCode: 2, wantStderr: []string{"flag provided but not defined: -nope"}},
		{name: "bad --config", args: []string{"--config", checkdata + "clean/deployment.yml", "-f", checkdata + "clean"}, wantCode: 2,
			wantStderr: []string{"--config:"}},
		{name: "a live exemption: exempt, with its reason, exit 0", args: []string{"--config", checkdata + "exemptions/live.yaml", "-f", checkdata + "multi-doc.yaml"},
			wantCode: 0, wantStdout: []string{"exempt", "kube-vip-ipvs-backends", "DaemonSet kube-system/kube-vip",
				"exempted: upgrade to v0.8.10 in change CHG-4711 (until 2099-12-20T00:00:00Z);", "0 deny", "1 exempt"}},
		{name: "an expired exemption: the deny is back", args: []string{"--config", checkdata + "exemptions/expired.yaml", "-f", checkdata + "multi-doc.yaml"},
			wantCode: 1, wantStdout: []string{"deny", "kube-vip-ipvs-backends", "1 deny"}},
		{name: "a misspelt policy in an exemption", args: []string{"--config", checkdata + "exemptions/misspelt.yaml", "-f", checkdata + "multi-doc.yaml"},
			wantCode: 2, wantStderr: []string{`exemptions[0].policies[0]: Unsupported value: "kube-vip-ipvs-backend"`}},
		{name: "an exemption without a reason", args: []string{"--config", checkdata + "exemptions/reasonless.yaml", "-f", checkdata + "multi-doc.yaml"},
			wantCode: 2, wantStderr: []string{"exemptions[0].reason: Required value"}},
		{name: "-o sarif: the same exit code as the table", args: []string{"-o", "sarif", "-f", checkdata + "kubeadm-config.yaml"}, wantCode: 1,
			wantStdout: []string{`"version": "2.1.0"`, `"ruleId": "apiserver-advertise-address"`, `"level": "error"`, `"uri": "` + checkdata + `kubeadm-config.yaml"`}},
		{name: "-o sarif, warn only, --strict", args: []string{"-o", "sarif", "--strict", "-f", checkdata + "warn-only.yaml"}, wantCode: 1,
			wantStdout: []string{`"level": "warning"`}},
		{name: "--cluster and -f", args: []string{"--cluster", "-f", checkdata + "clean"}, wantCode: 2,
			wantStderr: []string{"--cluster and -f do not go together"}},
		{name: "--kubeconfig without --cluster", args: []string{"--kubeconfig", "k", "-f", checkdata + "clean"}, wantCode: 2,
			wantStderr: []string{"--kubeconfig and --context go with --cluster"}},
		{name: "--server-config not namespace/name", args: []string{"--cluster", "--server-config", "endpoint-policy-config"}, wantCode: 2,
			wantStderr: []string{`--server-config "endpoint-policy-config": must be namespace/name`}},
		{name: "--cluster --emit-kubeadm-patches", args: []string{"--cluster", "--emit-kubeadm-patches", t.TempDir(), "--node-fqdn", "cp-1.example.com"}, wantCode: 2,
			wantStderr: []string{"are for files, not --cluster"}},
		{name: "--cluster with a kubeconfig that does not exist", args: []string{"--cluster", "--kubeconfig", filepath.Join(emptyDir, "missing")}, wantCode: 2,
			wantStderr: []string{"--cluster: loading the kubeconfig"}},
		{name: "--node-fqdn without --emit-kubeadm-patches", args: []string{"--node-fqdn", "cp-1.example.com", "-f", checkdata + "clean"}, wantCode: 2,
			wantStderr: []string{"go together"}},
		{name: "--node-fqdn an IP", args: []string{"--emit-kubeadm-patches", t.TempDir(), "--node-fqdn", "10.0.0.1", "-f", checkdata + "clean"}, wantCode: 2,
			wantStderr: []string{"not an IP"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := checkCommand(tt.args, strings.NewReader(tt.stdin), &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d\nstdout: %s\nstderr: %s", code, tt.wantCode, stdout.String(), stderr.String())
			}
			for _, w := range tt.wantStdout {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout does not contain %q:\n%s", w, stdout.String())
				}
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr does not contain %q:\n%s", w, stderr.String())
				}
			}
		})
	}
}

// TestCheckJSONContract decodes the JSON output into exactly the contract's
// fields.
func TestCheckJSONContract(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := checkCommand([]string{"-o", "json", "-f", checkdata + "multi-doc.yaml"}, nil, &stdout, &stderr)
	if code != 1 {
		t.Fatalf("exit code %d, want 1; stderr: %s", code, stderr.String())
	}
	var got struct {
		Findings []map[string]string `json:"findings"`
		Summary  map[string]int      `json:"summary"`
	}
	dec := json.NewDecoder(&stdout)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatal(err)
	}
	want := []map[string]string{{
		"policy": "host-network-endpoint", "action": "mutate", "kind": "Pod", "namespace": "kube-system", "name": "cilium-operator",
		"source": checkdata + "multi-doc.yaml#0",
	}, {
		"policy": "kube-vip-ipvs-backends", "action": "deny", "kind": "DaemonSet", "namespace": "kube-system", "name": "kube-vip",
		"source": checkdata + "multi-doc.yaml#3",
	}}
	if len(got.Findings) != len(want) {
		t.Fatalf("findings = %v, want %d", got.Findings, len(want))
	}
	for i, f := range got.Findings {
		if len(f) != 7 || f["message"] == "" {
			t.Errorf("finding %d has fields %v, want policy, action, kind, namespace, name, source, message", i, f)
		}
		for k, v := range want[i] {
			if f[k] != v {
				t.Errorf("finding %d: %s = %q, want %q", i, k, f[k], v)
			}
		}
	}
	wantSummary := map[string]int{"objects": 2, "skipped": 1, "deny": 1, "warn": 0, "mutate": 1}
	if len(got.Summary) != len(wantSummary) {
		t.Errorf("summary = %v, want %v", got.Summary, wantSummary)
	}
	for k, v := range wantSummary {
		if got.Summary[k] != v {
			t.Errorf("summary.%s = %d, want %d", k, got.Summary[k], v)
		}
	}
}

// TestCheckJSONExemption: an exempted finding's JSON names the exemption,
// its reason and its expiry, and counts in summary.exempt.
func TestCheckJSONExemption(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := checkCommand([]string{"-o", "json", "--config", checkdata + "exemptions/live.yaml", "-f", checkdata + "multi-doc.yaml"}, nil, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit code %d, want 0; stderr: %s", code, stderr.String())
	}
	var got struct {
		Findings []map[string]string `json:"findings"`
		Summary  map[string]int      `json:"summary"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	var exempt map[string]string
	for _, f := range got.Findings {
		if f["action"] == "exempt" {
			exempt = f
		}
	}
	want := map[string]string{"policy": "kube-vip-ipvs-backends", "name": "kube-vip", "exemption": "kube-vip-upgrade",
		"reason": "upgrade to v0.8.10 in change CHG-4711", "expires": "2099-12-20T00:00:00Z"}
	for k, v := range want {
		if exempt[k] != v {
			t.Errorf("exempt finding: %s = %q, want %q (%v)", k, exempt[k], v, exempt)
		}
	}
	if got.Summary["exempt"] != 1 || got.Summary["deny"] != 0 {
		t.Errorf("summary = %v, want exempt 1, deny 0", got.Summary)
	}
}

func TestCheckEmitsKubeadmPatch(t *testing.T) {
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	code := checkCommand([]string{"--emit-kubeadm-patches", dir, "--node-fqdn", "cp-1.example.com", "-f", checkdata + "manifests"}, nil, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit code %d, want 0 (probe host is Audit by default); stderr: %s", code, stderr.String())
	}
	patch, err := os.ReadFile(filepath.Join(dir, "kube-apiserver0+strategic.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(patch), "host: cp-1.example.com") != 3 {
		t.Errorf("patch does not point the three probes at cp-1.example.com:\n%s", patch)
	}
	if !strings.Contains(stderr.String(), "wrote "+filepath.Join(dir, "kube-apiserver0+strategic.yaml")) {
		t.Errorf("stderr does not name the file written: %s", stderr.String())
	}
}
