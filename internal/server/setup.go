package server

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"

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
func (s *Server) setupLeaderOnly(ctx context.Context, mgr manager.Manager, view knownCluster, rec *metrics.Recorder, events events.EventRecorder) (*audit.Audit, error) {
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
		ConfigMaps: view.ConfigMaps,
	})
}

// knownCluster is what admission and the audit know of the cluster: the
// informer caches' view (Nodes, kube-apiserver pods, the node agents'
// reports) and the ConfigMaps the policies read, references included.
type knownCluster struct {
	*cluster.View
	*audit.ConfigMaps
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
		recordExemptions(e, rec, log)
		return nil
	}
	w := config.NewWatcher(s.opts.ConfigFile, s.raw, s.opts.ConfigPollInterval, log.WithName("config"), apply, rec.ConfigReload)
	if err := mgr.Add(w); err != nil {
		return fmt.Errorf("adding configuration watcher: %w", err)
	}
	return nil
}

// recordExemptions exports the expiries of e's exemptions, and logs those
// already expired: they apply to nothing and are stale entries.
func recordExemptions(e *policy.Engine, rec *metrics.Recorder, log logr.Logger) {
	rec.Exemptions(e.Exemptions())
	now := time.Now()
	for _, x := range e.Exemptions() {
		if !x.Live(now) {
			log.Info("Exemption expired: it no longer applies; remove it from the configuration",
				"exemption", x.Name, "policies", x.Policies, "expired", x.Expires.UTC().Format(time.RFC3339), "reason", x.Reason)
		}
	}
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
