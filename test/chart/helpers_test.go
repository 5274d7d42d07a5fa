// Package chart tests the Helm chart (charts/endpoint-policy) with the real
// helm and kustomize CLIs, built from Go modules by `make test`: rendering
// with default and non-default values, the values schema, consistency with
// config/, and install, upgrade and uninstall against a real kube-apiserver
// (envtest) in both certificate modes.
package chart

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"

	"github.com/endpoint-policy/endpoint-policy/internal/testing/proctest"
)

var (
	repoRoot  = filepath.Join("..", "..")
	chartDir  = filepath.Join(repoRoot, "charts", "endpoint-policy")
	configDir = filepath.Join(repoRoot, "config")
)

// The release the README installs, and the namespace config/ is written for.
const (
	release   = "endpoint-policy"
	namespace = "endpoint-policy"
)

// tool returns the CLI that `make test` built and exported in env, or fails.
func tool(t testing.TB, env string) string {
	t.Helper()
	path := os.Getenv(env)
	if path == "" {
		t.Fatalf("%s is not set. Run `make test`, which builds helm and kustomize from Go modules into bin/ and sets it.", env)
	}
	return path
}

// helm runs the helm CLI against kubeconfig when not empty.
func helm(t testing.TB, kubeconfig string, args ...string) (string, error) {
	t.Helper()
	return helmAt(t, "", kubeconfig, args...)
}

// helmAt runs helm in dir ("" = the test's directory).
func helmAt(t testing.TB, dir, kubeconfig string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(tool(t, "HELM"), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(helmHomeDir, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(helmHomeDir, "config"),
		"HELM_DATA_HOME="+filepath.Join(helmHomeDir, "data"),
	)
	if kubeconfig != "" {
		cmd.Env = append(cmd.Env, "KUBECONFIG="+kubeconfig)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), errors.New(strings.TrimSpace(stderr.String()) + " (" + err.Error() + ")")
	}
	return stdout.String(), nil
}

// helmHomeDir holds helm's cache, configuration and data: nothing is
// written to the user's.
var helmHomeDir string

func TestMain(m *testing.M) {
	// helm, kustomize and the server binary read the chart, config/ and the
	// sources in other processes, which go test's result cache cannot see:
	// reading them here makes a change to any of them run the tests again
	// instead of reporting a cached pass.
	if err := proctest.ReadTree(chartDir, configDir, filepath.Join(repoRoot, "cmd"), filepath.Join(repoRoot, "internal")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var err error
	if helmHomeDir, err = os.MkdirTemp("", "endpoint-policy-helm-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(helmHomeDir)
	os.Exit(code)
}

// manifest is a rendered set of objects.
type manifest []*unstructured.Unstructured

// render runs `helm template` of the chart as release endpoint-policy in
// namespace endpoint-policy with the given helm flags (--set, -f).
func render(t testing.TB, flags ...string) manifest {
	t.Helper()
	args := append([]string{"template", release, chartDir, "--namespace", namespace}, flags...)
	out, err := helm(t, "", args...)
	if err != nil {
		t.Fatalf("helm %s: %v", strings.Join(args, " "), err)
	}
	return decodeAll(t, out)
}

func decodeAll(t testing.TB, data string) manifest {
	t.Helper()
	var m manifest
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(data), 4096)
	for {
		u := &unstructured.Unstructured{}
		err := dec.Decode(&u.Object)
		if errors.Is(err, io.EOF) {
			return m
		}
		if err != nil {
			t.Fatalf("decoding rendered YAML: %v", err)
		}
		if len(u.Object) > 0 {
			m = append(m, u)
		}
	}
}

// find returns the object of kind and name, or fails.
func (m manifest) find(t testing.TB, kind, name string) *unstructured.Unstructured {
	t.Helper()
	if u := m.get(kind, name); u != nil {
		return u
	}
	t.Fatalf("no %s %q rendered; have %v", kind, name, m.names())
	return nil
}

func (m manifest) get(kind, name string) *unstructured.Unstructured {
	for _, u := range m {
		if u.GetKind() == kind && u.GetName() == name {
			return u
		}
	}
	return nil
}

func (m manifest) ofKind(kind string) manifest {
	var out manifest
	for _, u := range m {
		if u.GetKind() == kind {
			out = append(out, u)
		}
	}
	return out
}

func (m manifest) names() []string {
	var out []string
	for _, u := range m {
		out = append(out, u.GetKind()+"/"+u.GetNamespace()+"/"+u.GetName())
	}
	return out
}

// typed decodes u into out strictly: a field the Go type does not have (a
// misspelt key in a template) fails the test.
func typed(t testing.TB, u *unstructured.Unstructured, out any) {
	t.Helper()
	data, err := u.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	strict, err := sigsjson.UnmarshalStrict(data, out)
	if err != nil {
		t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
	}
	if len(strict) > 0 {
		t.Fatalf("%s %s: fields unknown to the API types: %v", u.GetKind(), u.GetName(), errors.Join(strict...))
	}
}
