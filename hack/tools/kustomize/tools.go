//go:build tools

// Package tools pins the kustomize CLI that renders config/ for the test that
// keeps it consistent with the Helm chart. Its own module, like Helm's.
package tools

import _ "sigs.k8s.io/kustomize/kustomize/v5"
