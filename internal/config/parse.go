package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/registry"
)

// file is the configuration file's shape as first decoded: each policy's
// entry is decoded by its descriptor's settings type (decodePolicy).
type file struct {
	APIVersion string                     `json:"apiVersion"`
	Kind       string                     `json:"kind"`
	Mode       policy.Mode                `json:"mode,omitempty"`
	Policies   map[string]json.RawMessage `json:"policies,omitempty"`
	Audit      Audit                      `json:"audit,omitzero"`
	// EndpointConfigMaps: null or left out keeps the default; [] lists none.
	EndpointConfigMaps *[]string   `json:"endpointConfigMaps"`
	Exemptions         []Exemption `json:"exemptions,omitempty"`
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
	if len(f.Exemptions) > 0 {
		cfg.Exemptions = f.Exemptions
	}
	if f.EndpointConfigMaps != nil {
		cfg.EndpointConfigMaps = *f.EndpointConfigMaps
		if cfg.EndpointConfigMaps == nil {
			cfg.EndpointConfigMaps = []string{}
		}
	}
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
