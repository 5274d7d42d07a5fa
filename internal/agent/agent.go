// Package agent is `endpoint-policy agent`, the node half of
// host-network-endpoint: on its node, every interval, it checks the
// configured node-local API endpoint and the candidates (dial, TLS against
// the cluster CA with the endpoint's host as server name, GET /readyz with
// its credentials), and publishes the results in its node's Lease, which
// the webhook reads to decide where a pod may be rewritten.
package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	coordinationclient "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/rest"

	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
)

// Options configure the agent. The agent command fills them from flags.
type Options struct {
	// ConfigFile is the policy configuration file the server reads too; ""
	// uses the built-in defaults. It is read again every interval.
	ConfigFile string
	// NodeName is the node the agent runs on.
	NodeName string
	// Namespace is the release namespace, where the Lease goes.
	Namespace string
	// Interval is how often the endpoints are checked.
	Interval time.Duration
	// Heartbeat is how often the Lease is written when nothing changed. A
	// report is stale after hostnetwork.HeartbeatsUntilStale heartbeats.
	Heartbeat time.Duration
	// Timeout bounds one endpoint's check.
	Timeout time.Duration
}

// DefaultOptions are the agent command's defaults.
func DefaultOptions() Options {
	return Options{Interval: 30 * time.Second, Heartbeat: 5 * time.Minute, Timeout: 5 * time.Second}
}

// Validate returns the problems with o, naming the flags.
func (o Options) Validate() error {
	var errs []error
	if o.NodeName == "" {
		errs = append(errs, errors.New("--node-name: required (the chart sets NODE_NAME from the downward API)"))
	}
	if o.Namespace == "" {
		errs = append(errs, errors.New("--namespace: required (the chart sets POD_NAMESPACE from the downward API)"))
	}
	if o.Interval <= 0 {
		errs = append(errs, fmt.Errorf("--interval %s: must be positive", o.Interval))
	}
	if o.Heartbeat < o.Interval {
		errs = append(errs, fmt.Errorf("--heartbeat %s: must be at least --interval (%s)", o.Heartbeat, o.Interval))
	}
	if o.Heartbeat%time.Second != 0 {
		errs = append(errs, fmt.Errorf("--heartbeat %s: must be whole seconds (it sets the Lease's leaseDurationSeconds)", o.Heartbeat))
	}
	if o.Timeout <= 0 || o.Timeout > o.Interval {
		errs = append(errs, fmt.Errorf("--timeout %s: must be positive and at most --interval (%s)", o.Timeout, o.Interval))
	}
	return errors.Join(errs...)
}

// Agent checks its node's endpoints and publishes them.
type Agent struct {
	opts   Options
	rest   *rest.Config // the API client, the cluster CA and the credentials
	leases coordinationclient.LeaseInterface
	log    logr.Logger
	now    func() time.Time

	settings hostnetwork.Settings // the last valid configuration's
	raw      string               // the configuration file's content in force

	last      *coordinationv1.Lease // as last written, nil until read or written
	lastWrite time.Time
	writes    int
}

// New checks the options and the configuration file and returns the agent.
// cfg must carry the cluster CA: the endpoints are verified against it.
func New(opts Options, cfg *rest.Config, log logr.Logger) (*Agent, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if cfg.Insecure {
		return nil, errors.New("the cluster configuration skips TLS verification: the agent verifies endpoints against the cluster CA, which it must have")
	}
	if len(cfg.CAData) == 0 && cfg.CAFile == "" {
		return nil, errors.New("the cluster configuration has no certificate authority (certificate-authority in the kubeconfig, ca.crt in a pod): " +
			"the agent verifies endpoints against the cluster CA")
	}
	clients, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating the API client: %w", err)
	}
	a := &Agent{opts: opts, rest: cfg, leases: clients.CoordinationV1().Leases(opts.Namespace), log: log, now: time.Now}
	if err := a.loadConfig(); err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	return a, nil
}

// loadConfig reads the configuration file; on error the settings in force
// are kept.
func (a *Agent) loadConfig() error {
	cfg, raw := config.Default(), []byte(nil)
	if a.opts.ConfigFile != "" {
		var err error
		if cfg, raw, err = config.Load(a.opts.ConfigFile); err != nil {
			return err
		}
	}
	if string(raw) == a.raw && a.settings.Host != "" {
		return nil
	}
	s, err := settingsOf(cfg)
	if err != nil {
		return err
	}
	if a.settings.Host != "" {
		a.log.Info("Configuration changed", "endpoints", s.Endpoints(), "host", s.Host)
	}
	a.settings, a.raw = s, string(raw)
	return nil
}

// settingsOf returns host-network-endpoint's settings in c: what the agent
// checks.
func settingsOf(c *config.PolicyConfiguration) (hostnetwork.Settings, error) {
	p := c.Policies[hostnetwork.ID]
	if p == nil {
		return hostnetwork.Settings{}, fmt.Errorf("policies.%s: not configured", hostnetwork.ID)
	}
	s, err := policy.SettingsAs[hostnetwork.Settings](hostnetwork.ID, p.Settings)
	if err != nil {
		return hostnetwork.Settings{}, err
	}
	return *s, nil
}

// Run checks and publishes every interval (with 10% jitter, so that the
// agents of a cluster started together spread their writes) until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	a.log.Info("Starting", "node", a.opts.NodeName, "namespace", a.opts.Namespace, "lease", hostnetwork.LeaseName(a.opts.NodeName),
		"endpoints", a.settings.Endpoints(), "interval", a.opts.Interval, "heartbeat", a.opts.Heartbeat)
	wait.JitterUntilWithContext(ctx, func(ctx context.Context) {
		if err := a.Round(ctx); err != nil && ctx.Err() == nil {
			a.log.Error(err, "Round failed; trying again at the next interval")
		}
	}, a.opts.Interval, 0.1, true)
	return nil
}

// Round checks the endpoints once and publishes the report when it changed
// or the heartbeat is due.
func (a *Agent) Round(ctx context.Context) error {
	if err := a.loadConfig(); err != nil {
		a.log.Error(err, "Configuration file not valid; the one in force is kept", "config", a.opts.ConfigFile)
	}
	rep := a.check(ctx)
	return a.publish(ctx, rep)
}

// check runs every endpoint's check, concurrently, and decides the node's
// endpoint for the configuration.
func (a *Agent) check(ctx context.Context) hostnetwork.Report {
	s := a.settings
	endpoints := s.Endpoints()
	checks := make([]hostnetwork.Check, len(endpoints))
	var wg sync.WaitGroup
	for i, e := range endpoints {
		wg.Go(func() { checks[i] = Check(ctx, a.rest, e, a.opts.Timeout) })
	}
	wg.Wait()
	rep := hostnetwork.Report{Node: a.opts.NodeName, Checks: checks, RenewTime: a.now()}
	for _, c := range checks {
		if c.Status == hostnetwork.StatusVerified && (s.Auto() || c.Endpoint == s.Endpoint()) {
			rep.Endpoint = c.Endpoint
			break
		}
	}
	if rep.Endpoint == "" && len(checks) > 0 {
		checks[0].Message += hint(s, checks)
	}
	return rep
}

// Balancers names the node-local API balancers the default candidates are.
var Balancers = map[string]string{
	"localhost:7443": "k0s node-local load balancing",
	"127.0.0.1:7445": "Talos KubePrism",
	"127.0.0.1:6444": "the k3s agent's load balancer",
	"localhost:6443": "kubespray's nginx-proxy or haproxy, or the API server itself",
}

// hint names the endpoint that answers instead, when the configured one
// does not.
func hint(s hostnetwork.Settings, checks []hostnetwork.Check) string {
	for _, c := range checks {
		if c.Status != hostnetwork.StatusVerified {
			continue
		}
		what := "a verified API endpoint"
		if b, ok := Balancers[c.Endpoint]; ok {
			what = "this cluster's API server (" + b + ")"
		}
		host, port, _ := net.SplitHostPort(c.Endpoint)
		return fmt.Sprintf("; but %s is %s here: set host %s and port %s, or host: auto", c.Endpoint, what, host, port)
	}
	if s.Auto() {
		return "; no candidate answers here: add this node's local API balancer to candidates, or run one"
	}
	return ""
}

// publish writes the node's Lease when its report changed or the heartbeat
// is due.
func (a *Agent) publish(ctx context.Context, rep hostnetwork.Report) error {
	want, err := hostnetwork.NewLease(a.opts.Namespace, rep, a.opts.Heartbeat)
	if err != nil {
		return err
	}
	if a.last != nil && sameReport(a.last, want) && rep.RenewTime.Sub(a.lastWrite) < a.opts.Heartbeat {
		return nil
	}
	changed := a.last == nil || !sameReport(a.last, want)
	if a.last == nil {
		got, err := a.leases.Get(ctx, want.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			created, err := a.leases.Create(ctx, want, metav1.CreateOptions{})
			if err != nil {
				return fmt.Errorf("creating Lease %s/%s: %w", want.Namespace, want.Name, err)
			}
			a.written(created, rep, true)
			return nil
		case err != nil:
			return fmt.Errorf("reading Lease %s/%s: %w", want.Namespace, want.Name, err)
		}
		a.last = got
	}
	upd := a.last.DeepCopy()
	if upd.Labels == nil {
		upd.Labels = map[string]string{}
	}
	for k, v := range want.Labels {
		upd.Labels[k] = v
	}
	if upd.Annotations == nil {
		upd.Annotations = map[string]string{}
	}
	for k, v := range want.Annotations {
		upd.Annotations[k] = v
	}
	upd.Spec = want.Spec
	updated, err := a.leases.Update(ctx, upd, metav1.UpdateOptions{})
	if err != nil {
		// Someone else wrote it (or deleted it): read it afresh next time.
		a.last = nil
		return fmt.Errorf("updating Lease %s/%s: %w", want.Namespace, want.Name, err)
	}
	a.written(updated, rep, changed)
	return nil
}

func (a *Agent) written(l *coordinationv1.Lease, rep hostnetwork.Report, changed bool) {
	if changed {
		a.log.Info("Report published", "lease", l.Name, "endpoint", rep.Endpoint, "status", rep.Status(), "checks", rep.Checks)
	}
	a.last, a.lastWrite = l, rep.RenewTime
	a.writes++
	a.log.V(1).Info("Lease written", "lease", l.Name, "writes", a.writes)
}

// sameReport reports whether the Lease l already carries want's report.
func sameReport(l, want *coordinationv1.Lease) bool {
	for _, k := range []string{hostnetwork.EndpointAnnotation, hostnetwork.ResultsAnnotation} {
		if v, ok := l.Annotations[k]; !ok || v != want.Annotations[k] {
			return false
		}
	}
	return l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity == *want.Spec.HolderIdentity &&
		l.Spec.LeaseDurationSeconds != nil && *l.Spec.LeaseDurationSeconds == *want.Spec.LeaseDurationSeconds
}
