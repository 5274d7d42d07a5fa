package policy

import (
	corev1 "k8s.io/api/core/v1"
)

// EndpointConfigMapsSetting is the configuration's list of the ConfigMaps
// that may carry the API endpoint and that the server may read
// (endpointConfigMaps). Findings name it where a reference points outside.
const EndpointConfigMapsSetting = "endpointConfigMaps"

// Knowledge is what a front-end knows of one ConfigMap.
type Knowledge int

const (
	// Known: the ConfigMap is loaded (ConfigMap returns it).
	Known Knowledge = iota
	// Absent: the ConfigMap is listed, loaded, and does not exist.
	Absent
	// NotListed: endpointConfigMaps does not list it: the server may not
	// read it, and no front-end does (check too, so that it agrees).
	NotListed
	// Unknown: listed, but not loaded (a cache not synced yet, a ConfigMap
	// not among check's files).
	Unknown
)

// ConfigMaps is what rules need of a front-end to follow a reference to a
// ConfigMap (a container's valueFrom.configMapKeyRef or envFrom
// configMapRef): the ConfigMaps of endpointConfigMaps, from memory (an
// informer cache, check's files), never a live call. A policy.Cluster that
// does not implement it knows of no ConfigMap: references get no verdict.
type ConfigMaps interface {
	// ConfigMap returns the ConfigMap namespace/name when it is Known. The
	// ConfigMap is shared: callers must not modify it.
	ConfigMap(namespace, name string) (*corev1.ConfigMap, Knowledge)
	// Listed reports whether endpointConfigMaps lists namespace/name.
	Listed(namespace, name string) bool
}

// ListedConfigMap reports whether c knows ConfigMaps and lists
// namespace/name among the endpoint's.
func ListedConfigMap(c Cluster, namespace, name string) bool {
	cms, ok := c.(ConfigMaps)
	return ok && cms.Listed(namespace, name)
}

// LookupConfigMap asks c for the ConfigMap namespace/name: Unknown when c
// does not know ConfigMaps at all.
func LookupConfigMap(c Cluster, namespace, name string) (*corev1.ConfigMap, Knowledge) {
	cms, ok := c.(ConfigMaps)
	if c == nil || !ok {
		return nil, Unknown
	}
	return cms.ConfigMap(namespace, name)
}
