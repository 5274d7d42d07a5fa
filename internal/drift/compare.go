package drift

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/api/equality"
)

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
