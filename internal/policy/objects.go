package policy

import (
	"strings"

	"sigs.k8s.io/controller-runtime/pkg/client"
)

const (
	// ExcludeLabel, set to "true" on an object or its namespace, keeps every
	// policy away from it.
	ExcludeLabel = "endpoint-policy.io/exclude"

	// MirrorPodAnnotation marks a mirror pod: the API's copy of a static pod
	// that the kubelet runs from a file on its node.
	MirrorPodAnnotation = "kubernetes.io/config.mirror"
)

// Excluded reports whether obj, or its namespace when its labels are known,
// carries ExcludeLabel=true.
func Excluded(obj client.Object, namespaceLabels map[string]string) bool {
	return obj.GetLabels()[ExcludeLabel] == "true" || namespaceLabels[ExcludeLabel] == "true"
}

// IsMirrorPod reports whether obj is a mirror pod. Changing or denying a
// mirror pod cannot change what the kubelet runs.
func IsMirrorPod(obj client.Object) bool {
	_, ok := obj.GetAnnotations()[MirrorPodAnnotation]
	return ok
}

// EscapePointer escapes s for use as one JSON pointer (RFC 6901) token, e.g.
// an annotation key in a JSON patch path.
func EscapePointer(s string) string {
	if !strings.ContainsAny(s, "~/") {
		return s
	}
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}
