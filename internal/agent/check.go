package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"k8s.io/client-go/rest"

	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
)

// Check checks one endpoint ("host:port") from this machine: it dials it
// directly (never through a proxy), verifies the server's certificate
// against base's CA with the endpoint's host as the server name, and asks
// GET /readyz with base's credentials. Every failure is a status with a
// message that names the cause and the fix.
func Check(ctx context.Context, base *rest.Config, endpoint string, timeout time.Duration) hostnetwork.Check {
	result := func(s hostnetwork.Status, format string, args ...any) hostnetwork.Check {
		return hostnetwork.Check{Endpoint: endpoint, Status: s, Message: fmt.Sprintf(format, args...)}
	}
	host, _, err := net.SplitHostPort(endpoint)
	if err != nil {
		return result(hostnetwork.StatusUnreachable, "%q is not host:port: %v", endpoint, err)
	}
	cfg := rest.CopyConfig(base)
	cfg.Host = "https://" + endpoint
	cfg.APIPath = ""
	cfg.ServerName = host
	cfg.Timeout = timeout
	// A node-local endpoint is dialled as is, whatever HTTPS_PROXY says.
	cfg.Proxy = func(*http.Request) (*url.URL, error) { return nil, nil }
	client, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return result(hostnetwork.StatusUnreachable, "cannot build a client for %s: %v", endpoint, err)
	}
	// Every check dials afresh: a kept-alive connection would hide a
	// balancer that stopped listening.
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.Host+"/readyz", nil)
	if err != nil {
		return result(hostnetwork.StatusUnreachable, "cannot build the request for %s: %v", endpoint, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return classify(endpoint, host, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	switch resp.StatusCode {
	case http.StatusOK:
		return result(hostnetwork.StatusVerified, "the API server answers on %s with a certificate valid for %q, and is ready", endpoint, host)
	case http.StatusUnauthorized, http.StatusForbidden:
		return result(hostnetwork.StatusUnauthorized,
			"GET https://%s/readyz answered %s to the agent's credentials: the server has this cluster's certificate but refuses its ServiceAccount token; "+
				"check that it is this cluster's API server and that system:public-info-viewer still allows /readyz", endpoint, resp.Status)
	default:
		return result(hostnetwork.StatusNotReady, "GET https://%s/readyz answered %s: %s; the API server behind it is not ready",
			endpoint, resp.Status, strings.TrimSpace(string(body)))
	}
}

// classify turns the error of a request that got no response into a status.
func classify(endpoint, host string, err error) hostnetwork.Check {
	var (
		hostErr      x509.HostnameError
		authorityErr x509.UnknownAuthorityError
		invalidErr   x509.CertificateInvalidError
		verifyErr    *tls.CertificateVerificationError
	)
	check := hostnetwork.Check{Endpoint: endpoint}
	switch {
	case errors.As(err, &hostErr):
		check.Status = hostnetwork.StatusCertificateNotValidForHost
		check.Message = fmt.Sprintf("the API server's certificate on %s is signed by the cluster CA but not valid for %q (it names %s): "+
			"add %q to the serving certificate's SANs (kubeadm: ClusterConfiguration.apiServer.certSANs, then renew the serving certificate "+
			"on each control-plane node: move apiserver.crt and apiserver.key aside, run `kubeadm init phase certs apiserver --config <file>`, "+
			"restart kube-apiserver), or point host-network-endpoint at a name the certificate has",
			endpoint, host, certificateNames(hostErr.Certificate), host)
	case errors.As(err, &authorityErr):
		check.Status = hostnetwork.StatusUnknownAuthority
		check.Message = fmt.Sprintf("the server on %s presents a certificate the cluster CA did not sign (issuer %q): "+
			"it is not this cluster's API server, or the balancer in front of it terminates TLS; "+
			"a node-local balancer must pass TCP through to the API servers", endpoint, issuerOf(authorityErr.Cert))
	case errors.As(err, &invalidErr):
		check.Status = hostnetwork.StatusCertificateNotValidForHost
		check.Message = fmt.Sprintf("the API server's certificate on %s is not valid: %v; renew it", endpoint, invalidErr)
	case errors.As(err, &verifyErr):
		check.Status = hostnetwork.StatusUnknownAuthority
		check.Message = fmt.Sprintf("the certificate on %s does not verify against the cluster CA: %v", endpoint, verifyErr.Err)
	default:
		check.Status = hostnetwork.StatusUnreachable
		check.Message = fmt.Sprintf("nothing answers as an API server on %s on this node: %v", endpoint, rootCause(err))
	}
	return check
}

// rootCause drops the url.Error's "Get <url>:" prefix, which repeats the
// endpoint.
func rootCause(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func certificateNames(c *x509.Certificate) string {
	if c == nil {
		return "no names"
	}
	var names []string
	names = append(names, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		return "no subject alternative names"
	}
	return strings.Join(names, ", ")
}

func issuerOf(c *x509.Certificate) string {
	if c == nil {
		return ""
	}
	return c.Issuer.String()
}
