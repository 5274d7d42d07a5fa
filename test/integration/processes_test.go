package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	"k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/endpoint-policy/endpoint-policy/internal/testing/proctest"
)

// The fault specs run `endpoint-policy serve` as separate processes (so that
// they can be killed and stopped with signals), authenticated as the chart's
// ServiceAccount, behind a TCP load balancer on loopback that stands in for
// the Service: it sends each new connection to a ready backend, as kube-proxy
// does with a Service's ready endpoints.

var (
	buildOnce        sync.Once
	serverBinaryPath string
	saKubeconfigPath string
)

// serverBinary builds cmd/endpoint-policy once per suite run, and writes a
// kubeconfig authenticating as the server's ServiceAccount.
func serverBinary() string {
	GinkgoHelper()
	buildOnce.Do(func() {
		serverBinaryPath = goBuild("./cmd/endpoint-policy")
		dir := filepath.Dir(serverBinaryPath)
		sa, err := testEnv.AddUser(envtest.User{
			Name:   serviceaccount.MakeUsername(serverNamespace, serverServiceAccount),
			Groups: serviceaccount.MakeGroupNames(serverNamespace),
		}, nil)
		Expect(err).NotTo(HaveOccurred())
		kc, err := sa.KubeConfig()
		Expect(err).NotTo(HaveOccurred())
		saKubeconfigPath = filepath.Join(dir, "kubeconfig")
		Expect(os.WriteFile(saKubeconfigPath, kc, 0o600)).To(Succeed())
	})
	return serverBinaryPath
}

// builtDirs are goBuild's directories, removed after the suite.
var builtDirs sync.Map

var _ = AfterSuite(func() {
	builtDirs.Range(func(dir, _ any) bool {
		Expect(os.RemoveAll(dir.(string))).To(Succeed())
		return true
	})
})

// goBuild builds the main package pkg of the module into a temporary
// directory and returns the binary's path: race-instrumented, except for the
// benchmarks, which measure the binary users run (proctest.GoBuild).
func goBuild(pkg string) string {
	GinkgoHelper()
	dir, err := os.MkdirTemp("", "endpoint-policy-it-")
	Expect(err).NotTo(HaveOccurred())
	builtDirs.Store(dir, true)
	bin := filepath.Join(dir, filepath.Base(pkg))
	build := exec.Command("go", proctest.GoBuild(os.Getenv(BenchEnv) == "", "-o", bin, pkg)...)
	build.Dir = filepath.Join("..", "..")
	out, err := build.CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "go build %s: %s", pkg, out)
	return bin
}

// replica is one `endpoint-policy serve` process.
type replica struct {
	name       string
	cmd        *exec.Cmd
	port       int
	healthAddr string
	logs       logSink
	exited     chan struct{}
	exitErr    error
}

// logSink holds a replica's output, for the report of a failed spec.
type logSink interface {
	io.Writer
	String() string
}

// fileLog is a logSink on a file: the benchmarks' replicas write their logs
// there, as a container runtime does, instead of into the test's memory.
type fileLog struct{ *os.File }

// newFileLog creates name in the spec's temporary directory.
func newFileLog(name string) fileLog {
	GinkgoHelper()
	f, err := os.Create(filepath.Join(GinkgoT().TempDir(), name))
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(f.Close)
	return fileLog{f}
}

func (f fileLog) String() string {
	b, err := os.ReadFile(f.Name())
	if err != nil {
		return err.Error()
	}
	return string(b)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startReplica runs the server with the suite's serving certificate (or
// certDir), no metrics, the built-in configuration, and extra flags, and waits
// until it is ready. It is killed when the spec ends.
func startReplica(name, certDir string, extra ...string) *replica {
	GinkgoHelper()
	return launchReplica(name, certDir, &syncBuffer{}, extra)
}

func launchReplica(name, certDir string, logs logSink, extra []string) *replica {
	GinkgoHelper()
	bin := serverBinary()
	if certDir == "" {
		certDir = testEnv.WebhookInstallOptions.LocalServingCertDir
	}
	port := freePort()
	r := &replica{name: name, port: port, healthAddr: freeAddr(), logs: logs, exited: make(chan struct{})}
	// The suite's configuration (verification Off: no node agents here); a
	// --config in extra comes later and wins.
	configPath := filepath.Join(GinkgoT().TempDir(), "config.yaml")
	Expect(os.WriteFile(configPath, []byte(configYAML(nil)), 0o600)).To(Succeed())
	args := append([]string{"serve",
		"--kubeconfig=" + saKubeconfigPath,
		"--config=" + configPath,
		"--namespace=" + serverNamespace,
		fmt.Sprintf("--webhook-port=%d", port),
		"--cert-dir=" + certDir,
		"--metrics-bind-address=0",
		"--health-probe-bind-address=" + r.healthAddr,
		"--shutdown-delay=1s",
	}, extra...)
	r.cmd = exec.Command(bin, args...)
	r.cmd.Stdout, r.cmd.Stderr = r.logs, r.logs
	Expect(r.cmd.Start()).To(Succeed())
	go func() {
		r.exitErr = r.cmd.Wait()
		close(r.exited)
	}()
	DeferCleanup(func() {
		_ = r.cmd.Process.Kill()
		<-r.exited
		if CurrentSpecReport().Failed() {
			AddReportEntry("logs of replica "+name, r.logs.String())
		}
	})
	Eventually(func() (int, error) {
		select {
		case <-r.exited:
			return 0, StopTrying(fmt.Sprintf("replica %s exited: %v\n%s", name, r.exitErr, r.logs))
		default:
		}
		return httpStatus("http://" + r.healthAddr + "/readyz")
	}).WithTimeout(settle).WithPolling(100*time.Millisecond).Should(Equal(http.StatusOK), "replica %s ready", name)
	return r
}

func (r *replica) addr() string { return fmt.Sprintf("127.0.0.1:%d", r.port) }

func (r *replica) signal(s os.Signal) {
	GinkgoHelper()
	Expect(r.cmd.Process.Signal(s)).To(Succeed())
}

// waitExit waits for the process to end and returns how long that took.
func (r *replica) waitExit(timeout time.Duration) (time.Duration, error) {
	GinkgoHelper()
	start := time.Now()
	select {
	case <-r.exited:
		return time.Since(start), r.exitErr
	case <-time.After(timeout):
		Fail(fmt.Sprintf("replica %s still running after %s", r.name, timeout))
		return 0, nil
	}
}

func httpStatus(url string) (int, error) {
	c := &http.Client{Timeout: time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

func freePort() int {
	GinkgoHelper()
	for {
		// All interfaces, as the server binds its webhook port.
		l, err := net.Listen("tcp", ":0")
		Expect(err).NotTo(HaveOccurred())
		port := l.Addr().(*net.TCPAddr).Port
		Expect(l.Close()).To(Succeed())
		// The kernel may hand a released port out again: never give the
		// same one twice (a replica's webhook and health ports collided).
		if _, taken := handedOut.LoadOrStore(port, true); !taken {
			return port
		}
	}
}

// handedOut holds the ports freePort returned.
var handedOut sync.Map

// loadBalancer forwards TCP connections on a loopback port to its ready
// backends, round robin, and checks their /readyz every 100 ms (as the
// endpoints controller and kube-proxy do, faster). With stall set it accepts
// connections and never answers.
type loadBalancer struct {
	ln       net.Listener
	mu       sync.Mutex
	backends []*backend
	next     int
	stall    atomic.Bool
	done     chan struct{}
}

type backend struct {
	r     *replica
	ready atomic.Bool
}

func newLoadBalancer() *loadBalancer {
	GinkgoHelper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	lb := &loadBalancer{ln: ln, done: make(chan struct{})}
	go lb.serve()
	go lb.check()
	DeferCleanup(func() {
		close(lb.done)
		_ = ln.Close()
	})
	return lb
}

func (lb *loadBalancer) addr() string { return lb.ln.Addr().String() }

func (lb *loadBalancer) add(r *replica) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	lb.backends = append(lb.backends, &backend{r: r})
}

func (lb *loadBalancer) remove(r *replica) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	for i, b := range lb.backends {
		if b.r == r {
			lb.backends = append(lb.backends[:i], lb.backends[i+1:]...)
			return
		}
	}
}

// isReady says whether r is a ready backend now.
func (lb *loadBalancer) isReady(r *replica) bool {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	for _, b := range lb.backends {
		if b.r == r {
			return b.ready.Load()
		}
	}
	return false
}

func (lb *loadBalancer) check() {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-lb.done:
			return
		case <-t.C:
		}
		lb.mu.Lock()
		bs := append([]*backend(nil), lb.backends...)
		lb.mu.Unlock()
		for _, b := range bs {
			code, err := httpStatus("http://" + b.r.healthAddr + "/readyz")
			b.ready.Store(err == nil && code == http.StatusOK)
		}
	}
}

func (lb *loadBalancer) pick() *backend {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	for range lb.backends {
		b := lb.backends[lb.next%len(lb.backends)]
		lb.next++
		if b.ready.Load() {
			return b
		}
	}
	return nil
}

func (lb *loadBalancer) serve() {
	for {
		conn, err := lb.ln.Accept()
		if err != nil {
			return
		}
		go lb.forward(conn)
	}
}

func (lb *loadBalancer) forward(conn net.Conn) {
	defer conn.Close()
	if lb.stall.Load() {
		select {
		case <-lb.done:
		case <-time.After(time.Minute):
		}
		return
	}
	b := lb.pick()
	if b == nil {
		return // no ready backend: the connection is refused, in effect
	}
	up, err := net.Dial("tcp", b.r.addr())
	if err != nil {
		return
	}
	defer up.Close()
	copied := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, conn); copied <- struct{}{} }()
	go func() { _, _ = io.Copy(conn, up); copied <- struct{}{} }()
	<-copied // either side closing ends the pair
}

// faultWebhook registers a copy of the mutating webhook of config/webhook,
// sending to url, for namespace ns only, with the given failure policy and
// timeout and caBundle (nil: the suite's serving CA). It runs inside
// withoutWebhooks, so that the suite's own server is not called as well.
func faultWebhook(ctx context.Context, ns, url string, failurePolicy admissionregistrationv1.FailurePolicyType, timeoutSeconds int32, caBundle []byte) {
	GinkgoHelper()
	src := testEnv.WebhookInstallOptions.MutatingWebhooks[0]
	c := &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "fault-" + ns}}
	c.Webhooks = []admissionregistrationv1.MutatingWebhook{*src.Webhooks[0].DeepCopy()}
	w := &c.Webhooks[0]
	if caBundle == nil {
		caBundle = testEnv.WebhookInstallOptions.LocalServingCAData
	}
	w.ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caBundle}
	w.FailurePolicy = &failurePolicy
	w.TimeoutSeconds = &timeoutSeconds
	w.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: ns}}
	Expect(k8s.Create(ctx, c)).To(Succeed())
	DeferCleanup(func(ctx context.Context) { Expect(client.IgnoreNotFound(k8s.Delete(ctx, c))).To(Succeed()) })
}

// untilMutated waits until the API server calls the fault webhook of ns
// (its configuration informer takes a moment): a dry-run pod is rewritten.
func untilMutated(ctx context.Context, ns string) {
	GinkgoHelper()
	Eventually(func() (int, error) {
		p := pod(ns, true, nil)
		err := k8s.Create(ctx, p, client.DryRunAll)
		return len(p.Spec.Containers[0].Env), err
	}).WithTimeout(settle).WithPolling(polling).Should(BeNumerically(">", 0))
}

// load creates hostNetwork pods in a namespace from several goroutines, as
// fast as the API server admits them, and counts what happened.
type load struct {
	created, failed, unrewritten atomic.Int64
	mu                           sync.Mutex
	errs                         []error
	stop                         chan struct{}
	wg                           sync.WaitGroup
}

func startLoad(ctx context.Context, ns string, workers int) *load {
	l := &load{stop: make(chan struct{})}
	for range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer GinkgoRecover()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				p := pod(ns, true, nil)
				if err := k8s.Create(ctx, p); err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					if len(l.errs) < 5 {
						l.errs = append(l.errs, err)
					}
					l.mu.Unlock()
					continue
				}
				l.created.Add(1)
				if len(p.Spec.Containers[0].Env) == 0 {
					l.unrewritten.Add(1)
				}
			}
		}()
	}
	DeferCleanup(l.end)
	return l
}

// waitFor waits until n more pods have been created.
func (l *load) waitFor(n int64) {
	GinkgoHelper()
	target := l.created.Load() + n
	Eventually(l.created.Load).WithTimeout(settle).WithPolling(10 * time.Millisecond).Should(BeNumerically(">=", target))
}

func (l *load) end() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

func (l *load) errors() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]error(nil), l.errs...)
}

// testCA signs serving certificates for 127.0.0.1, so that a spec can rotate
// a replica's certificate to one the API server trusts.
type testCA struct {
	cert *x509.Certificate
	key  *rsa.PrivateKey
	pem  []byte
}

func newTestCA() *testCA {
	GinkgoHelper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	Expect(err).NotTo(HaveOccurred())
	c, err := cert.NewSelfSignedCACert(cert.Config{CommonName: "endpoint-policy-test-ca"}, key)
	Expect(err).NotTo(HaveOccurred())
	return &testCA{cert: c, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: cert.CertificateBlockType, Bytes: c.Raw})}
}

var serial atomic.Int64

// issue returns a new serving certificate for 127.0.0.1 (PEM) and its key.
func (ca *testCA) issue() (crtPEM, keyPEM []byte) {
	GinkgoHelper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	Expect(err).NotTo(HaveOccurred())
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano() + serial.Add(1)),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	Expect(err).NotTo(HaveOccurred())
	keyPEM, err = keyutil.MarshalPrivateKeyToPEM(key)
	Expect(err).NotTo(HaveOccurred())
	return pem.EncodeToMemory(&pem.Block{Type: cert.CertificateBlockType, Bytes: der}), keyPEM
}

// writePair replaces tls.crt and tls.key in dir, each by a rename, as the
// kubelet updates a Secret volume.
func writePair(dir string, crt, key []byte) {
	GinkgoHelper()
	for name, data := range map[string][]byte{"tls.key": key, "tls.crt": crt} {
		tmp := filepath.Join(dir, "."+name+".tmp")
		Expect(os.WriteFile(tmp, data, 0o600)).To(Succeed())
		Expect(os.Rename(tmp, filepath.Join(dir, name))).To(Succeed())
	}
}

// servedSerialAt returns the serial of the certificate served at addr.
func servedSerialAt(addr string) (string, error) {
	conn, err := tlsDial(addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
}

// kubeconfigOf writes a kubeconfig for a user without any RBAC: it can
// discover the API (system:discovery) and nothing more, so that every list
// and watch of a server running with it fails and its caches stay cold.
func kubeconfigOf(user string) string {
	GinkgoHelper()
	return kubeconfigFor(user)
}

func tlsDial(addr string) (*tls.Conn, error) {
	return tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr,
		&tls.Config{InsecureSkipVerify: true})
}

// terminate sends SIGTERM.
func (r *replica) terminate() { r.signal(syscall.SIGTERM) }

// kill sends SIGKILL.
func (r *replica) kill() { r.signal(syscall.SIGKILL) }
