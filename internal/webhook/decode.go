package webhook

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	sigsjson "sigs.k8s.io/json"
)

// kind is one resource an admission path accepts: the Go type it decodes
// into and the group/version/kind the object must have.
type kind struct {
	gvk schema.GroupVersionKind
	new func() client.Object
}

// Kinds is the table of resources a Validator accepts, keyed by resource.
type Kinds map[metav1.GroupVersionResource]kind

func entry[T any, PT interface {
	*T
	client.Object
}](group, version, k string) kind {
	return kind{gvk: schema.GroupVersionKind{Group: group, Version: version, Kind: k}, new: func() client.Object { return PT(new(T)) }}
}

// decode decodes raw into k's type, case-sensitively like the API server,
// and checks its kind. Errors name what was expected ("a v1 Pod").
func decode(raw []byte, k kind) (client.Object, error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("admission request has no object")
	}
	obj := k.new()
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(raw, obj); err != nil {
		return nil, fmt.Errorf("cannot decode object as a %s: %w", k, err)
	}
	if gvk := obj.GetObjectKind().GroupVersionKind(); !gvk.Empty() && gvk != k.gvk {
		apiVersion, kindName := gvk.ToAPIVersionAndKind()
		return nil, fmt.Errorf("object is a %s %s, not a %s", apiVersion, kindName, k)
	}
	return obj, nil
}

// String renders k as "<apiVersion> <Kind>", e.g. "apps/v1 Deployment".
func (k kind) String() string {
	apiVersion, kindName := k.gvk.ToAPIVersionAndKind()
	return apiVersion + " " + kindName
}
