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
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
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

// Configuration is one installed webhook configuration.
type Configuration struct {
	Kind  string // MutatingWebhookConfiguration or ValidatingWebhookConfiguration
	Name  string
	Hooks []Hook
}

// Hook is what is compared of one webhook, mutating or validating.
type Hook struct {
	Name              string
	ClientConfig      admissionregistrationv1.WebhookClientConfig
	Rules             []admissionregistrationv1.RuleWithOperations
	FailurePolicy     *admissionregistrationv1.FailurePolicyType
	NamespaceSelector *metav1.LabelSelector
	ObjectSelector    *metav1.LabelSelector
	TimeoutSeconds    *int32
	MatchConditions   []admissionregistrationv1.MatchCondition
}

// Finding is one field of one webhook that differs from its installed value.
type Finding struct {
	Configuration string // kind/name
	Webhook       string
	Field         string
	Detail        string // the installed and the live value, or why the caBundle fails
}

func (f Finding) key() string { return f.Webhook + "\x00" + f.Field }

var decoder = func() runtime.Decoder {
	scheme := runtime.NewScheme()
	_ = admissionregistrationv1.AddToScheme(scheme)
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
}()

// Load reads the installed configurations: a YAML stream of
// MutatingWebhookConfiguration and ValidatingWebhookConfiguration objects
// (admissionregistration.k8s.io/v1), as the chart renders them. Its errors
// name the file and the document.
func Load(path string) ([]Configuration, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// Parse is Load on data read from name.
func Parse(name string, data []byte) ([]Configuration, error) {
	var configs []Configuration
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for doc := 1; ; doc++ {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", name, doc, err)
		}
		if len(bytes.TrimSpace(stripComments(raw))) == 0 {
			continue
		}
		obj, _, err := decoder.Decode(raw, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", name, doc, err)
		}
		c, err := fromObject(obj, true)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", name, doc, err)
		}
		configs = append(configs, c)
	}
	if len(configs) == 0 {
		return nil, fmt.Errorf("%s: no MutatingWebhookConfiguration or ValidatingWebhookConfiguration in it", name)
	}
	return configs, nil
}

func stripComments(doc []byte) []byte {
	var out [][]byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

// fromObject converts a webhook configuration; installed ones get the API
// server's defaults, so that an unset field does not read as drift.
func fromObject(obj runtime.Object, installed bool) (Configuration, error) {
	var c Configuration
	switch o := obj.(type) {
	case *admissionregistrationv1.MutatingWebhookConfiguration:
		c = Configuration{Kind: "MutatingWebhookConfiguration", Name: o.Name}
		for _, w := range o.Webhooks {
			c.Hooks = append(c.Hooks, Hook{Name: w.Name, ClientConfig: w.ClientConfig, Rules: w.Rules, FailurePolicy: w.FailurePolicy,
				NamespaceSelector: w.NamespaceSelector, ObjectSelector: w.ObjectSelector, TimeoutSeconds: w.TimeoutSeconds, MatchConditions: w.MatchConditions})
		}
	case *admissionregistrationv1.ValidatingWebhookConfiguration:
		c = Configuration{Kind: "ValidatingWebhookConfiguration", Name: o.Name}
		for _, w := range o.Webhooks {
			c.Hooks = append(c.Hooks, Hook{Name: w.Name, ClientConfig: w.ClientConfig, Rules: w.Rules, FailurePolicy: w.FailurePolicy,
				NamespaceSelector: w.NamespaceSelector, ObjectSelector: w.ObjectSelector, TimeoutSeconds: w.TimeoutSeconds, MatchConditions: w.MatchConditions})
		}
	default:
		return c, fmt.Errorf("kind %s: only MutatingWebhookConfiguration and ValidatingWebhookConfiguration are compared", obj.GetObjectKind().GroupVersionKind().Kind)
	}
	if c.Name == "" {
		return c, fmt.Errorf("%s: metadata.name is empty", c.Kind)
	}
	if installed {
		for i := range c.Hooks {
			setDefaults(&c.Hooks[i])
		}
	}
	return c, nil
}

// setDefaults applies the API server's defaults for admissionregistration/v1
// (k8s.io/kubernetes/pkg/apis/admissionregistration/v1/defaults.go) to the
// fields compared.
func setDefaults(h *Hook) {
	if h.FailurePolicy == nil {
		p := admissionregistrationv1.Fail
		h.FailurePolicy = &p
	}
	if h.TimeoutSeconds == nil {
		t := int32(10)
		h.TimeoutSeconds = &t
	}
	if h.NamespaceSelector == nil {
		h.NamespaceSelector = &metav1.LabelSelector{}
	}
	if h.ObjectSelector == nil {
		h.ObjectSelector = &metav1.LabelSelector{}
	}
	for i := range h.Rules {
		if h.Rules[i].Scope == nil {
			s := admissionregistrationv1.AllScopes
			h.Rules[i].Scope = &s
		}
	}
}

// Compare returns what differs between the installed configuration and the
// live one (nil: deleted). cert is the serving certificate chain (PEM) the
// caBundle must verify; nil skips that check.
func Compare(installed Configuration, live *Configuration, cert []byte, now time.Time) []Finding {
	var out []Finding
	ref := installed.Kind + "/" + installed.Name
	byName := map[string]*Hook{}
	if live != nil {
		for i := range live.Hooks {
			byName[live.Hooks[i].Name] = &live.Hooks[i]
		}
	}
	for _, want := range installed.Hooks {
		got, ok := byName[want.Name]
		if !ok {
			detail := "the webhook is missing from " + ref
			if live == nil {
				detail = ref + " is deleted"
			}
			out = append(out, Finding{Configuration: ref, Webhook: want.Name, Field: FieldWebhook, Detail: detail})
			continue
		}
		add := func(field string, a, b any) {
			if !equality.Semantic.DeepEqual(a, b) {
				out = append(out, Finding{Configuration: ref, Webhook: want.Name, Field: field,
					Detail: fmt.Sprintf("installed %s, live %s", compact(a), compact(b))})
			}
		}
		add(FieldNamespaceSelector, want.NamespaceSelector, got.NamespaceSelector)
		add(FieldObjectSelector, want.ObjectSelector, got.ObjectSelector)
		add(FieldMatchConditions, nilIfEmpty(want.MatchConditions), nilIfEmpty(got.MatchConditions))
		add(FieldRules, want.Rules, got.Rules)
		add(FieldFailurePolicy, want.FailurePolicy, got.FailurePolicy)
		add(FieldTimeoutSeconds, want.TimeoutSeconds, got.TimeoutSeconds)
		if cert != nil {
			if err := verifyCABundle(got.ClientConfig, cert, now); err != nil {
				out = append(out, Finding{Configuration: ref, Webhook: want.Name, Field: FieldCABundle, Detail: err.Error()})
			}
		}
	}
	return out
}

func nilIfEmpty[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}

// compact renders a value as JSON, cut at 300 bytes: enough to see an added
// matchExpression in an Event.
func compact(v any) string {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	const max = 300
	if len(data) > max {
		return string(data[:max]) + "…"
	}
	return string(data)
}

// verifyCABundle checks that the webhook's caBundle verifies the serving
// certificate for the name the API server calls: the Service's DNS name
// (<name>.<namespace>.svc), or the URL's host.
func verifyCABundle(cc admissionregistrationv1.WebhookClientConfig, certPEM []byte, now time.Time) error {
	if len(cc.CABundle) == 0 {
		return errors.New("the caBundle is empty: the API server cannot verify the webhook's certificate (cert-manager's cainjector has not injected it?)")
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(cc.CABundle) {
		return errors.New("the caBundle holds no PEM certificate")
	}
	var chain []*x509.Certificate
	for rest := certPEM; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return fmt.Errorf("the serving certificate cannot be parsed: %w", err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return errors.New("the serving certificate file holds no certificate")
	}
	host := ""
	switch {
	case cc.Service != nil:
		host = cc.Service.Name + "." + cc.Service.Namespace + ".svc"
	case cc.URL != nil:
		u, err := url.Parse(*cc.URL)
		if err != nil {
			return fmt.Errorf("clientConfig.url: %w", err)
		}
		host = u.Hostname()
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{DNSName: host, Roots: roots, Intermediates: inter, CurrentTime: now}); err != nil {
		return fmt.Errorf("the caBundle does not verify the serving certificate for %s: %w", host, err)
	}
	return nil
}

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

	for _, f := range sortFindings(now) {
		if old, ok := d.reported[f.key()]; ok && old.Detail == f.Detail {
			continue
		}
		note := fmt.Sprintf("webhook %s: %s differs from what was installed: %s. endpoint-policy changes nothing; `helm upgrade` restores it.", f.Webhook, f.Field, f.Detail)
		d.opts.Log.Info("Webhook configuration drift", "configuration", f.Configuration, "webhook", f.Webhook, "field", f.Field, "detail", f.Detail)
		if obj := lives[f.Configuration]; obj != nil && d.opts.Events != nil {
			d.opts.Events.Eventf(obj, nil, corev1.EventTypeWarning, ReasonDrift, "Compare", "%s", cut(note))
		}
	}
	for _, f := range sortFindings(d.reported) {
		if _, ok := now[f.key()]; ok || !compared[f.Webhook] {
			continue
		}
		d.opts.Log.Info("Webhook configuration restored", "configuration", f.Configuration, "webhook", f.Webhook, "field", f.Field)
		if obj := lives[f.Configuration]; obj != nil && d.opts.Events != nil {
			d.opts.Events.Eventf(obj, nil, corev1.EventTypeNormal, ReasonRestored, "Compare", "webhook %s: %s is as installed again", f.Webhook, f.Field)
		}
	}
	d.reported = now
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
