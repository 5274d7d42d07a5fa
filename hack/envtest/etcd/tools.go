//go:build tools

// Package tools pins the etcd server module (whose root package is the etcd
// binary) for the envtest suites. Its own module, like kube-apiserver's,
// because etcd's server module carries replace directives of its own.
package tools

import _ "go.etcd.io/etcd/server/v3"
