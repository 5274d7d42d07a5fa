package check

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/endpoint-policy/endpoint-policy/internal/kinds"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/apiserver"
)

// Stdin is the path that reads standard input.
const Stdin = "-"

// Object is one object read from the input.
type Object struct {
	// Source is "<file>#<document index>", the index counting from 0 in the
	// file's YAML documents. Items of a List share the List's source.
	Source string
	Object client.Object
}

// Input is everything read from the paths given.
type Input struct {
	Objects []Object
	// Skipped counts documents of kinds no policy reads (Services,
	// KubeletConfiguration, ...): they are not errors.
	Skipped int
}

// kubeadmKinds are the kubeadm configuration kinds read from raw kubeadm
// files, in the versions kubeadm reads today.
var kubeadmKinds = map[schema.GroupVersionKind]bool{}

func init() {
	for _, v := range []string{"v1beta3", "v1beta4"} {
		for _, k := range []string{"ClusterConfiguration", "InitConfiguration", "JoinConfiguration"} {
			kubeadmKinds[schema.GroupVersionKind{Group: apiserver.KubeadmGroup, Version: v, Kind: k}] = true
		}
	}
}

// Read reads the objects in paths: files, directories (recursively, the
// *.yaml, *.yml and *.json files in them) and Stdin. Every document that
// cannot be read is an error naming its file and document index; Read
// returns all of them, and no Input, so that a verdict is never given on
// part of the input.
func Read(paths []string, stdin io.Reader) (*Input, error) {
	in := &Input{}
	var errs []error
	for _, path := range paths {
		if path == Stdin {
			errs = append(errs, in.readStream(Stdin, stdin)...)
			continue
		}
		info, err := os.Stat(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !info.IsDir() {
			errs = append(errs, in.readFile(path)...)
			continue
		}
		err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				errs = append(errs, err)
				return nil
			}
			if d.IsDir() || !isManifest(p) {
				return nil
			}
			errs = append(errs, in.readFile(p)...)
			return nil
		})
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return in, nil
}

func isManifest(path string) bool {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

func (in *Input) readFile(path string) []error {
	f, err := os.Open(path)
	if err != nil {
		return []error{err}
	}
	defer f.Close()
	return in.readStream(path, f)
}

// readStream reads the YAML (or JSON) documents of one file.
func (in *Input) readStream(name string, r io.Reader) []error {
	var errs []error
	docs := utilyaml.NewYAMLReader(bufio.NewReader(r))
	for i := 0; ; i++ {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			return errs
		}
		source := fmt.Sprintf("%s#%d", name, i)
		if err != nil {
			return append(errs, fmt.Errorf("%s: cannot read: %w", source, err))
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: not valid YAML or JSON: %w", source, err))
			continue
		}
		if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
			continue // an empty document, or only comments
		}
		if err := in.add(source, js); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", source, err))
		}
	}
}

// add decodes one JSON document: an object of a kind the policies read, a
// raw kubeadm configuration, a List of them, or something else (skipped).
func (in *Input) add(source string, js []byte) error {
	var meta struct {
		APIVersion string            `json:"apiVersion"`
		Kind       string            `json:"kind"`
		Items      []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(js, &meta); err != nil {
		return fmt.Errorf("not a Kubernetes object (a mapping with apiVersion and kind): %w", err)
	}
	switch {
	case meta.APIVersion == "":
		return fmt.Errorf("apiVersion: Required value: not a Kubernetes object")
	case meta.Kind == "":
		return fmt.Errorf("kind: Required value: not a Kubernetes object")
	}
	gv, err := schema.ParseGroupVersion(meta.APIVersion)
	if err != nil {
		return fmt.Errorf("apiVersion: Invalid value: %q: %w", meta.APIVersion, err)
	}
	gvk := gv.WithKind(meta.Kind)
	if k, ok := kinds.ForGVK(gvk); ok {
		obj, err := k.Decode(js)
		if err != nil {
			return err
		}
		in.Objects = append(in.Objects, Object{Source: source, Object: obj})
		return nil
	}
	if kubeadmKinds[gvk] {
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(js); err != nil {
			return fmt.Errorf("cannot decode %s %s: %w", meta.APIVersion, meta.Kind, err)
		}
		in.Objects = append(in.Objects, Object{Source: source, Object: u})
		return nil
	}
	if strings.HasSuffix(meta.Kind, "List") && meta.Items != nil {
		for i, item := range meta.Items {
			if err := in.add(source, item); err != nil {
				return fmt.Errorf("items[%d]: %w", i, err)
			}
		}
		return nil
	}
	in.Skipped++
	return nil
}
