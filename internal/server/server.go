// Package server wires the admission webhook server: a controller-runtime
// manager, the policy engine built from the configuration file (hot
// reloaded), the admission handlers, health checks and metrics.
package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/endpoint-policy/endpoint-policy/internal/audit"
	"github.com/endpoint-policy/endpoint-policy/internal/cluster"
	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/drift"
	"github.com/endpoint-policy/endpoint-policy/internal/metrics"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

// Server is a configured, not yet running, webhook server.
type Server struct {
	opts      Options
	cfg       *config.PolicyConfiguration
	raw       []byte        // the configuration file's content in force
	engine    *policy.Store // the engine in force
	namespace string        // the release namespace
}

// New checks everything the server needs from its own machine (the serving
// certificate and the configuration file) and builds the policy engine. Its
// errors name the flag and the problem.
func New(opts Options) (*Server, error) {
	if err := checkCertificates(opts.CertDir); err != nil {
		return nil, err
	}
	cfg, raw := config.Default(), []byte(nil)
	if opts.ConfigFile != "" {
		var err error
		if cfg, raw, err = config.Load(opts.ConfigFile); err != nil {
			return nil, fmt.Errorf("--config: %w", err)
		}
	}
	engine, err := cfg.Engine()
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	namespace, err := releaseNamespace(opts.Namespace, opts.LeaderElectionNamespace)
	if err != nil {
		return nil, err
	}
	if opts.WebhookConfigurations != "" {
		if _, err := drift.Load(opts.WebhookConfigurations); err != nil {
			return nil, fmt.Errorf("--webhook-configurations: %w", err)
		}
	}
	return &Server{opts: opts, cfg: cfg, raw: raw, engine: policy.NewStore(engine), namespace: namespace}, nil
}

// inClusterNamespace is where a pod finds its namespace.
const inClusterNamespace = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// releaseNamespace is the first of: the namespace asked for, the leader
// election namespace, the pod's own namespace.
func releaseNamespace(names ...string) (string, error) {
	for _, n := range names {
		if n != "" {
			return n, nil
		}
	}
	data, err := os.ReadFile(inClusterNamespace)
	if ns := strings.TrimSpace(string(data)); err == nil && ns != "" {
		return ns, nil
	}
	return "", fmt.Errorf("--namespace: the release namespace, where the node agents' Leases are, is unknown outside a pod: set --namespace or POD_NAMESPACE")
}

// Run serves until ctx is done: ctx ending starts the drain (see drain),
// after which the manager stops.
func (s *Server) Run(ctx context.Context, restConfig *rest.Config) error {
	log := logf.FromContext(ctx).WithName("server")
	rec, err := metrics.NewRecorder(crmetrics.Registry)
	if err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	rec.PolicyModes(s.cfg.Modes())
	recordExemptions(s.engine.Load(), rec, log)
	// The manager runs on its own context, cancelled only once the drain is
	// over.
	mgrCtx, stopManager := context.WithCancel(context.WithoutCancel(ctx))
	defer stopManager()
	mgr, err := s.newManager(mgrCtx, restConfig)
	if err != nil {
		return err
	}
	clients, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		return fmt.Errorf("creating the API client: %w", err)
	}
	leases := cluster.NewLeaseInformer(clients, s.namespace)
	if err := mgr.Add(cluster.InformerRunnable{Informer: leases}); err != nil {
		return fmt.Errorf("adding the node agent Lease informer: %w", err)
	}
	view, err := cluster.NewView(ctx, mgr.GetCache(), leases, log.WithName("endpoints"))
	if err != nil {
		return fmt.Errorf("creating the cluster view: %w", err)
	}
	configMaps, err := audit.NewConfigMaps(mgr, s.cfg.EndpointConfigMapNames())
	if err != nil {
		return err
	}
	known := knownCluster{View: view, ConfigMaps: configMaps}
	if err := mgr.Add(view.Refresher(endpointRefreshInterval, rec.EndpointNodes)); err != nil {
		return fmt.Errorf("adding the endpoint refresher: %w", err)
	}
	events := mgr.GetEventRecorder(EventSource)
	drain := newDrain()
	if err := s.setupAdmission(mgr, drain, known, rec, events); err != nil {
		return err
	}
	aud, err := s.setupLeaderOnly(ctx, mgr, known, rec, events)
	if err != nil {
		return err
	}
	if err := s.setupDrift(mgr, clients, rec, events, log); err != nil {
		return err
	}
	if err := s.setupReload(mgr, aud, rec, log); err != nil {
		return err
	}
	if err := setupHealth(mgr, drain); err != nil {
		return err
	}
	go s.drainOnStop(ctx, mgrCtx, stopManager, drain, log)

	log.Info("Starting", "webhookPort", s.opts.WebhookPort, "config", configSource(s.opts.ConfigFile),
		"modes", s.cfg.Modes(), "tlsMinVersion", tls.VersionName(s.tlsMinVersion()), "metricsSecure", s.opts.MetricsSecure)
	return mgr.Start(mgrCtx)
}

func (s *Server) tlsMinVersion() uint16 {
	if s.opts.TLSMinVersion == 0 {
		return tls.VersionTLS12
	}
	return s.opts.TLSMinVersion
}

// tlsOptions apply the minimum TLS version, and HTTP/1.1 only unless
// --enable-http2, to the webhook and metrics servers.
func (s *Server) tlsOptions() []func(*tls.Config) {
	minVersion := s.tlsMinVersion()
	opts := []func(*tls.Config){func(c *tls.Config) { c.MinVersion = minVersion }}
	if !s.opts.EnableHTTP2 {
		opts = append(opts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	return opts
}

// newManager creates the manager: webhook and metrics servers, the cache
// restricted to what the policies read, leader election, and a graceful
// shutdown bounded by ShutdownTimeout, all running on mgrCtx.
func (s *Server) newManager(mgrCtx context.Context, restConfig *rest.Config) (manager.Manager, error) {
	opts := s.opts
	tlsOpts := s.tlsOptions()
	metricsOpts := metricsserver.Options{
		BindAddress: opts.MetricsBindAddress, TLSOpts: tlsOpts,
		SecureServing: opts.MetricsSecure, CertDir: opts.MetricsCertDir,
	}
	if opts.MetricsSecure {
		metricsOpts.FilterProvider = metricsAuth
	}
	shutdownTimeout := ShutdownTimeout
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Metrics: metricsOpts,
		WebhookServer: webhook.NewServer(webhook.Options{
			Host:    opts.WebhookHost,
			Port:    opts.WebhookPort,
			CertDir: opts.CertDir,
			TLSOpts: tlsOpts,
		}),
		// Only what the policies read: Nodes and kube-apiserver pods (the
		// kube-proxy pods have their own, label-selected caches).
		Cache:                   cluster.CacheOptions(),
		HealthProbeBindAddress:  opts.HealthProbeBindAddress,
		PprofBindAddress:        opts.PprofBindAddress,
		LeaderElection:          opts.LeaderElect,
		LeaderElectionID:        LeaderElectionID,
		LeaderElectionNamespace: opts.LeaderElectionNamespace,
		LeaseDuration:           durationOrNil(opts.LeaseDuration),
		RenewDeadline:           durationOrNil(opts.RenewDeadline),
		RetryPeriod:             durationOrNil(opts.RetryPeriod),
		// Step down quickly on shutdown so that the other replica takes over.
		LeaderElectionReleaseOnCancel: true,
		GracefulShutdownTimeout:       &shutdownTimeout,
		BaseContext:                   func() context.Context { return mgrCtx },
	})
	if err != nil {
		return nil, fmt.Errorf("creating manager: %w", err)
	}
	return mgr, nil
}

// drainOnStop waits for ctx to end, then drains: not ready, kept-alive
// connections closed after their next response, for ShutdownDelay; then it
// stops the manager, which stops accepting connections and finishes
// in-flight requests within ShutdownTimeout.
func (s *Server) drainOnStop(ctx, mgrCtx context.Context, stopManager context.CancelFunc, drain *drain, log logr.Logger) {
	select {
	case <-ctx.Done():
	case <-mgrCtx.Done():
		return
	}
	log.Info("Shutting down: not ready, closing kept-alive connections after their next response",
		"shutdownDelay", s.opts.ShutdownDelay)
	drain.start()
	t := time.NewTimer(s.opts.ShutdownDelay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-mgrCtx.Done():
	}
	log.Info("Shutting down: no new connections, finishing in-flight requests", "timeout", ShutdownTimeout)
	stopManager()
}

func durationOrNil(d time.Duration) *time.Duration {
	if d == 0 {
		return nil
	}
	return &d
}

// checkCertificates fails early, with a message naming the flag and files,
// when the serving certificate cannot be loaded; the webhook server would
// otherwise fail only once started.
func checkCertificates(dir string) error {
	crt, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if _, err := tls.LoadX509KeyPair(crt, key); err != nil {
		return fmt.Errorf("--cert-dir %s: cannot load the serving certificate (tls.crt, tls.key): %w", dir, err)
	}
	return nil
}

func configSource(path string) string {
	if path == "" {
		return "built-in defaults"
	}
	return path
}
