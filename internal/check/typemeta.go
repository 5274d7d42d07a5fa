package check

import (
	"bytes"
	"encoding/json"
	"fmt"

	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/endpoint-policy/endpoint-policy/internal/kinds"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

// typeMeta is what a document says of its type, and a List's items.
type typeMeta struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Items      []json.RawMessage `json:"items"`
}

// typeOf reads a document's type, or says why it is not a Kubernetes
// object this program can read.
func typeOf(js []byte) (typeMeta, schema.GroupVersionKind, error) {
	var meta typeMeta
	switch t := bytes.TrimSpace(js); {
	case len(t) > 0 && t[0] == '[':
		return meta, schema.GroupVersionKind{}, fmt.Errorf("a JSON array (or YAML sequence), not a Kubernetes object (a mapping with apiVersion and kind); put the items in a List")
	case len(t) > 0 && t[0] != '{':
		return meta, schema.GroupVersionKind{}, fmt.Errorf("a scalar (%s), not a Kubernetes object (a mapping with apiVersion and kind)", policy.Shorten(string(t), 40))
	}
	if err := json.Unmarshal(js, &meta); err != nil {
		return meta, schema.GroupVersionKind{}, fmt.Errorf("not a Kubernetes object (a mapping with apiVersion and kind): %w", err)
	}
	switch {
	case meta.APIVersion == "":
		return meta, schema.GroupVersionKind{}, fmt.Errorf("apiVersion: Required value: not a Kubernetes object")
	case meta.Kind == "":
		return meta, schema.GroupVersionKind{}, fmt.Errorf("kind: Required value: not a Kubernetes object")
	}
	gv, err := schema.ParseGroupVersion(meta.APIVersion)
	if err != nil {
		return meta, schema.GroupVersionKind{}, fmt.Errorf("apiVersion: Invalid value: %q: %w", meta.APIVersion, err)
	}
	if removedWorkloads[meta.APIVersion] {
		for _, k := range kinds.Workloads {
			if k.GVK.Kind == meta.Kind {
				return meta, schema.GroupVersionKind{}, fmt.Errorf("apiVersion: Unsupported value: %q: %s %s is no longer served (removed in Kubernetes 1.16): convert it to %s",
					meta.APIVersion, meta.APIVersion, meta.Kind, k.GVK.GroupVersion())
			}
		}
	}
	return meta, gv.WithKind(meta.Kind), nil
}
