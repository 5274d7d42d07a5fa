// Package image tests the container image that `make image` builds without
// a container engine: its OCI layout and docker archive, that it agrees with
// the Dockerfile (user, entrypoint, command, build flags), that it is
// reproducible, and that it runs: unpacked with umoci and run with runc (as
// root, in the host's network namespace, talking to loopback only), it
// prints its version, and `serve` becomes ready against a real API server.
//
// It needs runc and umoci (`make image-tools` installs the Debian packages)
// and root; without them it is skipped, except under CI (CI=true), where
// .ci/run installs them.
package image

import (
	"archive/tar"
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/endpoint-policy/endpoint-policy/internal/testing/loopback"
	"github.com/endpoint-policy/endpoint-policy/internal/testing/proctest"
)

var repoRoot = filepath.Join("..", "..")

func TestMain(m *testing.M) {
	// The image is built from these by make, in other processes.
	var paths []string
	for _, p := range []string{"cmd", "internal", filepath.Join("hack", "image"), "Dockerfile", "Makefile"} {
		paths = append(paths, filepath.Join(repoRoot, p))
	}
	if err := proctest.ReadTree(paths...); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// requireRunc skips the test without root, runc and umoci, or fails it under CI.
func requireRunc(t *testing.T) {
	t.Helper()
	var missing []string
	for _, tool := range []string{"runc", "umoci"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("the image test needs %s: `make image-tools` installs runc and umoci (Debian packages); run as root", strings.Join(missing, ", "))
	if os.Getenv("CI") != "" {
		t.Fatal(msg + " (.ci/run does)")
	}
	t.Skip(msg)
}

func TestImage(t *testing.T) {
	requireRunc(t)
	dir := t.TempDir()
	const tag = "endpoint-policy:image-test"
	digest := makeImage(t, filepath.Join(dir, "image"), tag)

	dockerfile := readDockerfile(t)
	cfg := inspect(t, filepath.Join(dir, "image"), tag)
	t.Run("agrees with the Dockerfile", func(t *testing.T) {
		if cfg.Config.User != dockerfile.user {
			t.Errorf("user %q, Dockerfile USER %q", cfg.Config.User, dockerfile.user)
		}
		if !slices.Equal(cfg.Config.Entrypoint, dockerfile.entrypoint) {
			t.Errorf("entrypoint %q, Dockerfile ENTRYPOINT %q", cfg.Config.Entrypoint, dockerfile.entrypoint)
		}
		if !slices.Equal(cfg.Config.Cmd, dockerfile.cmd) {
			t.Errorf("cmd %q, Dockerfile CMD %q", cfg.Config.Cmd, dockerfile.cmd)
		}
		if cfg.OS != "linux" || cfg.Architecture != runtime.GOARCH {
			t.Errorf("platform %s/%s", cfg.OS, cfg.Architecture)
		}
		got, want := makefileBuildFlags(t), dockerfile.buildFlags
		if !slices.Equal(got, want) {
			t.Errorf("make build's flags %q, the Dockerfile's %q", got, want)
		}
		for _, f := range []string{"CGO_ENABLED=0", "-trimpath", "-s", "-w",
			"-X github.com/endpoint-policy/endpoint-policy/internal/version.version="} {
			if !slices.Contains(want, f) {
				t.Errorf("the Dockerfile's build flags %q lack %s", want, f)
			}
		}
	})
	t.Run("reproducible", func(t *testing.T) {
		if again := makeImage(t, filepath.Join(dir, "again"), tag); again != digest {
			t.Errorf("a second build has digest %s, the first %s", again, digest)
		}
	})

	bundle := filepath.Join(dir, "bundle")
	if out, err := exec.Command("umoci", "unpack", "--image", filepath.Join(dir, "image", "oci")+":"+strings.Split(tag, ":")[1], bundle).CombinedOutput(); err != nil {
		t.Fatalf("umoci unpack: %v\n%s", err, out)
	}

	t.Run("--version", func(t *testing.T) {
		out, err := runOnce(t, bundle, nil, "--version")
		if err != nil || !strings.HasPrefix(out, "endpoint-policy ") {
			t.Errorf("--version: %q (%v)", out, err)
		}
	})
	t.Run("serve is ready against the API server", func(t *testing.T) {
		serveReady(t, bundle)
	})
}

// makeImage runs `make image` into dir and returns the image's digest.
func makeImage(t *testing.T, dir, tag string) string {
	t.Helper()
	cmd := exec.Command("make", "--no-print-directory", "image", "IMAGE_DIR="+dir, "IMG="+tag)
	cmd.Dir = repoRoot
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make image: %v\n%s", err, out)
	}
	index := readJSON[ociIndex](t, filepath.Join(dir, "oci", "index.json"))
	if len(index.Manifests) != 1 {
		t.Fatalf("index.json lists %d manifests", len(index.Manifests))
	}
	return index.Manifests[0].Digest
}

type ociIndex struct {
	Manifests []struct {
		MediaType   string            `json:"mediaType"`
		Digest      string            `json:"digest"`
		Annotations map[string]string `json:"annotations"`
	} `json:"manifests"`
}

type ociManifest struct {
	MediaType string `json:"mediaType"`
	Config    struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
	} `json:"config"`
	Layers []struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
	} `json:"layers"`
}

type imageConfig struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Config       struct {
		User       string            `json:"User"`
		Entrypoint []string          `json:"Entrypoint"`
		Cmd        []string          `json:"Cmd"`
		Labels     map[string]string `json:"Labels"`
	} `json:"config"`
}

func readJSON[T any](t *testing.T, path string) T {
	t.Helper()
	var v T
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return v
}

func blob(dir, digest string) string {
	algo, hex, _ := strings.Cut(digest, ":")
	return filepath.Join(dir, "oci", "blobs", algo, hex)
}

// inspect checks the OCI layout (media types, the tag, one layer holding
// only the binary) and the docker archive (its tag), and returns the image
// configuration.
func inspect(t *testing.T, dir, tag string) imageConfig {
	t.Helper()
	index := readJSON[ociIndex](t, filepath.Join(dir, "oci", "index.json"))
	m := index.Manifests[0]
	if m.MediaType != "application/vnd.oci.image.manifest.v1+json" || m.Annotations["org.opencontainers.image.ref.name"] != strings.Split(tag, ":")[1] {
		t.Errorf("index.json manifest: %+v", m)
	}
	manifest := readJSON[ociManifest](t, blob(dir, m.Digest))
	if manifest.Config.MediaType != "application/vnd.oci.image.config.v1+json" || len(manifest.Layers) != 1 ||
		manifest.Layers[0].MediaType != "application/vnd.oci.image.layer.v1.tar+gzip" {
		t.Errorf("manifest: %+v", manifest)
	}
	cfg := readJSON[imageConfig](t, blob(dir, manifest.Config.Digest))
	if cfg.Config.Labels["org.opencontainers.image.source"] == "" || cfg.Config.Labels["org.opencontainers.image.version"] == "" {
		t.Errorf("labels %v", cfg.Config.Labels)
	}

	f, err := os.Open(filepath.Join(dir, "endpoint-policy.tar"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			t.Fatal("the docker archive has no manifest.json")
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name != "manifest.json" {
			continue
		}
		var archive []struct{ RepoTags []string }
		if err := json.NewDecoder(tr).Decode(&archive); err != nil {
			t.Fatal(err)
		}
		if len(archive) != 1 || !slices.Equal(archive[0].RepoTags, []string{tag}) {
			t.Errorf("docker archive manifest %+v, want tag %s", archive, tag)
		}
		break
	}
	return cfg
}

type dockerfileContract struct {
	user            string
	entrypoint, cmd []string
	buildFlags      []string
}

var (
	dockerfileUser       = regexp.MustCompile(`(?m)^USER\s+(\S+)\s*$`)
	dockerfileEntrypoint = regexp.MustCompile(`(?m)^ENTRYPOINT\s+(\[.*\])\s*$`)
	dockerfileCmd        = regexp.MustCompile(`(?m)^CMD\s+(\[.*\])\s*$`)
)

func readDockerfile(t *testing.T) dockerfileContract {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	var c dockerfileContract
	if m := dockerfileUser.FindStringSubmatch(s); m != nil {
		c.user = m[1]
	}
	for _, f := range []struct {
		re  *regexp.Regexp
		out *[]string
	}{{dockerfileEntrypoint, &c.entrypoint}, {dockerfileCmd, &c.cmd}} {
		if m := f.re.FindStringSubmatch(s); m != nil {
			if err := json.Unmarshal([]byte(m[1]), f.out); err != nil {
				t.Fatalf("Dockerfile %s: %v", m[0], err)
			}
		}
	}
	i := strings.Index(s, "go build")
	if i < 0 || c.user == "" || c.entrypoint == nil {
		t.Fatalf("the Dockerfile has no USER, ENTRYPOINT or go build")
	}
	start := strings.LastIndex(s[:i], "\n")
	end := strings.Index(s[i:], "-o ")
	c.buildFlags = flagsOf(strings.ReplaceAll(s[start:i+end], "\\\n", " "))
	return c
}

// makefileBuildFlags returns the flags of the Makefile's build recipe, with
// LDFLAGS and TOOL_GCFLAGS expanded.
func makefileBuildFlags(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.ReplaceAll(string(data), "\\\n", " ")
	ldflags := regexp.MustCompile(`(?m)^LDFLAGS :=(.*)$`).FindStringSubmatch(s)
	gcflags := regexp.MustCompile(`(?m)^TOOL_GCFLAGS :=(.*)$`).FindStringSubmatch(s)
	recipe := regexp.MustCompile(`(?m)^build:.*\n\t(.*)$`).FindStringSubmatch(s)
	if ldflags == nil || gcflags == nil || recipe == nil {
		t.Fatal("the Makefile has no LDFLAGS, TOOL_GCFLAGS or build recipe")
	}
	return flagsOf(strings.NewReplacer("$(LDFLAGS)", ldflags[1], "$(TOOL_GCFLAGS)", gcflags[1]).Replace(recipe[1]))
}

// flagsOf returns go build's flags as both files write them: CGO_ENABLED,
// -trimpath, -gcflags, and -ldflags' -s, -w and -X names (their values are
// variables).
func flagsOf(cmd string) []string {
	var out []string
	fields := strings.Fields(strings.ReplaceAll(cmd, `"`, " "))
	for i, f := range fields {
		switch {
		case strings.HasPrefix(f, "CGO_ENABLED="), strings.HasPrefix(f, "-gcflags"), f == "-trimpath", f == "-s", f == "-w":
			out = append(out, f)
		case f == "-X" && i+1 < len(fields):
			name, _, _ := strings.Cut(fields[i+1], "=")
			out = append(out, "-X "+name+"=")
		}
	}
	slices.Sort(out)
	return out
}

// prepare writes a bundle that runs the image with args instead of its command: host
// network, read-only root (as the chart runs it), mounts (host directory to
// container path) read-only.
func prepare(t *testing.T, bundle string, mounts map[string]string, args ...string) string {
	t.Helper()
	path := filepath.Join(bundle, "config.json")
	var spec map[string]any
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &spec); err != nil {
		t.Fatal(err)
	}
	process := spec["process"].(map[string]any)
	process["terminal"] = false
	entrypoint := process["args"].([]any)[0]
	process["args"] = append([]any{entrypoint}, toAny(args)...)
	rootfs, err := filepath.Abs(filepath.Join(bundle, "rootfs"))
	if err != nil {
		t.Fatal(err)
	}
	// Each run gets its own bundle directory holding the spec; the
	// unpacked root is shared, read-only.
	spec["root"] = map[string]any{"path": rootfs, "readonly": true}
	linux := spec["linux"].(map[string]any)
	var namespaces []any
	for _, ns := range linux["namespaces"].([]any) {
		if ns.(map[string]any)["type"] != "network" {
			namespaces = append(namespaces, ns)
		}
	}
	linux["namespaces"] = namespaces
	specMounts := spec["mounts"].([]any)
	for host, container := range mounts {
		specMounts = append(specMounts, map[string]any{
			"destination": container, "type": "bind", "source": host, "options": []any{"rbind", "ro"},
		})
	}
	spec["mounts"] = specMounts
	run := t.TempDir()
	data, err = json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(run, "config.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	return run
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

var containers int

func containerID(t *testing.T) string {
	containers++
	return fmt.Sprintf("endpoint-policy-image-test-%d-%d", os.Getpid(), containers)
}

// runOnce runs the image to completion and returns its output.
func runOnce(t *testing.T, bundle string, mounts map[string]string, args ...string) (string, error) {
	t.Helper()
	run := prepare(t, bundle, mounts, args...)
	id := containerID(t)
	t.Cleanup(func() { _ = exec.Command("runc", "delete", "--force", id).Run() })
	out, err := exec.Command("runc", "run", "--bundle", run, id).CombinedOutput()
	return string(out), err
}

// serveReady runs `serve` in the image against an envtest API server, with a
// serving certificate and a kubeconfig mounted read-only, and waits for
// /readyz; then stops it with SIGTERM and expects a clean exit.
func serveReady(t *testing.T, bundle string) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set. Run `make test` or `make image-test`, which build kube-apiserver and etcd from Go modules.")
	}
	env := &envtest.Environment{BinaryAssetsDirectory: assets}
	if _, err := env.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	admin, err := env.AddUser(envtest.User{Name: "image-test", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := admin.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}

	// What the container reads, readable by its user (65532).
	etc := t.TempDir()
	ca, err := loopback.NewCA("image-test")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"kubeconfig":  kubeconfig,
		"tls/tls.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}),
		"tls/tls.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}),
	} {
		path := filepath.Join(etc, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(etc, 0o755); err != nil {
		t.Fatal(err)
	}

	webhookPort, healthAddr := proctest.FreePort(t), fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))
	run := prepare(t, bundle, map[string]string{etc: "/etc/endpoint-policy"},
		"serve", "--kubeconfig=/etc/endpoint-policy/kubeconfig", "--cert-dir=/etc/endpoint-policy/tls",
		"--namespace=default", fmt.Sprintf("--webhook-port=%d", webhookPort),
		"--health-probe-bind-address="+healthAddr, "--metrics-bind-address=0")
	id := containerID(t)
	var logs bytes.Buffer
	cmd := exec.Command("runc", "run", "--bundle", run, id)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = exec.Command("runc", "kill", id, "KILL").Run()
		_ = exec.Command("runc", "delete", "--force", id).Run()
		if t.Failed() {
			t.Logf("the container's output:\n%s", logs.String())
		}
	})

	proctest.Ready(t, "http://"+healthAddr+"/readyz", exited, 60*time.Second, "serve in the image")

	if out, err := exec.Command("runc", "kill", id, "TERM").CombinedOutput(); err != nil {
		t.Fatalf("runc kill TERM: %v\n%s", err, out)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("serve exited with %v after SIGTERM", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("serve did not exit within 30s of SIGTERM")
	}
}
