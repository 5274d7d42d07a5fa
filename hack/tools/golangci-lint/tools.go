//go:build tools

// Package tools pins golangci-lint (v2), which make lint builds and runs. Its
// own module, so that the linters' dependencies never move the project's.
package tools

import _ "github.com/golangci/golangci-lint/v2/cmd/golangci-lint"
