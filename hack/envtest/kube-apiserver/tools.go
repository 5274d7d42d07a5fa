//go:build tools

// Package tools pins k8s.io/kubernetes so that `go build` can produce the
// kube-apiserver binary the envtest suites run against. It lives in its own
// module because k8s.io/kubernetes replaces its staging modules with local
// paths; here they are replaced with the published modules of the same minor.
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
