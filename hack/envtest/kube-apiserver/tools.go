//go:build tools

// Package tools pins k8s.io/kubernetes so that `go build` can produce the
// control plane the test suites run against: kube-apiserver (envtest), and
// kube-controller-manager, kube-scheduler and kwok (the simulated cluster of
// hack/sim; kwok plays the kubelet of its Nodes), and the kubelet and
// kube-proxy (the real node of test/node). It lives in its own module
// because k8s.io/kubernetes replaces its staging modules with local paths;
// here they are replaced with the published modules of the same minor.
//
// kwok is built with these Kubernetes libraries, not its own go.mod's (a
// minor older): one go build then compiles them once for the six binaries
// (docs/performance.md, "Cold build"). So is helm (the chart tests' CLI,
// hack/tools/helm.sh), whose Kubernetes libraries are the same minor.
//
// Where a module is also in endpoint-policy's own go.mod, its version here
// is not lower: the packages both compile (k8s.io/api, client-go, ...) then
// have the same dependencies, and `make build` (the same flags as this
// module's builds) finds them compiled in the build cache.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "sigs.k8s.io/kwok/cmd/kwok"
)
