//go:build tools

// Package tools pins promtool, which `make test` runs on the chart's
// PrometheusRule: `promtool check rules` and `promtool test rules`
// (charts/endpoint-policy/tests/alerts). Its own module, so that Prometheus's
// dependencies never move the project's.
package tools

import _ "github.com/prometheus/prometheus/cmd/promtool"
