// Package drift notices endpoint-policy's webhook registrations being
// changed behind its back. Platforms do it without asking: AKS's Admissions
// Enforcer adds a kube-system exclusion to every webhook's namespaceSelector
// (unless the configuration carries admissions.enforcer/disabled=true),
// Gardener turns Pod webhooks to failurePolicy Ignore, people edit selectors
// by hand, and a caBundle that no longer verifies the serving certificate
// makes every call fail. The leader compares the live configurations with
// the ones the chart installed (the --webhook-configurations file) and
// reports each difference as endpoint_policy_webhook_configuration_drift, an
// Event on the configuration and a log line. It never writes a webhook
// configuration: restoring them is `helm upgrade`'s job, and a webhook that
// fought a platform's controller would make things worse.
package drift

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
)

// The fields compared, as the field label of the metric. FieldWebhook is
// the webhook itself: missing from its configuration, or the configuration
// deleted.
const (
	FieldWebhook           = "webhook"
	FieldNamespaceSelector = "namespaceSelector"
	FieldObjectSelector    = "objectSelector"
	FieldMatchConditions   = "matchConditions"
	FieldRules             = "rules"
	FieldFailurePolicy     = "failurePolicy"
	FieldTimeoutSeconds    = "timeoutSeconds"
	FieldCABundle          = "caBundle"
)

// Fields lists every field compared, in the order they are reported.
var Fields = []string{FieldWebhook, FieldNamespaceSelector, FieldObjectSelector, FieldMatchConditions,
	FieldRules, FieldFailurePolicy, FieldTimeoutSeconds, FieldCABundle}

// Event reasons, on the webhook configuration.
const (
	ReasonDrift    = "WebhookConfigurationDrift"
	ReasonRestored = "WebhookConfigurationRestored"
)

// Metrics is where the detector reports: endpoint_policy_webhook_configuration_drift.
type Metrics interface {
	WebhookConfigurationDrift(webhook, field string, drifted bool)
	ForgetWebhook(webhook string)
}

// Options configure a Detector.
type Options struct {
	// Installed is the file of installed configurations (Load).
	Installed string
	// CertFile is the serving certificate (tls.crt) the caBundles must
	// verify.
	CertFile string
	Clients  kubernetes.Interface
	Events   events.EventRecorder
	Metrics  Metrics
	// Interval is how often everything is compared again without a change
	// to a configuration: a renewed certificate, an upgraded file.
	Interval time.Duration
	Log      logr.Logger
	// Now is the clock of certificate verification; time.Now when nil.
	Now func() time.Time
}

// Detector is the leader's drift detection: a manager Runnable.
type Detector struct {
	opts      Options
	installed []Configuration

	mu       sync.Mutex
	reported map[string]Finding // by webhook and field: what is drifted now
	hooks    map[string]bool    // the webhooks with series
	certErr  string             // the last serving certificate read error logged
}

// New checks the installed configurations now, so that `serve` refuses a
// missing or invalid file at start.
func New(opts Options) (*Detector, error) {
	configs, err := Load(opts.Installed)
	if err != nil {
		return nil, err
	}
	if opts.Interval <= 0 {
		opts.Interval = time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Detector{opts: opts, installed: configs, reported: map[string]Finding{}, hooks: map[string]bool{}}, nil
}

// NeedLeaderElection: only the leader compares and reports.
func (d *Detector) NeedLeaderElection() bool { return true }

// Start watches the installed configurations by name, each with its own
// informer outside the manager's cache: a cluster where they cannot be
// listed (RBAC from an older chart) loses drift detection, logged, and
// nothing else. It compares at every change and every Interval.
func (d *Detector) Start(ctx context.Context) error {
	changed := make(chan struct{}, 1)
	notify := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	handler := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { notify() },
		UpdateFunc: func(any, any) { notify() },
		DeleteFunc: func(any) { notify() },
	}
	stores := map[string]toolscache.SharedIndexInformer{}
	for _, c := range d.installed {
		key := c.Kind + "/" + c.Name
		if _, ok := stores[key]; ok {
			continue
		}
		name := c.Name
		factory := informers.NewSharedInformerFactoryWithOptions(d.opts.Clients, 0,
			informers.WithTweakListOptions(func(o *metav1.ListOptions) {
				o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
			}))
		var inf toolscache.SharedIndexInformer
		if c.Kind == "MutatingWebhookConfiguration" {
			inf = factory.Admissionregistration().V1().MutatingWebhookConfigurations().Informer()
		} else {
			inf = factory.Admissionregistration().V1().ValidatingWebhookConfigurations().Informer()
		}
		if _, err := inf.AddEventHandler(handler); err != nil {
			return err
		}
		stores[key] = inf
		go inf.RunWithContext(ctx)
	}
	// The first comparison as soon as every informer has listed: a
	// configuration that is gone sends no event.
	go func() {
		synced := make([]toolscache.InformerSynced, 0, len(stores))
		for _, inf := range stores {
			synced = append(synced, inf.HasSynced)
		}
		if toolscache.WaitForCacheSync(ctx.Done(), synced...) {
			notify()
		}
	}()
	ticker := time.NewTicker(d.opts.Interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-ticker.C:
		}
		d.check(ctx, stores)
	}
}

// check compares every installed configuration whose informer has synced.
func (d *Detector) check(ctx context.Context, stores map[string]toolscache.SharedIndexInformer) {
	if configs, err := Load(d.opts.Installed); err != nil {
		d.opts.Log.Error(err, "Reading the installed webhook configurations; comparing with the ones read before")
	} else {
		d.installed = configs
	}
	cert := d.readCert()
	var findings []Finding
	lives := map[string]runtime.Object{}
	compared := map[string]bool{}
	for _, c := range d.installed {
		inf := stores[c.Kind+"/"+c.Name]
		if inf == nil || !inf.HasSynced() {
			continue // started before an upgraded file named it, or not listed yet
		}
		var live *Configuration
		if obj, ok, _ := inf.GetStore().GetByKey(c.Name); ok {
			lc, err := fromObject(obj.(runtime.Object), false)
			if err == nil {
				live = &lc
				lives[c.Kind+"/"+c.Name] = obj.(runtime.Object)
			}
		}
		for _, h := range c.Hooks {
			compared[h.Name] = true
		}
		findings = append(findings, Compare(c, live, cert, d.opts.Now())...)
	}
	d.report(ctx, compared, findings, lives)
}

func (d *Detector) readCert() []byte {
	if d.opts.CertFile == "" {
		return nil
	}
	cert, err := os.ReadFile(d.opts.CertFile)
	if err != nil {
		if msg := err.Error(); msg != d.certErr {
			d.certErr = msg
			d.opts.Log.Error(err, "Reading the serving certificate; the caBundles are not checked")
		}
		return nil
	}
	d.certErr = ""
	return cert
}

// report sets the gauge of every compared webhook and field, and records an
// Event and a log line for each finding that is new, and for each that is
// gone.
func (d *Detector) report(_ context.Context, compared map[string]bool, findings []Finding, lives map[string]runtime.Object) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := map[string]Finding{}
	for _, f := range findings {
		now[f.key()] = f
	}
	d.setMetrics(compared, now)
	d.announce(compared, now, lives)
	d.reported = now
}

// setMetrics sets the drift metric of every compared webhook's fields, and
// forgets the webhooks no longer compared.
func (d *Detector) setMetrics(compared map[string]bool, now map[string]Finding) {
	hooks := make([]string, 0, len(compared))
	for h := range compared {
		hooks = append(hooks, h)
	}
	sort.Strings(hooks)
	for _, h := range hooks {
		for _, field := range Fields {
			_, drifted := now[h+"\x00"+field]
			d.opts.Metrics.WebhookConfigurationDrift(h, field, drifted)
		}
	}
	for h := range d.hooks {
		if !compared[h] {
			d.opts.Metrics.ForgetWebhook(h)
		}
	}
	d.hooks = compared
}

// announce logs, and records an Event for, each drift new since the last
// comparison and each one gone from a webhook still compared.
func (d *Detector) announce(compared map[string]bool, now map[string]Finding, lives map[string]runtime.Object) {
	event := func(f Finding, eventType, reason, note string) {
		if obj := lives[f.Configuration]; obj != nil && d.opts.Events != nil {
			d.opts.Events.Eventf(obj, nil, eventType, reason, "Compare", "%s", note)
		}
	}
	for _, f := range sortFindings(now) {
		if old, ok := d.reported[f.key()]; ok && old.Detail == f.Detail {
			continue
		}
		d.opts.Log.Info("Webhook configuration drift", "configuration", f.Configuration, "webhook", f.Webhook, "field", f.Field, "detail", f.Detail)
		event(f, corev1.EventTypeWarning, ReasonDrift,
			cut(fmt.Sprintf("webhook %s: %s differs from what was installed: %s. endpoint-policy changes nothing; `helm upgrade` restores it.", f.Webhook, f.Field, f.Detail)))
	}
	for _, f := range sortFindings(d.reported) {
		if _, ok := now[f.key()]; ok || !compared[f.Webhook] {
			continue
		}
		d.opts.Log.Info("Webhook configuration restored", "configuration", f.Configuration, "webhook", f.Webhook, "field", f.Field)
		event(f, corev1.EventTypeNormal, ReasonRestored, fmt.Sprintf("webhook %s: %s is as installed again", f.Webhook, f.Field))
	}
}

func sortFindings(m map[string]Finding) []Finding {
	out := make([]Finding, 0, len(m))
	for _, f := range m {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key() < out[j].key() })
	return out
}

// cut keeps an Event's note within the Events API's 1 kB.
func cut(s string) string {
	const max = 1024
	if len(s) <= max {
		return s
	}
	s = s[:max-len("…")]
	if i := strings.LastIndexByte(s, ' '); i > 0 {
		s = s[:i]
	}
	return s + "…"
}
