package apiserver

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// ClusterConfigurationOf returns kubeadm's cluster-wide ClusterConfiguration
// that obj carries, for every policy that reads it: the ClusterConfiguration
// key of the kube-system/kubeadm-config ConfigMap, or a kubeadm
// ClusterConfiguration file (check). path is where its fields are (nil for a
// file, whose fields are at the root). ok is false for any other object; a
// kubeadm-config without the key is ok with a nil cfg. A document that cannot
// be parsed is err, which names no field: the caller reports it at path.
func ClusterConfigurationOf(obj client.Object) (cfg map[string]any, path *field.Path, ok bool, err error) {
	switch o := obj.(type) {
	case *corev1.ConfigMap:
		if o.Namespace != KubeadmConfigNamespace || o.Name != KubeadmConfigName {
			return nil, nil, false, nil
		}
		data, found := o.Data[ClusterConfigurationKey]
		if !found {
			return nil, nil, true, nil
		}
		path = field.NewPath("data").Key(ClusterConfigurationKey)
		if err := yaml.Unmarshal([]byte(data), &cfg); err != nil {
			return nil, path, true, fmt.Errorf("cannot be parsed as a kubeadm ClusterConfiguration: %w", err)
		}
		return cfg, path, true, nil
	case *unstructured.Unstructured:
		gvk := o.GroupVersionKind()
		if gvk.Group != KubeadmGroup || gvk.Kind != "ClusterConfiguration" {
			return nil, nil, false, nil
		}
		return o.Object, nil, true, nil
	}
	return nil, nil, false, nil
}
