package webhook_test

import (
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/endpoint-policy/endpoint-policy/internal/testing/fixtures"
	"github.com/endpoint-policy/endpoint-policy/internal/webhook"
)

// TestMutationPodDecodesWhatMutatingRulesRead: the Mutating rules give the
// same results on the pod mutator's partial decoding as on the whole pod,
// for the benchmark fixtures and for every shape of what they read.
func TestMutationPodDecodesWhatMutatingRulesRead(t *testing.T) {
	engine, _, _ := engineFor(t, "")
	marshal := func(p *corev1.Pod) string {
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	going := fixtures.KubeProxy("node-going")
	going.Annotations = map[string]string{"endpoint-policy.io/node-deleting": "stale"}
	excluded := fixtures.CiliumOperatorPinned()
	excluded.Labels["endpoint-policy.io/exclude"] = "true"
	withInit := fixtures.CiliumOperator()
	withInit.Spec.InitContainers = []corev1.Container{{Name: "init", Env: []corev1.EnvVar{
		{Name: "KUBERNETES_SERVICE_HOST", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.hostIP"}}},
		{Name: "KUBERNETES_SERVICE_PORT", Value: "7443"}, {Name: "KUBERNETES_SERVICE_PORT", Value: "6443"}}}}
	ours := fixtures.CiliumOperator()
	ours.Spec.Containers[0].Env = append(ours.Spec.Containers[0].Env, corev1.EnvVar{Name: "KUBERNETES_SERVICE_HOST", Value: "localhost"})
	objects := map[string]string{
		"cilium-operator":        marshal(fixtures.CiliumOperator()),
		"cilium-operator pinned": marshal(fixtures.CiliumOperatorPinned()),
		"excluded":               marshal(excluded),
		"init container, valueFrom and duplicates": marshal(withInit),
		"host already ours, no port":               marshal(ours),
		"kube-apiserver mirror pod":                marshal(fixtures.APIServerMirrorPod()),
		"kube-proxy on a node being deleted":       marshal(going),
		"kube-proxy on a healthy node":             marshal(fixtures.KubeProxy("node-ok")),
		"large":                                    marshal(fixtures.LargePod(5, 20)),
		"not hostNetwork":                          marshal(&corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c"}}}}),
		"no metadata":                              `{"spec":{"hostNetwork":true,"containers":[{"name":"c","env":[]}]}}`,
		"null env and valueFrom":                   `{"metadata":{"annotations":null},"spec":{"hostNetwork":true,"containers":[{"name":"c","env":null},{"name":"d","env":[{"name":"KUBERNETES_SERVICE_HOST","value":"10.0.0.1","valueFrom":null}]}]}}`,
		"wrong type in a field the rules skip":     `{"spec":{"hostNetwork":true,"containers":[{"name":"c","resources":"lots"}]}}`,
	}
	for name, obj := range objects {
		t.Run(name, func(t *testing.T) {
			if diff := webhook.MutatingDecodingsAgree(engine, testCluster, []byte(obj)); diff != "" {
				t.Error(diff)
			}
		})
	}
}

// TestMutationPodAnnotationPatch: the annotation patch fits what the object
// has of metadata, as the partial decoding sees it.
func TestMutationPodAnnotationPatch(t *testing.T) {
	h := newHarness(t, "")
	for _, tt := range []struct {
		name, object, want string
	}{
		{"no metadata", `{"spec":{"hostNetwork":true,"containers":[{"name":"c"}]}}`,
			`{"op":"add","path":"/metadata","value":{"annotations":{"endpoint-policy.io/endpoint":"localhost:7443"}}}`},
		{"metadata without annotations: kept", `{"metadata":{"uid":"u"},"spec":{"hostNetwork":true,"containers":[{"name":"c"}]}}`,
			`{"op":"add","path":"/metadata/annotations","value":{"endpoint-policy.io/endpoint":"localhost:7443"}}`},
		{"annotations", `{"metadata":{"annotations":{"a":"b"}},"spec":{"hostNetwork":true,"containers":[{"name":"c"}]}}`,
			`{"op":"add","path":"/metadata/annotations/endpoint-policy.io~1endpoint","value":"localhost:7443"}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp := h.call(t, review("CREATE", "pods", tt.object))
			if !strings.Contains(string(resp.Patch), tt.want) {
				t.Errorf("patch %s, want it to hold %s", resp.Patch, tt.want)
			}
		})
	}
}
