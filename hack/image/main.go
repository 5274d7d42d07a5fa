// Command image builds endpoint-policy's container image without a container
// engine (`make image`): go-containerregistry's empty image, one layer with
// the static binary, OCI media types, and the Dockerfile's user and
// entrypoint. It writes an OCI image layout (umoci, skopeo, crane, `ctr
// import` with --oci) and a docker-archive tarball (`docker load`, `kind load
// image-archive`, `ctr import`).
//
// The image is reproducible: every timestamp is --created (the commit's
// time in `make image`), so the same binary gives the same digest.
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The runtime contract the Dockerfile sets too (test/image checks they agree).
const (
	// User is distroless' nonroot, which the chart's securityContext expects.
	User = "65532:65532"
	// BinaryPath is where the binary goes, and the entrypoint.
	BinaryPath = "/endpoint-policy"
	// DefaultCommand is the Dockerfile's CMD.
	DefaultCommand = "serve"
)

func main() {
	binary := flag.String("binary", "", "The static endpoint-policy binary (CGO_ENABLED=0) to put in the image.")
	out := flag.String("out", "", "Output directory: <out>/oci (OCI image layout) and <out>/endpoint-policy.tar (docker archive).")
	ref := flag.String("tag", "endpoint-policy:dev", "Image reference the archives name.")
	version := flag.String("version", "dev", "org.opencontainers.image.version label.")
	revision := flag.String("revision", "", "org.opencontainers.image.revision label (the commit).")
	created := flag.Int64("created", 0, "Creation time, Unix seconds: the image's and the layer's timestamps (reproducible builds).")
	arch := flag.String("arch", runtime.GOARCH, "The binary's architecture.")
	flag.Parse()
	if err := run(*binary, *out, *ref, *version, *revision, time.Unix(*created, 0).UTC(), *arch); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(binary, out, ref, version, revision string, created time.Time, arch string) error {
	if binary == "" || out == "" {
		return fmt.Errorf("--binary and --out are required")
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		return fmt.Errorf("--tag %q: %w", ref, err)
	}
	img, err := Build(binary, version, revision, created, arch)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	p, err := layout.Write(filepath.Join(out, "oci"), empty.Index)
	if err != nil {
		return err
	}
	// The ref.name annotation is the tag umoci and skopeo ask for (oci:<dir>:<tag>).
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": tag.TagStr(),
	})); err != nil {
		return err
	}
	if err := tarball.WriteToFile(filepath.Join(out, "endpoint-policy.tar"), tag, img); err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("%s %s\n  OCI layout:     %s (tag %s)\n  docker archive: %s\n", tag, digest,
		filepath.Join(out, "oci"), tag.TagStr(), filepath.Join(out, "endpoint-policy.tar"))
	return nil
}

// Build returns the image: the binary, as root-owned 0755 BinaryPath, on
// nothing else (the binary is static and needs no CA bundle: it trusts the
// cluster's CA from its ServiceAccount).
func Build(binary, version, revision string, created time.Time, arch string) (v1.Image, error) {
	data, err := os.ReadFile(binary)
	if err != nil {
		return nil, fmt.Errorf("--binary: %w", err)
	}
	if !bytes.HasPrefix(data, []byte("\x7fELF")) {
		return nil, fmt.Errorf("--binary %s: not an ELF executable", binary)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{
		Name: strings.TrimPrefix(BinaryPath, "/"), Mode: 0o755, Size: int64(len(data)),
		Typeflag: tar.TypeReg, ModTime: created, Format: tar.FormatPAX,
	}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(data); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layerData := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerData)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{
		Created: v1.Time{Time: created}, CreatedBy: "make image (hack/image): COPY endpoint-policy " + BinaryPath,
	}})
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", arch
	cfg.Created = v1.Time{Time: created}
	cfg.Config.User = User
	cfg.Config.Entrypoint = []string{BinaryPath}
	cfg.Config.Cmd = []string{DefaultCommand}
	cfg.Config.WorkingDir = "/"
	cfg.Config.Labels = map[string]string{
		"org.opencontainers.image.title":       "endpoint-policy",
		"org.opencontainers.image.description": "Admission webhook that keeps how cluster components reach and advertise the API server safe",
		"org.opencontainers.image.source":      "https://github.com/endpoint-policy/endpoint-policy",
		"org.opencontainers.image.version":     version,
		"org.opencontainers.image.revision":    revision,
		"org.opencontainers.image.created":     created.Format(time.RFC3339),
	}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, err
	}
	return mutate.CreatedAt(img, v1.Time{Time: created})
}
