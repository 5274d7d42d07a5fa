package chart

import (
	"bytes"
	"os/exec"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/endpoint-policy/endpoint-policy/internal/drift"
)

// config/ (kustomize, kubebuilder layout) renders the same objects as the
// chart with its default values, release and namespace endpoint-policy:
// only labels differ (Helm's release labels), the pod template's checksum
// annotation, and the Namespace that config/default creates (the chart's
// users pass --create-namespace).
func TestKustomizeMatchesChart(t *testing.T) {
	cmd := exec.Command(tool(t, "KUSTOMIZE"), "build", configDir+"/default")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kustomize build config/default: %v\n%s", err, stderr.String())
	}
	kust := decodeAll(t, string(out))
	chart := render(t)

	key := func(u *unstructured.Unstructured) string {
		return u.GetKind() + "/" + u.GetNamespace() + "/" + u.GetName()
	}
	fromChart := map[string]*unstructured.Unstructured{}
	for _, u := range chart {
		fromChart[key(u)] = normalize(u)
	}
	fromKustomize := map[string]*unstructured.Unstructured{}
	for _, u := range kust {
		if u.GetKind() == "Namespace" && u.GetName() == namespace {
			continue
		}
		fromKustomize[key(u)] = normalize(u)
	}
	if diff := cmp.Diff(fromChart, fromKustomize); diff != "" {
		t.Errorf("config/default differs from the chart's defaults (-chart +config):\n%s", diff)
	}
}

// normalize drops what is expected to differ between Helm and kustomize, and
// parses the ConfigMaps' files so that their formatting does not count: the
// configuration file as YAML, the installed webhook configurations as the
// server's drift detection reads them.
func normalize(u *unstructured.Unstructured) *unstructured.Unstructured {
	u = u.DeepCopy()
	unstructured.RemoveNestedField(u.Object, "metadata", "labels")
	unstructured.RemoveNestedField(u.Object, "spec", "template", "metadata", "annotations")
	if u.GetKind() == "ConfigMap" {
		data, _, _ := unstructured.NestedStringMap(u.Object, "data")
		parsed := map[string]any{}
		for k, v := range data {
			if k == "webhooks.yaml" {
				// A YAML stream: compare what the server reads of it.
				configs, err := drift.Parse(k, []byte(v))
				if err != nil {
					parsed[k] = err.Error()
					continue
				}
				parsed[k] = configs
				continue
			}
			var doc any
			if err := yaml.Unmarshal([]byte(v), &doc); err != nil {
				parsed[k] = v
				continue
			}
			parsed[k] = doc
		}
		u.Object["data"] = parsed
	}
	return u
}
