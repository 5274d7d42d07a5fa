package config

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/registry"
)

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
	errs = append(errs, validateEndpointConfigMaps(field.NewPath(policy.EndpointConfigMapsSetting), c.EndpointConfigMaps)...)
	errs = append(errs, validateExemptions(field.NewPath("exemptions"), c.Exemptions)...)
	return errs
}

// validateEndpointConfigMaps checks each entry is "namespace/name", once.
func validateEndpointConfigMaps(fldPath *field.Path, list []string) field.ErrorList {
	var errs field.ErrorList
	seen := map[string]bool{}
	for i, v := range list {
		p := fldPath.Index(i)
		ns, name, ok := strings.Cut(v, "/")
		switch {
		case !ok || strings.Contains(name, "/"):
			errs = append(errs, field.Invalid(p, v, `must be "namespace/name"`))
			continue
		case seen[v]:
			errs = append(errs, field.Duplicate(p, v))
			continue
		}
		seen[v] = true
		for _, msg := range validation.IsDNS1123Label(ns) {
			errs = append(errs, field.Invalid(p, v, "namespace: "+msg))
		}
		for _, msg := range validation.IsDNS1123Subdomain(name) {
			errs = append(errs, field.Invalid(p, v, "name: "+msg))
		}
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
	e, err := policy.NewEngine(rules, c.Modes())
	if err != nil {
		return nil, err
	}
	return e.Exempting(c.EngineExemptions(), time.Now), nil
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
	if !slices.Equal(c.EndpointConfigMaps, running.EndpointConfigMaps) {
		errs = append(errs, field.Forbidden(field.NewPath(policy.EndpointConfigMapsSetting),
			"takes a restart: the server watches the ConfigMaps listed when it started"))
	}
	return errs
}
