package chart

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// serveInstalled runs `endpoint-policy serve` with exactly what the chart
// installed: the Deployment's arguments, the Secret as --cert-dir and the
// ConfigMap as --config, on local files and loopback ports instead of the
// pod's volumes. The server must become ready and serve the chart's
// certificate, valid for the Service's names under the CA the webhooks trust.
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

	dir := t.TempDir()
	certDir, configDir := filepath.Join(dir, "tls"), filepath.Join(dir, "config")
	for path, files := range map[string]map[string][]byte{
		certDir:   secret.Data,
		configDir: {"config.yaml": []byte(cm.Data["config.yaml"])},
	} {
		g.Expect(os.MkdirAll(path, 0o700)).To(gomega.Succeed())
		for name, data := range files {
			g.Expect(os.WriteFile(filepath.Join(path, name), data, 0o600)).To(gomega.Succeed())
		}
	}
	webhookPort, healthAddr := freePort(t), fmt.Sprintf("127.0.0.1:%d", freePort(t))
	mounts := map[string]string{}
	for _, vm := range d.Spec.Template.Spec.Containers[0].VolumeMounts {
		mounts[vm.MountPath] = map[string]string{"tls": certDir, "config": configDir}[vm.Name]
	}
	var args []string
	for _, a := range d.Spec.Template.Spec.Containers[0].Args {
		name, value, _ := strings.Cut(a, "=")
		switch name {
		case "--webhook-port":
			value = fmt.Sprint(webhookPort)
		case "--metrics-bind-address":
			value = "0"
		case "--health-probe-bind-address":
			value = healthAddr
		case "--cert-dir", "--config":
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
	build := exec.Command("go", "build", "-o", bin, "./cmd/endpoint-policy")
	build.Dir = repoRoot
	out, err := build.CombinedOutput()
	g.Expect(err).NotTo(gomega.HaveOccurred(), "go build: %s", out)
	var logs strings.Builder
	srv := exec.Command(bin, append(args, "--kubeconfig="+c.kubeconfig)...)
	srv.Stdout, srv.Stderr = &logs, &logs
	g.Expect(srv.Start()).To(gomega.Succeed())
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	t.Cleanup(func() {
		_ = srv.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("endpoint-policy %s\n%s", strings.Join(args, " "), logs.String())
		}
	})

	g.Eventually(func() (int, error) {
		select {
		case err := <-exited:
			exited <- err // for the cleanup
			return 0, gomega.StopTrying(fmt.Sprintf("the server exited (%v) with the chart's arguments", err))
		default:
		}
		resp, err := http.Get("http://" + healthAddr + "/readyz")
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}, 30*time.Second, 100*time.Millisecond).Should(gomega.Equal(http.StatusOK), "the server never became ready")

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
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
