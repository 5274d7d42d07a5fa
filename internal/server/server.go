// Package server wires the admission webhook server: a controller-runtime
// manager, the policy engine built from the configuration file (hot
// reloaded), the admission handlers, health checks and metrics.
package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/endpoint-policy/endpoint-policy/internal/audit"
	"github.com/endpoint-policy/endpoint-policy/internal/cluster"
	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/controller"
	"github.com/endpoint-policy/endpoint-policy/internal/drift"
	"github.com/endpoint-policy/endpoint-policy/internal/metrics"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/kubeproxy"
	epwebhook "github.com/endpoint-policy/endpoint-policy/internal/webhook"
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
	if err := mgr.Add(cluster.LeaseInformerRunnable{Informer: leases}); err != nil {
		return fmt.Errorf("adding the node agent Lease informer: %w", err)
	}
	view, err := cluster.NewView(ctx, mgr.GetCache(), leases, log.WithName("endpoints"))
	if err != nil {
		return fmt.Errorf("creating the cluster view: %w", err)
	}
	if err := mgr.Add(view.Refresher(endpointRefreshInterval, rec.EndpointNodes)); err != nil {
		return fmt.Errorf("adding the endpoint refresher: %w", err)
	}
	events := mgr.GetEventRecorder(EventSource)
	drain := newDrain()
	if err := s.setupAdmission(mgr, drain, view, rec, events); err != nil {
		return err
	}
	aud, err := s.setupLeaderOnly(ctx, mgr, view, rec, events)
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

// setupAdmission registers the admission webhooks, each wrapped by the
// drain: the pod mutator (its own HTTP handler) and the validators (on
// controller-runtime's admission.Webhook).
func (s *Server) setupAdmission(mgr manager.Manager, drain *drain, view policy.Cluster, rec *metrics.Recorder, events events.EventRecorder) error {
	register := func(path string, h http.Handler) { mgr.GetWebhookServer().Register(path, drain.wrap(h)) }
	mutator, err := epwebhook.NewPodMutator(s.engine, view, rec)
	if err != nil {
		return err
	}
	register(epwebhook.MutatePodPath, mutator)
	for path, kinds := range map[string]epwebhook.Kinds{
		epwebhook.ValidateWorkloadsPath:     epwebhook.WorkloadKinds,
		epwebhook.ValidateKubeadmConfigPath: epwebhook.ConfigMapKinds,
		epwebhook.ValidateConfigMapsPath:    epwebhook.ConfigMapKinds,
	} {
		validator, err := epwebhook.NewValidator(path, kinds, s.engine, view, rec, events)
		if err != nil {
			return err
		}
		register(path, &admission.Webhook{Handler: validator})
	}
	return nil
}

// setupLeaderOnly adds what only the leader runs: the kube-proxy controller
// and the background audit, the same engine on the objects already in the
// cluster. kube-proxy-node-deleting is left to its controller, which keeps
// it true continuously.
func (s *Server) setupLeaderOnly(ctx context.Context, mgr manager.Manager, view policy.Cluster, rec *metrics.Recorder, events events.EventRecorder) (*audit.Audit, error) {
	// The kube-proxy pods are cached by the configured selectors, which
	// therefore hold until a restart (config.RestartRequired).
	kubeProxy, ok := s.cfg.Policies[kubeproxy.NodeDeletingID].Settings.(*kubeproxy.Settings)
	if !ok {
		return nil, fmt.Errorf("--config: policies.%s has no pod selectors", kubeproxy.NodeDeletingID)
	}
	selectors, err := kubeProxy.Selectors()
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	kubeProxyPods, err := cluster.NewSelectedPods(ctx, mgr, selectors)
	if err != nil {
		return nil, fmt.Errorf("creating the kube-proxy pod cache: %w", err)
	}
	if err := controller.SetupNodeDeleting(mgr, controller.NodeDeletingOptions{
		Engine: s.engine, Cluster: view, Pods: kubeProxyPods, Events: events, Metrics: rec,
	}); err != nil {
		return nil, err
	}
	return audit.New(ctx, mgr, audit.Options{
		Engine: s.engine, Cluster: view, Namespaces: mgr.GetCache(), Events: events, Metrics: rec,
		ReportingController: EventSource, Settings: s.cfg.Audit, Skip: []policy.ID{kubeproxy.NodeDeletingID},
	})
}

// setupDrift adds the leader's webhook configuration drift detection, when
// --webhook-configurations names the installed ones.
func (s *Server) setupDrift(mgr manager.Manager, clients kubernetes.Interface, rec *metrics.Recorder, events events.EventRecorder, log logr.Logger) error {
	if s.opts.WebhookConfigurations == "" {
		return nil
	}
	d, err := drift.New(drift.Options{
		Installed: s.opts.WebhookConfigurations,
		CertFile:  filepath.Join(s.opts.CertDir, "tls.crt"),
		Clients:   clients, Events: events, Metrics: rec,
		Interval: driftInterval, Log: log.WithName("drift"),
	})
	if err != nil {
		return fmt.Errorf("--webhook-configurations: %w", err)
	}
	if err := mgr.Add(d); err != nil {
		return fmt.Errorf("adding the webhook configuration drift detection: %w", err)
	}
	return nil
}

// driftInterval is how often the webhook configurations are compared again
// without a change to them: a renewed serving certificate, an upgraded
// --webhook-configurations file.
const driftInterval = time.Minute

// setupReload watches the configuration file: a valid change swaps the
// engine and the audit settings; a change that needs a restart
// (config.RestartRequired) or that does not build is refused, and the
// configuration in force is kept.
func (s *Server) setupReload(mgr manager.Manager, aud *audit.Audit, rec *metrics.Recorder, log logr.Logger) error {
	if s.opts.ConfigFile == "" {
		return nil
	}
	apply := func(c *config.PolicyConfiguration) error {
		if errs := c.RestartRequired(s.cfg); len(errs) > 0 {
			return fmt.Errorf("%w; the configuration in force is kept", errs.ToAggregate())
		}
		e, err := c.Engine()
		if err != nil {
			return err
		}
		aud.SetSettings(c.Audit)
		s.engine.Swap(e)
		rec.PolicyModes(c.Modes())
		return nil
	}
	w := config.NewWatcher(s.opts.ConfigFile, s.raw, s.opts.ConfigPollInterval, log.WithName("config"), apply, rec.ConfigReload)
	if err := mgr.Add(w); err != nil {
		return fmt.Errorf("adding configuration watcher: %w", err)
	}
	return nil
}

// setupHealth: alive while the process answers; ready once the webhook's
// TLS server answers, and not while draining, so that load balancers and
// probes stop choosing this replica.
func setupHealth(mgr manager.Manager, drain *drain) error {
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("adding health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
		return fmt.Errorf("adding readiness check: %w", err)
	}
	if err := mgr.AddReadyzCheck("shutdown", drain.checker); err != nil {
		return fmt.Errorf("adding readiness check: %w", err)
	}
	return nil
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
