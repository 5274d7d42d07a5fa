package server

import (
	"crypto/tls"
	"path/filepath"
	"time"
)

// Options configure the server. The serve command fills them from flags.
type Options struct {
	// WebhookHost is the address the webhook server binds ("" = all).
	WebhookHost string
	// WebhookPort is the webhook server's port.
	WebhookPort int
	// CertDir holds tls.crt and tls.key, reloaded when they change.
	CertDir string
	// ConfigFile is the policy configuration file; "" uses built-in defaults.
	ConfigFile string
	// ConfigPollInterval is how often the configuration file is re-read in
	// case a file notification was missed.
	ConfigPollInterval time.Duration
	// MetricsBindAddress serves /metrics; "0" disables it.
	MetricsBindAddress string
	// HealthProbeBindAddress serves /healthz and /readyz; "0" disables it.
	HealthProbeBindAddress string
	// PprofBindAddress serves Go's /debug/pprof (plain HTTP, no
	// authentication); "0" or "", the default, disables it. For profiling on
	// a trusted address such as 127.0.0.1 (make bench), not for production.
	PprofBindAddress string
	// LeaderElect turns on leader election for controllers.
	LeaderElect bool
	// LeaderElectionNamespace holds the leader election Lease; "" means the
	// namespace the server runs in.
	LeaderElectionNamespace string
	// Namespace is the release namespace, where the node agents' Leases
	// are; "" means the namespace the server runs in.
	Namespace string
	// LeaseDuration, RenewDeadline and RetryPeriod tune leader election;
	// zero keeps controller-runtime's defaults (15s, 10s, 2s).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// EnableHTTP2 serves HTTP/2 on the webhook port. Off by default: the API
	// server speaks HTTP/1.1 to webhooks, and HTTP/2 only adds exposure
	// (CVE-2023-44487, rapid reset).
	EnableHTTP2 bool
	// TLSMinVersion is the lowest TLS version the webhook and metrics
	// servers accept: tls.VersionTLS12 (default) or tls.VersionTLS13.
	TLSMinVersion uint16
	// MetricsSecure serves /metrics over HTTPS, only to clients that
	// authenticate (TokenReview) and are authorized (SubjectAccessReview,
	// get on the non-resource URL /metrics).
	MetricsSecure bool
	// MetricsCertDir holds the metrics server's tls.crt and tls.key; ""
	// serves a self-signed certificate generated at start.
	MetricsCertDir string
	// WebhookConfigurations is the file of the webhook configurations as
	// installed (a YAML stream, the chart's -webhooks ConfigMap): the leader
	// reports where the live ones differ (internal/drift). "" turns drift
	// detection off.
	WebhookConfigurations string
	// ShutdownDelay is how long the server keeps serving after it is told to
	// stop, reporting not-ready and closing each kept-alive connection after
	// its next response, before it stops accepting connections.
	ShutdownDelay time.Duration
}

// DefaultOptions returns the defaults of the serve command's flags.
func DefaultOptions() Options {
	return Options{
		WebhookPort:            9443,
		CertDir:                filepath.Join("/tmp", "k8s-webhook-server", "serving-certs"),
		ConfigPollInterval:     10 * time.Second,
		MetricsBindAddress:     ":8443",
		HealthProbeBindAddress: ":8081",
		TLSMinVersion:          tls.VersionTLS12,
		MetricsSecure:          true,
		ShutdownDelay:          5 * time.Second,
	}
}

// ShutdownTimeout bounds the stop once connections are no longer accepted:
// in-flight admissions (each bounded by its webhook's timeoutSeconds, 3 s by
// default) finish, the controllers stop, and the leader Lease is released.
const ShutdownTimeout = 10 * time.Second

// endpointRefreshInterval is how often node agent reports that expired are
// noticed, and endpoint_policy_endpoint_nodes updated.
const endpointRefreshInterval = time.Second

// LeaderElectionID names the leader election Lease.
const LeaderElectionID = "endpoint-policy.endpoint-policy.io"

// EventSource is the reporting controller of the Events the server records.
const EventSource = "endpoint-policy"
