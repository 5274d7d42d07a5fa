// Package config holds the policy configuration file: its versioned shape,
// built-in defaults, strict decoding and validation.
//
//	apiVersion: endpoint-policy.io/v1alpha1
//	kind: PolicyConfiguration
//	mode: Enforce
//	policies:
//	  host-network-endpoint:
//	    mode: Enforce
//	    host: localhost
//	    port: 7443
//	    override: IPLiterals
//	  apiserver-probe-host:
//	    mode: Audit
//	  apiserver-advertise-address:
//	    mode: Enforce
//	  kube-vip-ipvs-backends:
//	    mode: Enforce
//	  kube-proxy-node-deleting:
//	    mode: Enforce
//	    podSelectors:
//	      - matchLabels: {k8s-app: kube-proxy}
//	      - matchLabels: {component: kube-proxy}
//	      - matchLabels: {app: kubernetes, role: proxy}
//	  kube-proxy-readiness-probe:
//	    mode: Audit
//	audit:
//	  interval: 5m
//	  maxReportResults: 100
//	  reportAPI: Auto
//
// Every field is optional except apiVersion and kind; what is left out keeps
// its built-in default. Unknown fields, unknown policy IDs and invalid values
// are errors that name the field.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
	"github.com/endpoint-policy/endpoint-policy/internal/registry"
)

const (
	// APIVersion and Kind identify the configuration file's format.
	APIVersion = "endpoint-policy.io/v1alpha1"
	Kind       = "PolicyConfiguration"
)

// PolicyConfiguration is the configuration file.
type PolicyConfiguration struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// Mode is the global mode: Enforce (each policy runs in its own mode) or
	// Audit (every enabled policy runs in Audit).
	Mode     policy.Mode `json:"mode,omitempty"`
	Policies Policies    `json:"policies,omitempty"`
	// Audit configures the background audit.
	Audit Audit `json:"audit,omitzero"`
}

// Audit configures the background audit of the objects in the cluster.
type Audit struct {
	// Interval is how often every object is evaluated again, besides on
	// start and on every change.
	Interval metav1.Duration `json:"interval,omitzero"`
	// MaxReportResults caps the results listed in one PolicyReport; the
	// report's summary still counts every result.
	MaxReportResults int `json:"maxReportResults,omitempty"`
	// ReportAPI is the report API the audit writes: Auto (each of
	// wgpolicyk8s.io and openreports.io whose CRDs the cluster serves, both
	// when both), wgpolicyk8s.io or openreports.io.
	ReportAPI ReportAPI `json:"reportAPI,omitempty"`
}

// ReportAPI names the API of the audit's reports.
type ReportAPI string

const (
	// ReportAPIAuto writes every report API the cluster serves.
	ReportAPIAuto ReportAPI = "Auto"
	// ReportAPIWGPolicy is wgpolicyk8s.io/v1alpha2 PolicyReport and
	// ClusterPolicyReport (Kyverno, Policy Reporter).
	ReportAPIWGPolicy ReportAPI = "wgpolicyk8s.io"
	// ReportAPIOpenReports is openreports.io/v1alpha1 Report and
	// ClusterReport (Kyverno since 1.15 behind a flag, Policy Reporter
	// since 3.2).
	ReportAPIOpenReports ReportAPI = "openreports.io"
)

const (
	// DefaultAuditInterval is audit.interval's default.
	DefaultAuditInterval = 5 * time.Minute
	// DefaultMaxReportResults is audit.maxReportResults' default.
	DefaultMaxReportResults = 100
	// MaxReportResultsLimit bounds audit.maxReportResults: with messages
	// capped at 1 KiB, a report stays far below etcd's object size limit.
	MaxReportResultsLimit = 500
)

// Policies holds each policy's configuration, keyed by policy ID: one entry
// per policy of the registry.
type Policies map[policy.ID]*Policy

// Policy is one policy's configuration: policies.<id> in the file, its mode
// next to its settings.
type Policy struct {
	Mode policy.Mode
	// Settings are the policy's settings besides its mode (the type its
	// descriptor's DefaultSettings returns), nil for a policy that has none.
	Settings policy.Settings
}

// MarshalJSON writes the policy as the file holds it: mode next to the
// settings' fields.
func (p Policy) MarshalJSON() ([]byte, error) {
	fields := map[string]json.RawMessage{}
	if p.Settings != nil {
		data, err := json.Marshal(p.Settings)
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(data, &fields); err != nil {
			return nil, err
		}
	}
	if p.Mode != "" {
		mode, err := json.Marshal(p.Mode)
		if err != nil {
			return nil, err
		}
		fields["mode"] = mode
	}
	return json.Marshal(fields)
}

// Default returns the built-in configuration, used when no file is given and
// as the base that a file's fields override: each policy of the registry in
// its default mode with its default settings.
func Default() *PolicyConfiguration {
	policies := make(Policies, len(registry.Policies))
	for _, d := range registry.Policies {
		p := &Policy{Mode: d.DefaultMode}
		if d.DefaultSettings != nil {
			p.Settings = d.DefaultSettings()
		}
		policies[d.ID] = p
	}
	return &PolicyConfiguration{
		APIVersion: APIVersion,
		Kind:       Kind,
		Mode:       policy.Enforce,
		Policies:   policies,
		Audit:      Audit{Interval: metav1.Duration{Duration: DefaultAuditInterval}, MaxReportResults: DefaultMaxReportResults, ReportAPI: ReportAPIAuto},
	}
}

// file is the configuration file's shape as first decoded: each policy's
// entry is decoded by its descriptor's settings type (decodePolicy).
type file struct {
	APIVersion string                     `json:"apiVersion"`
	Kind       string                     `json:"kind"`
	Mode       policy.Mode                `json:"mode,omitempty"`
	Policies   map[string]json.RawMessage `json:"policies,omitempty"`
	Audit      Audit                      `json:"audit,omitzero"`
}

// Parse decodes a configuration file (YAML or JSON) strictly onto the
// defaults and validates it. Errors name the offending field.
func Parse(data []byte) (*PolicyConfiguration, error) {
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	if err := checkDurations(js); err != nil {
		return nil, err
	}
	// Fields the file leaves out keep their defaults: decoding merges into an
	// existing struct, and an explicit empty value ("", 0) still overwrites,
	// so that validation can reject it.
	cfg := Default()
	f := file{Mode: cfg.Mode, Audit: cfg.Audit}
	if err := decodeStrict(js, &f, ""); err != nil {
		return nil, err
	}
	cfg.APIVersion, cfg.Kind, cfg.Mode, cfg.Audit = f.APIVersion, f.Kind, f.Mode, f.Audit
	var errs []error
	for _, id := range slices.Sorted(maps.Keys(f.Policies)) {
		d, ok := registry.Lookup(policy.ID(id))
		if !ok {
			errs = append(errs, fmt.Errorf("unknown field %q", "policies."+id))
			continue
		}
		if err := decodePolicy(d, f.Policies[id], cfg.Policies[d.ID]); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, errs.ToAggregate()
	}
	return cfg, nil
}

// decodePolicy decodes policies.<id> onto p, which holds the policy's
// defaults. A settings field the file sets replaces the default whole (a
// list is not merged into the default list); the others, and those set to
// null (Helm's and kubectl's way to unset), keep their defaults.
func decodePolicy(d policy.Descriptor, raw json.RawMessage, p *Policy) error {
	path := "policies." + string(d.ID)
	var fields map[string]json.RawMessage
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(raw, &fields); err != nil || fields == nil {
		return fmt.Errorf("%s: must be an object with mode and the policy's settings", path)
	}
	if mode, ok := fields["mode"]; ok {
		if err := decodeStrict(mode, &p.Mode, path+".mode"); err != nil {
			return err
		}
		delete(fields, "mode")
	}
	for k, v := range fields {
		if string(v) == "null" {
			delete(fields, k)
		}
	}
	if len(fields) == 0 {
		return nil
	}
	if p.Settings == nil {
		var errs []error
		for _, k := range slices.Sorted(maps.Keys(fields)) {
			errs = append(errs, fmt.Errorf("unknown field %q", path+"."+k))
		}
		return errors.Join(errs...)
	}
	merged := map[string]json.RawMessage{}
	defaults, err := json.Marshal(p.Settings)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := json.Unmarshal(defaults, &merged); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for k, v := range fields {
		merged[k] = v
	}
	data, err := json.Marshal(merged)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	settings := reflect.New(reflect.TypeOf(p.Settings).Elem()).Interface().(policy.Settings)
	if err := decodeStrict(data, settings, path); err != nil {
		return err
	}
	p.Settings = settings
	return nil
}

// decodeStrict decodes data into v, case-sensitively, rejecting unknown and
// duplicate fields, with errors naming the field under path.
func decodeStrict(data []byte, v any, path string) error {
	strictErrs, err := sigsjson.UnmarshalStrict(data, v)
	if err != nil {
		if path == "" {
			return fmt.Errorf("cannot decode: %w", err)
		}
		return fmt.Errorf("%s: cannot decode: %w", path, err)
	}
	for _, e := range strictErrs {
		// Strict errors carry their own path: unknown field "policies.foo".
		var fe sigsjson.FieldError
		if path != "" && errors.As(e, &fe) {
			fe.SetFieldPath(joinPath(path, fe.FieldPath()))
		}
	}
	return errors.Join(strictErrs...)
}

func joinPath(parent, child string) string {
	if child == "" {
		return parent
	}
	return parent + "." + child
}

// checkDurations reports a duration that does not parse with its field path:
// the decoder's own error does not say which field it was.
func checkDurations(js []byte) error {
	var doc struct {
		Audit struct {
			Interval any `json:"interval"`
		} `json:"audit"`
	}
	if json.Unmarshal(js, &doc) != nil || doc.Audit.Interval == nil {
		return nil // the decoder reports what is wrong with the shape
	}
	v, ok := doc.Audit.Interval.(string)
	if _, err := time.ParseDuration(v); !ok || err != nil {
		return field.Invalid(field.NewPath("audit", "interval"), doc.Audit.Interval, "must be a duration such as 5m or 30s")
	}
	return nil
}

// Validate returns every problem with c, with field paths.
func (c *PolicyConfiguration) Validate() field.ErrorList {
	var errs field.ErrorList
	if c.APIVersion != APIVersion {
		errs = append(errs, field.NotSupported(field.NewPath("apiVersion"), c.APIVersion, []string{APIVersion}))
	}
	if c.Kind != Kind {
		errs = append(errs, field.NotSupported(field.NewPath("kind"), c.Kind, []string{Kind}))
	}
	if c.Mode != policy.Enforce && c.Mode != policy.Audit {
		errs = append(errs, field.NotSupported(field.NewPath("mode"), c.Mode, []policy.Mode{policy.Enforce, policy.Audit}))
	}
	p := field.NewPath("policies")
	for _, d := range registry.Policies {
		pp := p.Child(string(d.ID))
		pc, ok := c.Policies[d.ID]
		if !ok || pc == nil {
			errs = append(errs, field.Required(pp, "every policy has an entry (config.Default has them all)"))
			continue
		}
		errs = append(errs, validateMode(pp.Child("mode"), pc.Mode)...)
		if pc.Settings != nil {
			errs = append(errs, pc.Settings.Validate(pp)...)
		}
	}
	a := field.NewPath("audit")
	if c.Audit.Interval.Duration < time.Second {
		errs = append(errs, field.Invalid(a.Child("interval"), c.Audit.Interval.Duration.String(), "must be at least 1s"))
	}
	if n := c.Audit.MaxReportResults; n < 1 || n > MaxReportResultsLimit {
		errs = append(errs, field.Invalid(a.Child("maxReportResults"), n, fmt.Sprintf("must be between 1 and %d", MaxReportResultsLimit)))
	}
	switch c.Audit.ReportAPI {
	case ReportAPIAuto, ReportAPIWGPolicy, ReportAPIOpenReports:
	default:
		errs = append(errs, field.NotSupported(a.Child("reportAPI"), c.Audit.ReportAPI,
			[]ReportAPI{ReportAPIAuto, ReportAPIWGPolicy, ReportAPIOpenReports}))
	}
	return errs
}

func validateMode(fldPath *field.Path, m policy.Mode) field.ErrorList {
	if m.Valid() {
		return nil
	}
	return field.ErrorList{field.NotSupported(fldPath, m, []policy.Mode{policy.Enforce, policy.Audit, policy.Disabled})}
}

// Modes returns each policy's effective mode: its own, except that a global
// Audit turns Enforce into Audit. Disabled stays Disabled.
func (c *PolicyConfiguration) Modes() map[policy.ID]policy.Mode {
	modes := make(map[policy.ID]policy.Mode, len(c.Policies))
	for id, p := range c.Policies {
		modes[id] = p.Mode
		if c.Mode == policy.Audit && p.Mode == policy.Enforce {
			modes[id] = policy.Audit
		}
	}
	return modes
}

// Engine builds the engine for c, which must be valid (Parse or Default):
// every policy of the registry from its settings, in its effective mode.
func (c *PolicyConfiguration) Engine() (*policy.Engine, error) {
	rules := make([]policy.Rule, 0, len(registry.Policies))
	for _, d := range registry.Policies {
		p, ok := c.Policies[d.ID]
		if !ok {
			return nil, fmt.Errorf("policy %s: not configured", d.ID)
		}
		r, err := d.New(p.Settings)
		if err != nil {
			return nil, fmt.Errorf("policy %s: %w", d.ID, err)
		}
		rules = append(rules, r)
	}
	return policy.NewEngine(rules, c.Modes())
}

// RestartRequired returns the settings whose change from running takes a
// restart to apply (see policy.RestartSettings): a reload that changes them
// is refused.
func (c *PolicyConfiguration) RestartRequired(running *PolicyConfiguration) field.ErrorList {
	var errs field.ErrorList
	for _, d := range registry.Policies {
		p, old := c.Policies[d.ID], running.Policies[d.ID]
		if p == nil || old == nil {
			continue
		}
		if rs, ok := p.Settings.(policy.RestartSettings); ok {
			errs = append(errs, rs.RestartRequired(old.Settings, field.NewPath("policies", string(d.ID)))...)
		}
	}
	return errs
}

// HostNetworkSettings returns host-network-endpoint's settings in c: what the
// node agent checks.
func HostNetworkSettings(c *PolicyConfiguration) (hostnetwork.Settings, error) {
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
