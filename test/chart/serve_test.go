package chart

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/endpoint-policy/endpoint-policy/internal/testing/proctest"
)

// serveInstalled runs `endpoint-policy serve` with exactly what the chart
// installed: the Deployment's arguments, the Secret as --cert-dir and the
// ConfigMap as --config, on local files and loopback ports instead of the
// pod's volumes, authenticated as the chart's ServiceAccount (so with the
// chart's RBAC only). The server must become ready and serve the chart's
// certificate, valid for the Service's names under the CA the webhooks
// trust, and serve /metrics only to a reader the chart's roles allow.
func (c *cluster) serveInstalled(t *testing.T, caBundle []byte) {
	t.Helper()
	g := gomega.NewWithT(t)
	key := func(name string) client.ObjectKey { return client.ObjectKey{Namespace: namespace, Name: name} }
	d := &appsv1.Deployment{}
	c.get(t, key(release), d)
	secret := &corev1.Secret{}
	c.get(t, key(release+"-tls"), secret)
	cm := &corev1.ConfigMap{}
	c.get(t, key(release+"-config"), cm)
	webhooks := &corev1.ConfigMap{}
	c.get(t, key(release+"-webhooks"), webhooks)

	dir := t.TempDir()
	certDir, configDir, webhooksDir := filepath.Join(dir, "tls"), filepath.Join(dir, "config"), filepath.Join(dir, "webhooks")
	for path, files := range map[string]map[string][]byte{
		certDir:     secret.Data,
		configDir:   {"config.yaml": []byte(cm.Data["config.yaml"])},
		webhooksDir: {"webhooks.yaml": []byte(webhooks.Data["webhooks.yaml"])},
	} {
		g.Expect(os.MkdirAll(path, 0o700)).To(gomega.Succeed())
		for name, data := range files {
			g.Expect(os.WriteFile(filepath.Join(path, name), data, 0o600)).To(gomega.Succeed())
		}
	}
	webhookPort, healthAddr, metricsAddr := proctest.FreePort(t), fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t)), fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))
	mounts := map[string]string{}
	for _, vm := range d.Spec.Template.Spec.Containers[0].VolumeMounts {
		mounts[vm.MountPath] = map[string]string{"tls": certDir, "config": configDir, "webhooks": webhooksDir}[vm.Name]
	}
	var args []string
	for _, a := range d.Spec.Template.Spec.Containers[0].Args {
		name, value, _ := strings.Cut(a, "=")
		switch name {
		case "--webhook-port":
			value = fmt.Sprint(webhookPort)
		case "--metrics-bind-address":
			value = metricsAddr
		case "--health-probe-bind-address":
			value = healthAddr
		case "--cert-dir", "--config", "--webhook-configurations":
			for mount, local := range mounts {
				if rest, ok := strings.CutPrefix(value, mount); ok && local != "" {
					value = local + rest
				}
			}
			g.Expect(value).To(gomega.HavePrefix(dir), "%s is not on a volume the chart mounts", a)
		}
		if value != "" {
			a = name + "=" + value
		}
		args = append(args, a)
	}

	bin := filepath.Join(dir, "endpoint-policy")
	proctest.HaltOnRace(t)
	build := exec.Command("go", proctest.GoBuild(true, "-o", bin, "./cmd/endpoint-policy")...)
	build.Dir = repoRoot
	out, err := build.CombinedOutput()
	g.Expect(err).NotTo(gomega.HaveOccurred(), "go build: %s", out)
	var logs strings.Builder
	srv := exec.Command(bin, append(args, "--kubeconfig="+c.serverKubeconfig)...)
	srv.Stdout, srv.Stderr = &logs, &logs
	g.Expect(srv.Start()).To(gomega.Succeed())
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	t.Cleanup(func() {
		_ = srv.Process.Kill()
		exit := <-exited
		if t.Failed() {
			t.Logf("endpoint-policy %s (%v)\n%s", strings.Join(args, " "), exit, logs.String())
		}
	})

	proctest.Ready(t, "http://"+healthAddr+"/readyz", exited, 30*time.Second, "the server with the chart's arguments")

	roots := x509.NewCertPool()
	g.Expect(roots.AppendCertsFromPEM(caBundle)).To(gomega.BeTrue())
	conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", webhookPort), &tls.Config{
		RootCAs:    roots,
		ServerName: release + "-webhook." + namespace + ".svc", // the name the API server dials
		MinVersion: tls.VersionTLS12,
	})
	g.Expect(err).NotTo(gomega.HaveOccurred(), "the webhook's certificate is not trusted by the webhooks' caBundle")
	g.Expect(conn.ConnectionState().NegotiatedProtocol).NotTo(gomega.Equal("h2"))
	conn.Close()

	metrics := c.checkMetricsAuth(t, metricsAddr)
	c.checkDrift(t, metrics)
}

// checkMetricsAuth: the metrics endpoint answers 401 without a token, 403 to
// a ServiceAccount without the chart's metrics-reader ClusterRole (the
// server's own), and the metrics to one bound to it. The server's
// TokenReviews and SubjectAccessReviews are made with the chart's RBAC. It
// returns a scrape as the reader.
func (c *cluster) checkMetricsAuth(t *testing.T, addr string) func() (string, error) {
	t.Helper()
	g := gomega.NewWithT(t)
	ctx := t.Context()
	token := func(name string) string {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
		if err := c.k8s.Create(ctx, sa); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		tr := &authenticationv1.TokenRequest{}
		g.Expect(c.k8s.SubResource("token").Create(ctx, sa, tr)).To(gomega.Succeed())
		return tr.Status.Token
	}
	prometheus := token("prometheus")
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "prometheus-endpoint-policy-metrics"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: release + "-metrics-reader"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: namespace, Name: "prometheus"}},
	}
	g.Expect(c.k8s.Create(ctx, binding)).To(gomega.Succeed())
	t.Cleanup(func() { _ = c.k8s.Delete(context.Background(), binding) })

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		// The server's self-signed metrics certificate; what is tested here
		// is who may read, not the certificate.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
	}}
	scrape := func(token string) func() (int, error) {
		return func() (int, error) {
			req, err := http.NewRequest(http.MethodGet, "https://"+addr+"/metrics", nil)
			if err != nil {
				return 0, err
			}
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			resp, err := client.Do(req)
			if err != nil {
				return 0, err
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode == http.StatusOK && !strings.Contains(string(body), "endpoint_policy_") {
				return 0, fmt.Errorf("200 without endpoint-policy metrics: %.200s", body)
			}
			return resp.StatusCode, nil
		}
	}
	g.Eventually(scrape(""), 10*time.Second, 100*time.Millisecond).Should(gomega.Equal(http.StatusUnauthorized), "no token")
	g.Expect(scrape(token(release))()).To(gomega.Equal(http.StatusForbidden), "the server's own ServiceAccount is no metrics reader")
	g.Eventually(scrape(prometheus), 10*time.Second, 100*time.Millisecond).Should(gomega.Equal(http.StatusOK), "bound to -metrics-reader")
	// Go's TLS server answers a plain HTTP request with a 400 of its own.
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/metrics")
	g.Expect(err).NotTo(gomega.HaveOccurred())
	resp.Body.Close()
	g.Expect(resp.StatusCode).To(gomega.Equal(http.StatusBadRequest), "plain HTTP must not be served")
	return func() (string, error) {
		req, err := http.NewRequest(http.MethodGet, "https://"+addr+"/metrics", nil)
		if err != nil {
			return "", err
		}
		req.Header.Set("Authorization", "Bearer "+prometheus)
		resp, err := client.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return string(body), err
	}
}
