// Package integration runs endpoint-policy against a real kube-apiserver and
// etcd (envtest): the webhook configuration from config/webhook is installed
// into the API server, the server runs as `endpoint-policy serve` does, and
// objects are created through the API server.
//
// The binaries are built from Go modules by `make test` (hack/envtest), which
// sets KUBEBUILDER_ASSETS.
package integration

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/yaml"

	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
	"github.com/endpoint-policy/endpoint-policy/internal/server"
	"github.com/endpoint-policy/endpoint-policy/internal/testing/proctest"
	"github.com/endpoint-policy/endpoint-policy/internal/testing/warnings"
)

func TestIntegration(t *testing.T) {
	proctest.HaltOnRace(t)
	RegisterFailHandler(Fail)
	RunSpecs(t, "endpoint-policy integration (envtest)")
}

var (
	testEnv    *envtest.Environment
	restConfig *rest.Config
	// serverConfig impersonates the chart's ServiceAccount, which has the
	// RBAC of config/rbac and nothing else: the server runs with it.
	serverConfig   *rest.Config
	k8s            client.Client
	k8sWatch       client.WithWatch
	clientWarnings *warnings.Recorder
	configFile     string
	probeAddr      string
	stopServer     context.CancelFunc
	serverDone     chan error
	auditLog       string
)

// apiServerAuditPolicy logs the metadata (with admission's audit
// annotations) of the writes the specs look for.
const apiServerAuditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    verbs: [create, update]
    resources:
      - {group: "", resources: [pods, configmaps]}
      - {group: apps, resources: [daemonsets, deployments]}
  - level: None
`

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))

	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		Fail("KUBEBUILDER_ASSETS is not set. Run `make test`, which builds kube-apiserver and etcd from Go modules into bin/ and sets it.")
	}
	testEnv = &envtest.Environment{
		BinaryAssetsDirectory: assets,
		WebhookInstallOptions: envtest.WebhookInstallOptions{
			Paths: []string{filepath.Join("..", "..", "config", "webhook")},
		},
		// The PolicyReport CRDs, which the background audit writes to.
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "charts", "endpoint-policy", "files", "crds")},
		ErrorIfCRDPathMissing: true,
	}
	// The API server's audit log, to see the audit annotations that
	// admission adds in Audit mode.
	dir := GinkgoT().TempDir()
	auditPolicy := filepath.Join(dir, "audit-policy.yaml")
	auditLog = filepath.Join(dir, "audit.log")
	Expect(os.WriteFile(auditPolicy, []byte(apiServerAuditPolicy), 0o600)).To(Succeed())
	testEnv.ControlPlane.GetAPIServer().Configure().
		Set("audit-policy-file", auditPolicy).
		Set("audit-log-path", auditLog)
	var err error
	restConfig, err = testEnv.Start()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { Expect(testEnv.Stop()).To(Succeed()) })

	clientWarnings = &warnings.Recorder{}
	clientConfig := rest.CopyConfig(restConfig)
	clientConfig.WarningHandlerWithContext = clientWarnings
	k8s, err = client.New(clientConfig, client.Options{})
	Expect(err).NotTo(HaveOccurred())
	k8sWatch, err = client.NewWithWatch(restConfig, client.Options{})
	Expect(err).NotTo(HaveOccurred())

	By("installing config/rbac: the server runs as its ServiceAccount")
	serverConfig = installRBAC(context.Background())

	configFile = filepath.Join(GinkgoT().TempDir(), "config.yaml")
	writeConfigFile(configYAML(nil))
	probeAddr = freeAddr()
	startServer()
})

// startServer runs the server the way `endpoint-policy serve` does and waits
// until it reports ready.
func startServer() {
	wio := testEnv.WebhookInstallOptions
	opts := server.DefaultOptions()
	opts.WebhookHost = wio.LocalServingHost
	opts.WebhookPort = wio.LocalServingPort
	opts.CertDir = wio.LocalServingCertDir
	opts.ConfigFile = configFile
	opts.ConfigPollInterval = time.Second
	opts.MetricsBindAddress = "0"
	opts.HealthProbeBindAddress = probeAddr
	opts.LeaderElect = true
	opts.LeaderElectionNamespace = serverNamespace
	opts.Namespace = serverNamespace
	opts.ShutdownDelay = 0

	srv, err := server.New(opts)
	Expect(err).NotTo(HaveOccurred())
	ctx, cancel := context.WithCancel(context.Background())
	stopServer = cancel
	serverDone = make(chan error, 1)
	go func() {
		defer GinkgoRecover()
		serverDone <- srv.Run(logf.IntoContext(ctx, logf.Log), serverConfig)
	}()
	DeferCleanup(func() {
		stopServer()
		Eventually(serverDone).WithTimeout(30 * time.Second).Should(Receive(BeNil()))
	})

	By("waiting for /readyz, which needs the webhook's TLS server to answer")
	Eventually(func() (int, error) {
		resp, err := http.Get("http://" + probeAddr + "/readyz")
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		return resp.StatusCode, nil
	}).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(Equal(http.StatusOK))

	var conn *tls.Conn
	dialer := &net.Dialer{Timeout: time.Second}
	conn, err = tls.DialWithDialer(dialer, "tcp", net.JoinHostPort(wio.LocalServingHost, fmt.Sprint(wio.LocalServingPort)),
		&tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11})
	if err == nil {
		_ = conn.Close()
		Fail("the webhook server accepted TLS 1.1")
	}
	conn, err = tls.DialWithDialer(dialer, "tcp", net.JoinHostPort(wio.LocalServingHost, fmt.Sprint(wio.LocalServingPort)),
		&tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}})
	Expect(err).NotTo(HaveOccurred())
	Expect(conn.ConnectionState().NegotiatedProtocol).To(Equal("http/1.1"), "HTTP/2 must be off unless --enable-http2")
	_ = conn.Close()
}

// configYAML renders the built-in configuration, changed by edit, as a
// configuration file. host-network-endpoint's verification is Off: envtest
// has no nodes and no node agents, and the specs of what a rewrite changes
// are not about where it is allowed; the verification specs
// (verification_test.go) turn it on.
func configYAML(edit func(*config.PolicyConfiguration)) string {
	c := config.Default()
	hostNetworkSettings(c).Verification = hostnetwork.VerificationOff
	// The ConfigMap Cilium's k8sServiceHostRef names in the CNI fixtures,
	// as a platform adds it (and its Role: installRBAC).
	c.EndpointConfigMaps = append(c.EndpointConfigMaps, ciliumAPIEndpoint.Namespace+"/"+ciliumAPIEndpoint.Name)
	if edit != nil {
		edit(c)
	}
	out, err := yaml.Marshal(c)
	Expect(err).NotTo(HaveOccurred())
	return string(out)
}

// hostNetworkSettings are c's host-network-endpoint settings, to edit.
func hostNetworkSettings(c *config.PolicyConfiguration) *hostnetwork.Settings {
	return c.Policies[hostnetwork.ID].Settings.(*hostnetwork.Settings)
}

// writeConfig replaces the running server's configuration file and waits
// until the server has read it (valid or not): a spec never starts while the
// previous one's configuration is still in force.
func writeConfig(content string) {
	GinkgoHelper()
	if old, err := os.ReadFile(configFile); err == nil && string(old) == content {
		return // no change, nothing to reload
	}
	reloads := func() float64 {
		return counter("endpoint_policy_config_reloads_total", map[string]string{"result": "success"}) + reloadErrors()
	}
	before := reloads()
	writeConfigFile(content)
	Eventually(reloads).WithTimeout(settle).WithPolling(polling).Should(BeNumerically(">", before), "the server reads the new configuration")
}

func writeConfigFile(content string) {
	GinkgoHelper()
	// Write then rename, as a ConfigMap update does, so that the server never
	// reads half a file.
	tmp := configFile + ".tmp"
	Expect(os.WriteFile(tmp, []byte(content), 0o600)).To(Succeed())
	Expect(os.Rename(tmp, configFile)).To(Succeed())
}

// serverNamespace and serverServiceAccount are config/rbac's.
const serverNamespace, serverServiceAccount = "endpoint-policy", "endpoint-policy"

// installRBAC creates the server's namespace and applies config/rbac (the
// chart's RBAC, test/chart keeps them equal), and returns a configuration
// that impersonates the server's ServiceAccount. envtest's API server
// authorizes with RBAC.
func installRBAC(ctx context.Context) *rest.Config {
	GinkgoHelper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: serverNamespace}}
	Expect(k8s.Create(ctx, ns)).To(Succeed())
	dir := filepath.Join("..", "..", "config", "rbac")
	entries, err := os.ReadDir(dir)
	Expect(err).NotTo(HaveOccurred())
	for _, e := range entries {
		if e.Name() == "kustomization.yaml" {
			continue
		}
		for _, obj := range readObjects(filepath.Join(dir, e.Name())) {
			// The CNIs' namespaces (endpoint_configmaps_role.yaml), as the
			// CNI would create them.
			if ns := obj.GetNamespace(); ns != "" {
				err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
				Expect(err == nil || apierrors.IsAlreadyExists(err)).To(BeTrue(), "namespace %s: %v", ns, err)
			}
			Expect(k8s.Create(ctx, obj)).To(Succeed(), e.Name())
		}
	}
	// What the chart renders for an endpointConfigMaps entry a platform
	// adds (test/chart TestEndpointConfigMapsValues).
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ciliumAPIEndpoint.Namespace, Name: "endpoint-policy-cilium-api-endpoint"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{ciliumAPIEndpoint.Name},
			Verbs: []string{"get", "list", "watch"}}}}
	Expect(k8s.Create(ctx, role)).To(Succeed())
	Expect(k8s.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: role.Namespace, Name: role.Name},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: serverServiceAccount, Namespace: serverNamespace}}})).To(Succeed())
	cfg := rest.CopyConfig(restConfig)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: serviceaccount.MakeUsername(serverNamespace, serverServiceAccount)}
	return cfg
}

// ciliumAPIEndpoint is the ConfigMap of the CNI fixtures' Cilium
// k8sServiceHostRef (internal/check/testdata/cni/cilium-hostref.yaml).
var ciliumAPIEndpoint = types.NamespacedName{Namespace: "kube-system", Name: "cilium-api-endpoint"}

// readObjects decodes the YAML documents of a file.
func readObjects(path string) []*unstructured.Unstructured {
	GinkgoHelper()
	f, err := os.Open(path)
	Expect(err).NotTo(HaveOccurred())
	defer f.Close()
	var out []*unstructured.Unstructured
	for d := utilyaml.NewYAMLOrJSONDecoder(f, 4096); ; {
		obj := &unstructured.Unstructured{}
		if err := d.Decode(&obj.Object); errors.Is(err, io.EOF) {
			return out
		} else {
			Expect(err).NotTo(HaveOccurred(), path)
		}
		out = append(out, obj)
	}
}

// grantLeaderElection gives the server's ServiceAccount config/rbac's leader
// election Role in namespace ns too.
func grantLeaderElection(ctx context.Context, ns string) {
	GinkgoHelper()
	for _, obj := range readObjects(filepath.Join("..", "..", "config", "rbac", "leader_election_role.yaml")) {
		obj.SetNamespace(ns)
		Expect(k8s.Create(ctx, obj)).To(Succeed())
	}
}

func freeAddr() string {
	GinkgoHelper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort()))
}

// newNamespace creates a namespace for one spec and deletes it afterwards.
func newNamespace(ctx context.Context, labels map[string]string) string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "ep-", Labels: labels}}
	Expect(k8s.Create(ctx, ns)).To(Succeed())
	DeferCleanup(func(ctx context.Context) {
		// envtest runs no namespace controller and no kubelet: delete the
		// pods now, so that no spec sees another spec's kube-apiservers.
		Expect(k8s.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace(ns.Name), client.GracePeriodSeconds(0))).To(Succeed())
		Expect(client.IgnoreNotFound(k8s.Delete(ctx, ns))).To(Succeed())
	})
	return ns.Name
}
