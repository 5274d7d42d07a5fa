//go:build tools

// Package tools pins k8s.io/kubernetes so that `go build` can produce the
// control plane the test suites run against: kube-apiserver (envtest), and
// kube-controller-manager and kube-scheduler (the simulated cluster of
// hack/sim). It lives in its own module because k8s.io/kubernetes replaces
// its staging modules with local paths; here they are replaced with the
// published modules of the same minor.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
