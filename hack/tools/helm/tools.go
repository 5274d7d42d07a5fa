//go:build tools

// Package tools pins the Helm CLI that the chart tests run (lint, template,
// install, upgrade, uninstall against the envtest API server). Its own module,
// so that Helm's dependencies never move the project's.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
