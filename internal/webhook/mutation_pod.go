package webhook

import (
	"bytes"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	sigsjson "sigs.k8s.io/json"

	"github.com/endpoint-policy/endpoint-policy/internal/kinds"
)

// mutationPod is the part of a pod the Mutating rules read, in the API's JSON
// shape: decoding only this, and skipping the rest (probes, resources,
// volumes, affinity, managed fields), is most of what makes the pod
// mutator cheaper than decoding whole pods (BenchmarkPodMutator/*/ours vs
// /generic, docs/performance.md). The background audit and the check CLI
// decode whole pods; TestMutationPodDecodesWhatMutatingRulesRead and
// FuzzPodMutator check that both decodings give the same answer.
//
// A Mutating rule that reads another field of the pod must add it here.
type mutationPod struct {
	APIVersion string        `json:"apiVersion"`
	Kind       string        `json:"kind"`
	Metadata   *mutationMeta `json:"metadata"` // nil: no metadata at all
	Spec       struct {
		HostNetwork    bool                `json:"hostNetwork"`
		NodeName       string              `json:"nodeName"`
		InitContainers []mutationContainer `json:"initContainers"`
		Containers     []mutationContainer `json:"containers"`
	} `json:"spec"`
}

type mutationMeta struct {
	Name         string            `json:"name"`
	GenerateName string            `json:"generateName"`
	Namespace    string            `json:"namespace"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
}

type mutationContainer struct {
	Name string        `json:"name"`
	Env  []mutationEnv `json:"env"`
}

type mutationEnv struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	// ValueFrom only needs to be told apart from absent: the rules never
	// read what it refers to.
	ValueFrom *struct{} `json:"valueFrom"`
}

// envPrefix starts the names of the only variables the Mutating rules read.
var envPrefix = []byte("KUBERNETES_SERVICE_")

// UnmarshalJSON decodes an entry only when it can name one of the variables
// the rules read; any other entry stays empty: it only counts, for the
// indexes of the patch. Skipping the other entries' names and values,
// instead of allocating them, halves BenchmarkPodMutator/large-50x100/ours.
// An escape sequence could spell the prefix, so an entry with one is
// decoded too.
func (e *mutationEnv) UnmarshalJSON(b []byte) error {
	if !bytes.Contains(b, envPrefix) && bytes.IndexByte(b, '\\') < 0 {
		*e = mutationEnv{}
		// Still an object (or null), as the whole pod's decoding demands.
		if b[0] != '{' && !bytes.Equal(b, []byte("null")) {
			return fmt.Errorf("env entry is not an object: %.20s", b)
		}
		return nil
	}
	type plain mutationEnv // without this method
	return sigsjson.UnmarshalCaseSensitivePreserveInts(b, (*plain)(e))
}

// someSource stands for any valueFrom: the rules only test it against nil.
var someSource = &corev1.EnvVarSource{}

var errNoObject = errors.New("admission request has no object")

// decodeMutationPod decodes raw, a v1 Pod, as the Mutating rules read it.
func decodeMutationPod(raw []byte) (*mutationPod, error) {
	if len(raw) == 0 {
		return nil, errNoObject
	}
	var m mutationPod
	// Case-sensitive, as the API server decodes.
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(raw, &m); err != nil {
		return nil, fmt.Errorf("cannot decode object as a %s: %w", kinds.Pod, err)
	}
	return &m, nil
}

// pod checks m's kind and returns a Pod holding only what the Mutating
// rules read, and says where its annotations are.
func (m *mutationPod) pod() (*corev1.Pod, annotationsAt, error) {
	if (m.APIVersion != "" || m.Kind != "") && (m.APIVersion != "v1" || m.Kind != "Pod") {
		return nil, 0, fmt.Errorf("object is a %s %s, not a %s", m.APIVersion, m.Kind, kinds.Pod)
	}
	pod := &corev1.Pod{}
	at := noMetadata
	if md := m.Metadata; md != nil {
		pod.Name, pod.GenerateName, pod.Namespace = md.Name, md.GenerateName, md.Namespace
		pod.Labels, pod.Annotations = md.Labels, md.Annotations
		at = noAnnotations
		if md.Annotations != nil {
			at = annotationsMap
		}
	}
	pod.Spec.HostNetwork, pod.Spec.NodeName = m.Spec.HostNetwork, m.Spec.NodeName
	pod.Spec.InitContainers = containersOf(m.Spec.InitContainers)
	pod.Spec.Containers = containersOf(m.Spec.Containers)
	return pod, at, nil
}

func containersOf(in []mutationContainer) []corev1.Container {
	if in == nil {
		return nil
	}
	out := make([]corev1.Container, len(in))
	for i, c := range in {
		out[i].Name = c.Name
		if c.Env == nil {
			continue
		}
		env := make([]corev1.EnvVar, len(c.Env))
		for j, e := range c.Env {
			env[j] = corev1.EnvVar{Name: e.Name, Value: e.Value}
			if e.ValueFrom != nil {
				env[j].ValueFrom = someSource
			}
		}
		out[i].Env = env
	}
	return out
}
