// Package loopback serves stand-ins for a node's local API endpoints on
// 127.0.0.1, for the tests and the demo that run node agents: a TCP
// pass-through balancer in front of a real API server, and TLS servers
// answering /readyz with a certificate from a CA of the caller's.
package loopback

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"sync"
	"time"

	certutil "k8s.io/client-go/util/cert"
)

// CA is a certificate authority that issues serving certificates.
type CA struct {
	cert *x509.Certificate
	key  *rsa.PrivateKey
	// PEM is the CA's certificate, for a trust bundle.
	PEM []byte
}

// NewCA returns a new self-signed CA.
func NewCA(name string) (*CA, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	c, err := certutil.NewSelfSignedCACert(certutil.Config{CommonName: name}, key)
	if err != nil {
		return nil, err
	}
	return &CA{cert: c, key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: certutil.CertificateBlockType, Bytes: c.Raw})}, nil
}

// Issue returns a serving certificate for the names and addresses, valid
// for an hour.
func (ca *CA) Issue(dnsNames []string, ips []net.IP) (tls.Certificate, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "kube-apiserver"},
		DNSNames: dnsNames, IPAddresses: ips,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// Server is a listener on 127.0.0.1; Close stops it.
type Server struct {
	ln    net.Listener
	close func()
}

// Addr is the server's "127.0.0.1:<port>".
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server and closes its connections.
func (s *Server) Close() { s.close() }

// ServeReadyz serves every request with status over TLS with cert. Failed
// handshakes (the point of a certificate without the host) are not logged.
func ServeReadyz(cert tls.Certificate, status int) (*Server, error) {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		return nil, err
	}
	srv := &http.Server{ReadHeaderTimeout: time.Second, ErrorLog: log.New(io.Discard, "", 0),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(status)
			_, _ = io.WriteString(w, http.StatusText(status))
		})}
	go func() { _ = srv.Serve(ln) }()
	return &Server{ln: ln, close: func() { _ = srv.Close() }}, nil
}

// Proxy passes every connection through to target, as a node-local
// balancer (k0s' Envoy, kubespray's nginx) does for the API servers.
func Proxy(target string) (*Server, error) {
	ctx, stop := context.WithCancel(context.Background())
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		stop()
		return nil, err
	}
	var wg sync.WaitGroup
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { pass(ctx, conn, target) })
		}
	}()
	return &Server{ln: ln, close: func() {
		_ = ln.Close()
		stop()
		wg.Wait()
	}}, nil
}

// pass copies both ways until either side closes or ctx ends.
func pass(ctx context.Context, conn net.Conn, target string) {
	defer conn.Close()
	up, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", target)
	if err != nil {
		return
	}
	defer up.Close()
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case <-ctx.Done():
		case <-finished:
		}
		_ = conn.Close()
		_ = up.Close()
	}()
	go func() { _, _ = io.Copy(up, conn); _ = up.Close() }()
	_, _ = io.Copy(conn, up)
}
