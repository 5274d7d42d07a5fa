//go:build tools

// Package tools pins kwok (sigs.k8s.io/kwok), which plays the kubelet of the
// simulated cluster's Nodes (test/sim). It lives in its own module so that
// kwok's Kubernetes libraries need not match the project's.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
