package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	sigsjson "sigs.k8s.io/json"
)

// MutationPod is the part of a pod the Mutating rules may read, in the API's
// JSON shape: the pod mutator decodes only this, in the same pass as the
// AdmissionReview, and skips the rest (probes, resources, volumes, pod
// affinity, managed fields). That is most of what makes it cheaper than
// decoding whole pods (BenchmarkPodMutator/*/ours vs /generic,
// docs/performance.md). The background audit and the check CLI decode whole
// pods; TestMutationPodDecodesWhatMutatingRulesRead and FuzzPodMutator check
// that both decodings give the Mutating rules the same answer.
//
// A Mutating rule that reads another field of the pod must add it here (and
// to Pod): that is the point of this type living with the engine.
type MutationPod struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        *MutationMeta `json:"metadata"` // nil: no metadata at all
	Spec            struct {
		HostNetwork  bool              `json:"hostNetwork"`
		NodeName     string            `json:"nodeName"`
		NodeSelector map[string]string `json:"nodeSelector"`
		// Affinity holds only the node affinity: which nodes the pod can
		// run on (host-network-endpoint's verification).
		Affinity *struct {
			NodeAffinity *corev1.NodeAffinity `json:"nodeAffinity"`
		} `json:"affinity"`
		Tolerations    []corev1.Toleration `json:"tolerations"`
		InitContainers []MutationContainer `json:"initContainers"`
		Containers     []MutationContainer `json:"containers"`
	} `json:"spec"`
}

// MutationMeta is the metadata the Mutating rules read.
type MutationMeta struct {
	Name         string            `json:"name"`
	GenerateName string            `json:"generateName"`
	Namespace    string            `json:"namespace"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	// OwnerReferences are kept undecoded: only an exemption reads them (a
	// pod matches its workload's exemption, Exemption.Matches), so the pod
	// mutator decodes them (Owners) only when the configuration has
	// exemptions. BenchmarkPodMutator, kube-proxy/ours/handle: decoded
	// always, 7 more allocations per pod with an owner; kept raw, 1 (the
	// copy) and the same time within the runs' noise.
	OwnerReferences json.RawMessage `json:"ownerReferences"`
}

// MutationContainer is a container as the Mutating rules read it.
type MutationContainer struct {
	Name string        `json:"name"`
	Env  []MutationEnv `json:"env"`
}

// MutationEnv is an env entry as the Mutating rules read it.
type MutationEnv struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	// ValueFrom only needs to be told apart from absent: the rules never
	// read what it refers to.
	ValueFrom *struct{} `json:"valueFrom"`
}

var _ runtime.Object = (*MutationPod)(nil)

// envPrefix starts the names of the only variables the Mutating rules read.
var envPrefix = []byte("KUBERNETES_SERVICE_")

// UnmarshalJSON decodes an entry only when it can name one of the variables
// the rules read; any other entry stays empty: it only counts, for the
// indexes of the patch. Skipping the other entries' names and values,
// instead of allocating them, halves BenchmarkPodMutator/large-50x100/ours.
// An escape sequence could spell the prefix, so an entry with one is
// decoded too.
func (e *MutationEnv) UnmarshalJSON(b []byte) error {
	if !bytes.Contains(b, envPrefix) && bytes.IndexByte(b, '\\') < 0 {
		*e = MutationEnv{}
		// Still an object (or null), as the whole pod's decoding demands.
		if b[0] != '{' && !bytes.Equal(b, []byte("null")) {
			return fmt.Errorf("env entry is not an object: %.20s", b)
		}
		return nil
	}
	type plain MutationEnv // without this method
	return sigsjson.UnmarshalCaseSensitivePreserveInts(b, (*plain)(e))
}

// someSource stands for any valueFrom: the rules only test it against nil.
var someSource = &corev1.EnvVarSource{}

// ErrNoObject is the error for an admission request without an object.
var ErrNoObject = errors.New("admission request has no object")

// DecodeMutationPod decodes raw, a v1 Pod, as the Mutating rules read it;
// raw null or empty is ErrNoObject.
func DecodeMutationPod(raw []byte) (*MutationPod, error) {
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, ErrNoObject
	}
	var m MutationPod
	// Case-sensitive, as the API server decodes.
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(raw, &m); err != nil {
		return nil, fmt.Errorf("cannot decode object as a v1 Pod: %w", err)
	}
	return &m, nil
}

// Pod checks m's kind and returns a Pod holding only what the Mutating rules
// read: the Target of a mutating evaluation.
func (m *MutationPod) Pod() (*corev1.Pod, error) {
	if (m.APIVersion != "" || m.Kind != "") && (m.APIVersion != "v1" || m.Kind != "Pod") {
		return nil, fmt.Errorf("object is a %s %s, not a v1 Pod", m.APIVersion, m.Kind)
	}
	pod := &corev1.Pod{}
	if md := m.Metadata; md != nil {
		pod.Name, pod.GenerateName, pod.Namespace = md.Name, md.GenerateName, md.Namespace
		pod.Labels, pod.Annotations = md.Labels, md.Annotations
	}
	pod.Spec.HostNetwork, pod.Spec.NodeName = m.Spec.HostNetwork, m.Spec.NodeName
	pod.Spec.NodeSelector, pod.Spec.Tolerations = m.Spec.NodeSelector, m.Spec.Tolerations
	if a := m.Spec.Affinity; a != nil && a.NodeAffinity != nil {
		pod.Spec.Affinity = &corev1.Affinity{NodeAffinity: a.NodeAffinity}
	}
	pod.Spec.InitContainers = containersOf(m.Spec.InitContainers)
	pod.Spec.Containers = containersOf(m.Spec.Containers)
	return pod, nil
}

// Owners decodes m's metadata.ownerReferences, which Pod leaves out.
func (m *MutationPod) Owners() ([]metav1.OwnerReference, error) {
	if m.Metadata == nil || len(m.Metadata.OwnerReferences) == 0 || bytes.Equal(m.Metadata.OwnerReferences, []byte("null")) {
		return nil, nil
	}
	var refs []metav1.OwnerReference
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(m.Metadata.OwnerReferences, &refs); err != nil {
		return nil, fmt.Errorf("cannot decode metadata.ownerReferences: %w", err)
	}
	return refs, nil
}

func containersOf(in []MutationContainer) []corev1.Container {
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

// DeepCopyObject implements runtime.Object, so that a MutationPod can ride in
// an admission request's object (runtime.RawExtension.Object).
func (m *MutationPod) DeepCopyObject() runtime.Object {
	if m == nil {
		return nil
	}
	out := &MutationPod{TypeMeta: m.TypeMeta}
	if md := m.Metadata; md != nil {
		c := *md
		c.Labels, c.Annotations = maps.Clone(md.Labels), maps.Clone(md.Annotations)
		c.OwnerReferences = bytes.Clone(md.OwnerReferences)
		out.Metadata = &c
	}
	out.Spec.HostNetwork, out.Spec.NodeName = m.Spec.HostNetwork, m.Spec.NodeName
	out.Spec.NodeSelector = maps.Clone(m.Spec.NodeSelector)
	if a := m.Spec.Affinity; a != nil {
		out.Spec.Affinity = &struct {
			NodeAffinity *corev1.NodeAffinity `json:"nodeAffinity"`
		}{NodeAffinity: a.NodeAffinity.DeepCopy()}
	}
	if m.Spec.Tolerations != nil {
		out.Spec.Tolerations = make([]corev1.Toleration, len(m.Spec.Tolerations))
		for i := range m.Spec.Tolerations {
			m.Spec.Tolerations[i].DeepCopyInto(&out.Spec.Tolerations[i])
		}
	}
	out.Spec.InitContainers = copyContainers(m.Spec.InitContainers)
	out.Spec.Containers = copyContainers(m.Spec.Containers)
	return out
}

func copyContainers(in []MutationContainer) []MutationContainer {
	if in == nil {
		return nil
	}
	out := make([]MutationContainer, len(in))
	for i, c := range in {
		out[i].Name = c.Name
		if c.Env != nil {
			out[i].Env = append([]MutationEnv(nil), c.Env...) // ValueFrom's struct{} has nothing to copy
		}
	}
	return out
}
