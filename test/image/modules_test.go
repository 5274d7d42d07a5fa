package image

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestControlPlaneSharesOurDependencies keeps the modules that both the
// server's binary and the control plane's module (hack/envtest/kube-apiserver)
// build at one version: `make build` compiles with the control plane's flags,
// so in a cold make test it finds those packages (k8s.io/api, client-go,
// apimachinery: most of its compile) in the build cache, as long as each has
// the same dependencies there. One module a patch apart is enough to compile
// it and everything above it again (docs/performance.md, "Cold build").
func TestControlPlaneSharesOurDependencies(t *testing.T) {
	ours := goList(t, repoRoot, "./cmd/endpoint-policy")
	cp := filepath.Join(repoRoot, "hack", "envtest", "kube-apiserver")
	tools, err := os.ReadFile(filepath.Join(cp, "tools.go"))
	if err != nil {
		t.Fatal(err)
	}
	var binaries []string
	for _, m := range regexp.MustCompile(`(?m)^\s*_ "([^"]+)"$`).FindAllStringSubmatch(string(tools), -1) {
		binaries = append(binaries, m[1])
	}
	if len(binaries) == 0 {
		t.Fatalf("%s/tools.go imports no binaries", cp)
	}
	theirs := goList(t, cp, binaries...)
	shared := 0
	for path, version := range ours {
		other, ok := theirs[path]
		if !ok {
			continue
		}
		shared++
		if other != version {
			t.Errorf("%s is %s in the server's go.mod and %s in hack/envtest/kube-apiserver's: set both to the higher one (go get %s@<version> in the other module)", path, version, other, path)
		}
	}
	// The control plane has the Kubernetes libraries, whatever else changes.
	for _, path := range []string{"k8s.io/api", "k8s.io/apimachinery", "k8s.io/client-go"} {
		if _, ok := theirs[path]; !ok {
			t.Errorf("hack/envtest/kube-apiserver's module has no %s", path)
		}
	}
	t.Logf("%d modules shared, %d the server's alone", shared, len(ours)-shared)
}

// goList returns the modules that provide packages (or their dependencies)
// in dir's module, path to version (a replacement's, where there is one),
// the main module and the standard library left out.
func goList(t *testing.T, dir string, packages ...string) map[string]string {
	t.Helper()
	args := append([]string{"list", "-deps", "-json=Module"}, packages...)
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			t.Fatalf("go %s in %s: %v\n%s", strings.Join(args[:2], " "), dir, err, exit.Stderr)
		}
		t.Fatalf("go %s in %s: %v", strings.Join(args[:2], " "), dir, err)
	}
	type module struct {
		Path, Version string
		Main          bool
		Replace       *module
	}
	modules := map[string]string{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p struct{ Module *module }
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("go %s in %s: %v", strings.Join(args[:2], " "), dir, err)
		}
		m := p.Module
		if m == nil || m.Main {
			continue
		}
		version := m.Version
		if m.Replace != nil {
			version = m.Replace.Version
		}
		modules[m.Path] = version
	}
	return modules
}
