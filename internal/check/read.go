package check

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/endpoint-policy/endpoint-policy/internal/kinds"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/apiserver"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
)

// Stdin is the path that reads standard input.
const Stdin = "-"

// Object is one object read from the input.
type Object struct {
	// Source is "<file>#<document index>", the index counting from 0 in the
	// file's YAML documents. Items of a List share the List's source.
	Source string
	Object client.Object
	// StaticPod: a pod read as a static pod (Options.StaticPods, or a
	// directory named manifests), evaluated as its mirror pod.
	StaticPod bool
	// File is the path the object was read from, as given ("-": standard
	// input), and Line the line its document starts on (1: the first).
	File string
	Line int

	// doc is the YAML (or JSON) text of its document, and items the
	// indexes of the object in the document's List (and Lists in it),
	// none for a document that is the object: where a finding's field is
	// (FieldLine).
	doc   []byte
	items []int
}

// Input is everything read from the paths given.
type Input struct {
	Objects []Object
	// Skipped counts documents of kinds no policy reads (Services,
	// KubeletConfiguration, ...): they are not errors.
	Skipped int
	// SkippedPatches counts kubeadm patch files (kubeadmPatch): not
	// objects, not errors.
	SkippedPatches int
	// Warnings name the paths that yielded no object.
	Warnings []string
	// EndpointConfigMaps are the configuration's endpointConfigMaps: the
	// ConfigMaps of the files whose values references resolve to (as the
	// server reads only those); nil: the default list.
	EndpointConfigMaps []types.NamespacedName
	// Verifications are the node agents' reports (check --cluster, from
	// their Leases); nil offline, where host-network-endpoint's verified
	// rewrites are what admission does where the endpoint is verified.
	Verifications hostnetwork.Verifications

	static bool // Options.StaticPods
}

// kubeadmKinds are the kubeadm configuration kinds read from raw kubeadm
// files: the versions kubeadm reads today, and v1beta2 (kubeadm 1.15-1.26),
// still on older clusters' disks, whose fields the policies read are
// v1beta3's.
var kubeadmKinds = map[schema.GroupVersionKind]bool{}

// removedWorkloads are the workload apiVersions the API server no longer
// serves (removed in Kubernetes 1.16): reported, not skipped as kinds no
// policy reads.
var removedWorkloads = map[string]bool{"extensions/v1beta1": true, "apps/v1beta1": true, "apps/v1beta2": true}

func init() {
	for _, v := range []string{"v1beta2", "v1beta3", "v1beta4"} {
		for _, k := range []string{"ClusterConfiguration", "InitConfiguration", "JoinConfiguration"} {
			kubeadmKinds[schema.GroupVersionKind{Group: apiserver.KubeadmGroup, Version: v, Kind: k}] = true
		}
	}
}

// Read reads the objects in paths: files, directories (recursively, the
// *.yaml, *.yml, *.json and *.manifest files in them, a directory given
// through a symbolic link included) and Stdin. Every document that cannot
// be read is an error naming its file and document index (and, for YAML,
// the file's line); Read returns all of them with the Input of everything
// else, so that one bad file does not hide a verdict on the others (the
// caller still fails). A path that yields no object is a warning
// (Input.Warnings).
func Read(paths []string, stdin io.Reader) (*Input, error) {
	return ReadWith(paths, stdin, Options{})
}

// Options change how Read reads.
type Options struct {
	// StaticPods reads every pod as a static pod (--static-pods): as its
	// mirror pod, which admission never changes. Pods in a directory named
	// manifests are read so anyway.
	StaticPods bool
}

// ReadWith is Read with opts.
func ReadWith(paths []string, stdin io.Reader, opts Options) (*Input, error) {
	in := &Input{static: opts.StaticPods}
	var errs []error
	for _, path := range paths {
		before := len(in.Objects) + in.Skipped + in.SkippedPatches
		var pathErrs []error
		if path == Stdin {
			pathErrs = in.readStream(Stdin, stdin, in.static)
		} else {
			pathErrs = in.readPath(path)
		}
		errs = append(errs, pathErrs...)
		if len(pathErrs) == 0 && len(in.Objects)+in.Skipped+in.SkippedPatches == before {
			in.Warnings = append(in.Warnings, fmt.Sprintf("%s: no Kubernetes object found (read: *.yaml, *.yml, *.json, *.manifest)", path))
		}
	}
	return in, errors.Join(errs...)
}

// readPath reads a file or a directory.
func (in *Input) readPath(path string) []error {
	info, err := os.Stat(path)
	if err != nil {
		return []error{err}
	}
	if !info.IsDir() {
		return in.readFile(path, in.static || staticPodDir(path))
	}
	// WalkDir does not follow a root that is a symbolic link
	// (/etc/kubernetes/manifests often is one): walk its target, and name
	// the files under the path given.
	root, err := filepath.EvalSymlinks(path)
	if err != nil {
		return []error{err}
	}
	var errs []error
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		if d.IsDir() || !isManifest(p) {
			return nil
		}
		name := p
		if rel, err := filepath.Rel(root, p); err == nil {
			name = filepath.Join(path, rel)
		}
		if kubeadmPatch(name) {
			in.SkippedPatches++
			return nil
		}
		errs = append(errs, in.readFile(name, in.static || staticPodDir(name))...)
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	return errs
}

func isManifest(path string) bool {
	if strings.HasPrefix(filepath.Base(path), ".") {
		return false // the kubelet skips hidden files too
	}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".yaml", ".yml", ".json", ".manifest": // kube-up writes kube-apiserver.manifest
		return true
	}
	return false
}

// staticPodDir reports whether path is in a directory named manifests: a
// static pod directory (kubeadm's /etc/kubernetes/manifests, kube-up's),
// whose pods the kubelet runs and mirrors.
func staticPodDir(path string) bool {
	return filepath.Base(filepath.Dir(path)) == "manifests"
}

// kubeadmPatchName is the name kubeadm reads patches by:
// target[suffix][+patchtype].{yaml,json} (kubeadm's --patches directory,
// and what --emit-kubeadm-patches writes). They are not objects.
var kubeadmPatchName = regexp.MustCompile(`^(etcd|kube-apiserver|kube-controller-manager|kube-scheduler|kubeletconfiguration|corednsdeployment)[^.+]*(\+(strategic|merge|json))?\.(yaml|json)$`)

// kubeadmPatch reports whether path is a kubeadm patch file: its name has
// kubeadm's form and it is under a directory named patches.
func kubeadmPatch(path string) bool {
	if !kubeadmPatchName.MatchString(filepath.Base(path)) {
		return false
	}
	for dir := filepath.Dir(path); dir != "." && dir != string(filepath.Separator); dir = filepath.Dir(dir) {
		if strings.Contains(strings.ToLower(filepath.Base(dir)), "patches") {
			return true
		}
		if filepath.Dir(dir) == dir {
			break
		}
	}
	return false
}

func (in *Input) readFile(path string, staticPods bool) []error {
	f, err := os.Open(path)
	if err != nil {
		return []error{err}
	}
	defer f.Close()
	return in.readStream(path, f, staticPods)
}

// readStream reads the YAML (or JSON) documents of one file; with
// staticPods, its pods are static pods.
func (in *Input) readStream(name string, r io.Reader, staticPods bool) []error {
	data, err := io.ReadAll(r)
	if err != nil {
		return []error{fmt.Errorf("%s: cannot read: %w", name, err)}
	}
	var errs []error
	for i, doc := range splitDocuments(data) {
		source := fmt.Sprintf("%s#%d", name, i)
		js, err := yaml.YAMLToJSON(doc.body)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: not valid YAML or JSON: %s", source, fileLines(err.Error(), doc.line)))
			continue
		}
		if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
			continue // an empty document, or only comments
		}
		objects := len(in.Objects)
		if err := in.add(source, js, nil); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", source, err))
		}
		for i := range in.Objects[objects:] {
			o := &in.Objects[objects+i]
			o.File, o.Line, o.doc = name, doc.line, doc.body
			if staticPods {
				o.StaticPod = asMirrorPod(o.Object)
			}
		}
	}
	return errs
}

// document is one YAML document of a file and the line it starts on.
type document struct {
	line int
	body []byte
}

// splitDocuments splits a YAML stream on its "---" lines. Comments before
// the first "---" are not a document: the indexes count documents, as
// "<file>#<index>" names them.
func splitDocuments(data []byte) []document {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // a UTF-8 BOM
	var docs []document
	cur := document{line: 1}
	explicit := false // cur follows a "---"
	line := 1
	for len(data) > 0 {
		next := bytes.IndexByte(data, '\n')
		var l []byte
		if next < 0 {
			l, data = data, nil
		} else {
			l, data = data[:next+1], data[next+1:]
		}
		if isSeparator(l) {
			if explicit || !onlyComments(cur.body) {
				docs = append(docs, cur)
			}
			cur, explicit = document{line: line + 1}, true
		} else {
			cur.body = append(cur.body, l...)
		}
		line++
	}
	if explicit || !onlyComments(cur.body) {
		docs = append(docs, cur)
	}
	return docs
}

// isSeparator reports a "---" line (with nothing after it but blanks or a
// comment).
func isSeparator(l []byte) bool {
	rest, ok := bytes.CutPrefix(l, []byte("---"))
	if !ok {
		return false
	}
	rest = bytes.TrimLeft(rest, " \t")
	return len(bytes.TrimSpace(rest)) == 0 || rest[0] == '#'
}

func onlyComments(body []byte) bool {
	for _, l := range bytes.Split(body, []byte("\n")) {
		if t := bytes.TrimSpace(l); len(t) > 0 && t[0] != '#' {
			return false
		}
	}
	return true
}

// yamlLine is how the YAML parser names a line: relative to the document.
var yamlLine = regexp.MustCompile(`\bline (\d+)\b`)

// fileLines makes the document's line numbers in msg the file's: the
// document starts on line start.
func fileLines(msg string, start int) string {
	return yamlLine.ReplaceAllStringFunc(msg, func(m string) string {
		n, err := strconv.Atoi(strings.TrimPrefix(m, "line "))
		if err != nil {
			return m
		}
		return fmt.Sprintf("line %d", n+start-1)
	})
}

// add decodes one JSON document: an object of a kind the policies read, a
// raw kubeadm configuration, a List of them, or something else (skipped).
// items are the indexes of js in the Lists of its document.
func (in *Input) add(source string, js []byte, items []int) error {
	meta, gvk, err := typeOf(js)
	if err != nil {
		return err
	}
	if k, ok := kinds.ForGVK(gvk); ok {
		obj, err := k.Decode(js)
		if err != nil {
			return err
		}
		in.Objects = append(in.Objects, Object{Source: source, Object: obj, items: items})
		return nil
	}
	if kubeadmKinds[gvk] {
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(js); err != nil {
			return fmt.Errorf("cannot decode %s %s: %w", meta.APIVersion, meta.Kind, err)
		}
		in.Objects = append(in.Objects, Object{Source: source, Object: u, items: items})
		return nil
	}
	if strings.HasSuffix(meta.Kind, "List") && meta.Items != nil {
		for i, item := range meta.Items {
			if err := in.add(source, item, append(slices.Clone(items), i)); err != nil {
				return fmt.Errorf("items[%d]: %w", i, err)
			}
		}
		return nil
	}
	in.Skipped++
	return nil
}

// asMirrorPod makes a static pod read from a manifests directory what
// admission sees of it: its mirror pod (policy.IsMirrorPod), which no
// policy changes, since the kubelet runs the file whatever the API server
// says. It reports whether obj is a pod.
func asMirrorPod(obj client.Object) bool {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return false
	}
	a := pod.GetAnnotations()
	if a == nil {
		a = map[string]string{}
	}
	if _, ok := a[policy.MirrorPodAnnotation]; !ok {
		a[policy.MirrorPodAnnotation] = "static"
	}
	pod.SetAnnotations(a)
	return true
}
