package drift

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
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
