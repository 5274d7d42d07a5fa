package agent

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
	certutil "k8s.io/client-go/util/cert"

	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
)

// server is an httptest TLS server on 127.0.0.1 answering /readyz with
// status; its certificate (httptest's) names 127.0.0.1, ::1 and example.com.
func server(t *testing.T, status int) *httptest.Server {
	t.Helper()
	s := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" || r.Header.Get("Authorization") != "Bearer agent-token" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte("[-]etcd failed"))
	}))
	t.Cleanup(s.Close)
	return s
}

func caOf(s *httptest.Server) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
}

// otherCAServer serves /readyz on 127.0.0.1 with a self-signed
// certificate: a CA the cluster does not know.
func otherCAServer(t *testing.T) string {
	t.Helper()
	crt, key, err := certutil.GenerateSelfSignedCertKey("127.0.0.1", []net.IP{net.ParseIP("127.0.0.1")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: time.Second, Handler: http.NotFoundHandler()}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func TestCheck(t *testing.T) {
	ok, notReady := server(t, http.StatusOK), server(t, http.StatusInternalServerError)
	addr := func(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "https://") }
	_, okPort, _ := net.SplitHostPort(addr(ok))
	cfg := &rest.Config{BearerToken: "agent-token", TLSClientConfig: rest.TLSClientConfig{CAData: caOf(ok)}}
	noToken := &rest.Config{TLSClientConfig: rest.TLSClientConfig{CAData: caOf(ok)}}
	tests := []struct {
		name     string
		cfg      *rest.Config
		endpoint string
		want     hostnetwork.Status
		message  string
	}{
		{"verified", cfg, addr(ok), hostnetwork.StatusVerified, "is ready"},
		{"name not in the certificate", cfg, net.JoinHostPort("localhost", okPort), hostnetwork.StatusCertificateNotValidForHost,
			`not valid for "localhost" (it names example.com, *.example.com, 127.0.0.1, ::1)`},
		{"another CA", cfg, otherCAServer(t), hostnetwork.StatusUnknownAuthority, "the cluster CA did not sign"},
		{"not ready", cfg, addr(notReady), hostnetwork.StatusNotReady, "answered 500 Internal Server Error: [-]etcd failed"},
		{"credentials refused", noToken, addr(ok), hostnetwork.StatusUnauthorized, "answered 401 Unauthorized"},
		{"nothing listens", cfg, closedAddr(t), hostnetwork.StatusUnreachable, "connection refused"},
		{"not host:port", cfg, "localhost", hostnetwork.StatusUnreachable, "not host:port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Check(context.Background(), tt.cfg, tt.endpoint, 2*time.Second)
			if got.Endpoint != tt.endpoint || got.Status != tt.want || !strings.Contains(got.Message, tt.message) {
				t.Fatalf("Check = %+v, want status %s and a message containing %q", got, tt.want, tt.message)
			}
		})
	}
}

func TestRoundPublishesOnChangeAndHeartbeat(t *testing.T) {
	ok := server(t, http.StatusOK)
	endpoint := strings.TrimPrefix(ok.URL, "https://")
	host, port, _ := net.SplitHostPort(endpoint)
	portNumber, _ := strconv.Atoi(port)

	clients := fake.NewClientset()
	var writes []string
	clients.PrependReactor("*", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetVerb() == "create" || a.GetVerb() == "update" {
			writes = append(writes, a.GetVerb())
		}
		return false, nil, nil
	})
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	a := &Agent{
		opts:   Options{NodeName: "worker-1", Namespace: "ep", Interval: time.Second, Heartbeat: time.Minute, Timeout: 2 * time.Second},
		rest:   &rest.Config{BearerToken: "agent-token", TLSClientConfig: rest.TLSClientConfig{CAData: caOf(ok)}},
		leases: clients.CoordinationV1().Leases("ep"), log: logr.Discard(),
		now: func() time.Time { return now },
	}
	a.settings = hostnetwork.DefaultSettings()
	a.settings.Host, a.settings.Port = host, int32(portNumber)
	a.settings.Candidates = []string{closedAddr(t)}
	round := func() {
		t.Helper()
		rep := a.check(context.Background())
		if err := a.publish(context.Background(), rep); err != nil {
			t.Fatal(err)
		}
	}

	round()
	lease, err := clients.CoordinationV1().Leases("ep").Get(context.Background(), "endpoint-policy-node-worker-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r, expires, err := hostnetwork.ReportOf(lease)
	if err != nil {
		t.Fatal(err)
	}
	if r.Endpoint != endpoint || len(r.Checks) != 2 || r.Checks[0].Status != hostnetwork.StatusVerified ||
		r.Checks[1].Status != hostnetwork.StatusUnreachable || !expires.Equal(now.Add(3*time.Minute)) {
		t.Fatalf("report %+v, expires %s", r, expires)
	}

	// Nothing changed, heartbeat not due: no write.
	now = now.Add(30 * time.Second)
	round()
	if len(writes) != 1 {
		t.Fatalf("writes %v, want only the create", writes)
	}
	// The heartbeat is due.
	now = now.Add(30 * time.Second)
	round()
	if len(writes) != 2 || writes[1] != "update" {
		t.Fatalf("writes %v, want create and one heartbeat update", writes)
	}
	// The endpoint stops answering: written at once.
	ok.Close()
	now = now.Add(time.Second)
	round()
	if len(writes) != 3 {
		t.Fatalf("writes %v, want the change written", writes)
	}
	lease, err = clients.CoordinationV1().Leases("ep").Get(context.Background(), "endpoint-policy-node-worker-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r, _, _ = hostnetwork.ReportOf(lease); r.Endpoint != "" || r.Status() != hostnetwork.StatusUnreachable {
		t.Fatalf("report after the endpoint went: %+v", r)
	}

}

func TestHint(t *testing.T) {
	s := hostnetwork.DefaultSettings()
	checks := []hostnetwork.Check{
		{Endpoint: "localhost:7443", Status: hostnetwork.StatusUnreachable},
		{Endpoint: "127.0.0.1:7445", Status: hostnetwork.StatusVerified},
	}
	got := hint(s, checks)
	want := "; but 127.0.0.1:7445 is this cluster's API server (Talos KubePrism) here: set host 127.0.0.1 and port 7445, or host: auto"
	if got != want {
		t.Fatalf("hint = %q, want %q", got, want)
	}
	if got := hint(s, checks[:1]); got != "" {
		t.Fatalf("hint without a verified candidate = %q", got)
	}
}
