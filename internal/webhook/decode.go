package webhook

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/endpoint-policy/endpoint-policy/internal/kinds"
)

// Kinds is the table of resources a Validator accepts, keyed by resource.
type Kinds map[metav1.GroupVersionResource]kinds.Kind

// KindsOf returns the table of ks.
func KindsOf(ks ...kinds.Kind) Kinds {
	t := Kinds{}
	for _, k := range ks {
		t[k.Resource] = k
	}
	return t
}

// WorkloadKinds are pods and the workloads with a pod template.
var WorkloadKinds = KindsOf(kinds.Workloads...)

// ConfigMapKinds is the ConfigMap resource, of the kubeadm-config and
// cluster ConfigMaps webhooks.
var ConfigMapKinds = KindsOf(kinds.ConfigMap)

// decode decodes an admission request's object into k's type.
func decode(raw []byte, k kinds.Kind) (client.Object, error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("admission request has no object")
	}
	return k.Decode(raw)
}
