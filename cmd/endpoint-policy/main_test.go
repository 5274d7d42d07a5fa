package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/util/cert"
)

// writeCert writes a self-signed tls.crt/tls.key pair into a new directory.
func writeCert(t *testing.T) string {
	t.Helper()
	crt, key, err := cert.GenerateSelfSignedCertKey("localhost", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), crt, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestRun(t *testing.T) {
	certs := writeCert(t)
	badConfig := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(badConfig, []byte("apiVersion: endpoint-policy.io/v1alpha1\nkind: PolicyConfiguration\npolicies:\n  host-network-endpoint:\n    port: 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	brokenCerts := t.TempDir()
	if err := os.WriteFile(filepath.Join(brokenCerts, "tls.crt"), []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(brokenCerts, "tls.key"), []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{name: "no command", args: nil, wantCode: 2, wantStderr: "Usage:"},
		{name: "unknown command", args: []string{"serv"}, wantCode: 2, wantStderr: `unknown command "serv"`},
		{name: "help", args: []string{"--help"}, wantCode: 0, wantStdout: "endpoint-policy serve"},
		{name: "version", args: []string{"version"}, wantCode: 0, wantStdout: "endpoint-policy "},
		{name: "--version", args: []string{"--version"}, wantCode: 0, wantStdout: "endpoint-policy "},
		{name: "unknown flag", args: []string{"serve", "--webhook-prot=9443"}, wantCode: 2,
			wantStderr: "flag provided but not defined: -webhook-prot"},
		{name: "bad flag value", args: []string{"serve", "--webhook-port=https"}, wantCode: 2,
			wantStderr: `invalid value "https" for flag -webhook-port`},
		{name: "port out of range", args: []string{"serve", "--webhook-port=70000"}, wantCode: 2,
			wantStderr: "--webhook-port 70000: must be between 1 and 65535"},
		{name: "webhook bind address not an IP", args: []string{"serve", "--webhook-bind-address=node-1"}, wantCode: 2,
			wantStderr: `--webhook-bind-address "node-1": must be an IP address`},
		{name: "TLS version", args: []string{"serve", "--tls-min-version=1.1"}, wantCode: 2,
			wantStderr: `--tls-min-version "1.1": must be 1.2 or 1.3`},
		{name: "negative shutdown delay", args: []string{"serve", "--shutdown-delay=-1s"}, wantCode: 2,
			wantStderr: "--shutdown-delay -1s: must not be negative"},
		{name: "stray argument", args: []string{"serve", "now"}, wantCode: 2, wantStderr: `unexpected arguments ["now"]`},
		{name: "missing certificates", args: []string{"serve", "--cert-dir", "/nonexistent/certs"}, wantCode: 1,
			wantStderr: "--cert-dir /nonexistent/certs: cannot load the serving certificate (tls.crt, tls.key)"},
		{name: "unreadable certificates", args: []string{"serve", "--cert-dir", brokenCerts}, wantCode: 1,
			wantStderr: "--cert-dir " + brokenCerts + ": cannot load the serving certificate"},
		{name: "missing configuration file", args: []string{"serve", "--cert-dir", certs, "--config", "/nonexistent/config.yaml"}, wantCode: 1,
			wantStderr: "--config: open /nonexistent/config.yaml: no such file or directory"},
		{name: "invalid configuration file", args: []string{"serve", "--cert-dir", certs, "--config", badConfig}, wantCode: 1,
			wantStderr: "--config: " + badConfig + ": policies.host-network-endpoint.port: Invalid value: 0"},
		{name: "no namespace outside a pod", args: []string{"serve", "--cert-dir", certs}, wantCode: 1,
			wantStderr: "--namespace: the release namespace, where the node agents' Leases are, is unknown outside a pod"},
		{name: "missing webhook configurations", args: []string{"serve", "--cert-dir", certs, "--namespace", "ep", "--webhook-configurations", "/nonexistent/webhooks.yaml"}, wantCode: 1,
			wantStderr: "--webhook-configurations: open /nonexistent/webhooks.yaml: no such file or directory"},
		{name: "webhook configurations of another kind", args: []string{"serve", "--cert-dir", certs, "--namespace", "ep", "--webhook-configurations", badConfig}, wantCode: 1,
			wantStderr: "--webhook-configurations: " + badConfig + ": document 1:"},
		{name: "agent without a node", args: []string{"agent", "--namespace", "ep"}, wantCode: 2,
			wantStderr: "--node-name: required"},
		{name: "agent heartbeat shorter than its interval", args: []string{"agent", "--node-name", "n", "--namespace", "ep", "--interval", "1m", "--heartbeat", "30s"},
			wantCode: 2, wantStderr: "--heartbeat 30s: must be at least --interval (1m0s)"},
		// The command line the endpoint-truth issue documents: the default
		// --timeout (5s) must follow a shorter --interval, not refuse it.
		{name: "agent as documented, --interval 1s", args: []string{"agent", "--config", "/nonexistent/config.yaml", "--kubeconfig", "/nonexistent/kubeconfig",
			"--node-name", "n", "--namespace", "ep", "--interval", "1s", "--heartbeat", "10s"},
			wantCode: 1, wantStderr: "--kubeconfig /nonexistent/kubeconfig"},
		{name: "agent timeout longer than its interval", args: []string{"agent", "--node-name", "n", "--namespace", "ep", "--interval", "1s", "--heartbeat", "10s", "--timeout", "5s"},
			wantCode: 2, wantStderr: "--timeout 5s: must be positive and at most --interval (1s)"},
		{name: "agent with an unreadable kubeconfig", args: []string{"agent", "--node-name", "n", "--namespace", "ep", "--kubeconfig", "/nonexistent/kubeconfig"},
			wantCode: 1, wantStderr: "--kubeconfig /nonexistent/kubeconfig"},
		{name: "unreadable kubeconfig", args: []string{"serve", "--cert-dir", certs, "--namespace", "endpoint-policy", "--kubeconfig", "/nonexistent/kubeconfig"}, wantCode: 1,
			wantStderr: "--kubeconfig /nonexistent/kubeconfig"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d; stderr: %s", code, tt.wantCode, stderr.String())
			}
			if !strings.Contains(stdout.String(), tt.wantStdout) {
				t.Errorf("stdout %q, want it to contain %q", stdout.String(), tt.wantStdout)
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr %q, want it to contain %q", stderr.String(), tt.wantStderr)
			}
		})
	}
}
