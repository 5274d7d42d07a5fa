// Command endpoint-policy keeps how cluster components reach and advertise
// the Kubernetes API server safe.
//
//	endpoint-policy serve [flags]          run the admission webhook server
//	endpoint-policy agent [flags]          verify the node-local API endpoint on this node
//	endpoint-policy check -f PATH [flags]  check manifests offline
//	endpoint-policy version                print the version
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/client/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/endpoint-policy/endpoint-policy/internal/server"
	"github.com/endpoint-policy/endpoint-policy/internal/version"
)

const usage = `endpoint-policy keeps how cluster components reach and advertise the API server safe.

Usage:
  endpoint-policy serve [flags]          run the admission webhook server
  endpoint-policy agent [flags]          verify the node-local API endpoint on this node (a DaemonSet)
  endpoint-policy check -f PATH [flags]  check manifests offline, without a cluster
  endpoint-policy version                print the version

Run "endpoint-policy <command> -h" for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one subcommand and returns the process exit code: 0 on
// success, 1 when the command fails, 2 for a usage error.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stderr)
	case "agent":
		return agentCommand(args[1:], stderr)
	case "check":
		return checkCommand(args[1:], os.Stdin, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, version.Get())
		return 0
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "endpoint-policy: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

func serve(args []string, stderr io.Writer) int {
	opts := server.DefaultOptions()
	var kubeconfig string
	fs := flag.NewFlagSet("endpoint-policy serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&kubeconfig, "kubeconfig", "",
		"Path to a kubeconfig. Only required if out-of-cluster; defaults to $KUBECONFIG, then in-cluster configuration, then ~/.kube/config.")
	fs.IntVar(&opts.WebhookPort, "webhook-port", opts.WebhookPort, "Port the admission webhook server listens on.")
	fs.StringVar(&opts.WebhookHost, "webhook-bind-address", "",
		"IP address the admission webhook server listens on (the node's, for a hostNetwork install: the chart passes $(HOST_IP); 127.0.0.1 or ::1 for an API server on the same machine); every address when empty.")
	fs.StringVar(&opts.CertDir, "cert-dir", opts.CertDir,
		"Directory holding the webhook serving certificate, tls.crt and tls.key; reloaded when they change.")
	fs.StringVar(&opts.ConfigFile, "config", "",
		"Policy configuration file (PolicyConfiguration); reloaded when it changes. Built-in defaults when not set.")
	fs.StringVar(&opts.MetricsBindAddress, "metrics-bind-address", opts.MetricsBindAddress,
		"Address the Prometheus metrics endpoint binds to; 0 disables it.")
	fs.StringVar(&opts.HealthProbeBindAddress, "health-probe-bind-address", opts.HealthProbeBindAddress,
		"Address the /healthz and /readyz endpoints bind to.")
	fs.StringVar(&opts.PprofBindAddress, "pprof-bind-address", "0",
		"Address Go's /debug/pprof endpoints bind to, plain HTTP without authentication (profiling on a trusted address such as 127.0.0.1:6060); 0 disables them.")
	fs.BoolVar(&opts.LeaderElect, "leader-elect", false,
		"Elect a leader for the controllers, so that only one replica runs them.")
	fs.StringVar(&opts.LeaderElectionNamespace, "leader-election-namespace", "",
		"Namespace of the leader election Lease; defaults to the namespace the server runs in.")
	fs.StringVar(&opts.Namespace, "namespace", os.Getenv("POD_NAMESPACE"),
		"Release namespace, where the node agents' Leases are; defaults to $POD_NAMESPACE, then --leader-election-namespace, then the namespace the server runs in.")
	fs.DurationVar(&opts.LeaseDuration, "leader-election-lease-duration", 15*time.Second,
		"How long a leader's Lease lasts without renewal: the longest the controllers stand still after the leader dies.")
	fs.DurationVar(&opts.RenewDeadline, "leader-election-renew-deadline", 10*time.Second,
		"How long the leader keeps trying to renew its Lease before it steps down.")
	fs.DurationVar(&opts.RetryPeriod, "leader-election-retry-period", 2*time.Second,
		"How often candidates try to acquire or renew the Lease.")
	fs.BoolVar(&opts.EnableHTTP2, "enable-http2", false,
		"Serve HTTP/2 on the webhook and metrics ports. Off by default (the API server speaks HTTP/1.1 to webhooks; CVE-2023-44487).")
	tlsMin := fs.String("tls-min-version", "1.2", "Lowest TLS version the webhook and metrics servers accept: 1.2 or 1.3.")
	fs.BoolVar(&opts.MetricsSecure, "metrics-secure", opts.MetricsSecure,
		"Serve /metrics over HTTPS to authenticated and authorized clients only (TokenReview, SubjectAccessReview for get /metrics). "+
			"false serves plain HTTP to anyone who can reach the port.")
	fs.StringVar(&opts.MetricsCertDir, "metrics-cert-dir", "",
		"Directory holding the metrics serving certificate, tls.crt and tls.key; a self-signed certificate when not set.")
	fs.StringVar(&opts.WebhookConfigurations, "webhook-configurations", "",
		"File of endpoint-policy's webhook configurations as installed (a YAML stream; the chart's -webhooks ConfigMap): the leader reports "+
			"every field of the live ones that differs (endpoint_policy_webhook_configuration_drift, an Event, a log line) and changes nothing. Off when not set.")
	fs.DurationVar(&opts.ShutdownDelay, "shutdown-delay", opts.ShutdownDelay,
		"On SIGTERM, keep serving this long while reporting not-ready and closing kept-alive connections after their next response; "+
			"then stop accepting connections and finish in-flight requests.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2 // the flag package printed the problem and the usage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "endpoint-policy serve: unexpected arguments %q\n", fs.Args())
		return 2
	}
	switch *tlsMin {
	case "1.2", "VersionTLS12":
		opts.TLSMinVersion = tls.VersionTLS12
	case "1.3", "VersionTLS13":
		opts.TLSMinVersion = tls.VersionTLS13
	default:
		fmt.Fprintf(stderr, "endpoint-policy serve: --tls-min-version %q: must be 1.2 or 1.3\n", *tlsMin)
		return 2
	}
	if opts.ShutdownDelay < 0 {
		fmt.Fprintf(stderr, "endpoint-policy serve: --shutdown-delay %s: must not be negative\n", opts.ShutdownDelay)
		return 2
	}
	if opts.WebhookPort < 1 || opts.WebhookPort > 65535 {
		fmt.Fprintf(stderr, "endpoint-policy serve: --webhook-port %d: must be between 1 and 65535\n", opts.WebhookPort)
		return 2
	}
	if _, err := netip.ParseAddr(opts.WebhookHost); opts.WebhookHost != "" && err != nil {
		fmt.Fprintf(stderr, "endpoint-policy serve: --webhook-bind-address %q: must be an IP address (or empty for every address)\n", opts.WebhookHost)
		return 2
	}

	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	log := ctrl.Log.WithName("endpoint-policy")
	log.Info("Starting endpoint-policy", "version", version.Get().Version)

	// Local inputs first: a bad certificate or configuration file is named
	// as such, whatever the state of the cluster connection.
	srv, err := server.New(opts)
	if err != nil {
		fmt.Fprintf(stderr, "endpoint-policy serve: %v\n", err)
		return 1
	}
	restConfig, err := loadRESTConfig(kubeconfig)
	if err != nil {
		fmt.Fprintf(stderr, "endpoint-policy serve: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := srv.Run(ctrl.LoggerInto(ctx, log), restConfig); err != nil {
		log.Error(err, "Server failed")
		fmt.Fprintf(stderr, "endpoint-policy serve: %v\n", err)
		return 1
	}
	return 0
}

func loadRESTConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		cfg, err := ctrlconfig.GetConfig()
		if err != nil {
			return nil, fmt.Errorf("no cluster configuration (set --kubeconfig): %w", err)
		}
		return cfg, nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
	}
	if cfg.QPS == 0 {
		// As ctrlconfig.GetConfig does: no client-side rate limit (client-go's
		// default is 5 requests/s), the API server's priority and fairness
		// protects it.
		cfg.QPS = -1
	}
	return cfg, nil
}
