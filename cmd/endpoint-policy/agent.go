package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/endpoint-policy/endpoint-policy/internal/agent"
	"github.com/endpoint-policy/endpoint-policy/internal/version"
)

// agentCommand runs `endpoint-policy agent`: host-network-endpoint's node
// agent.
func agentCommand(args []string, stderr io.Writer) int {
	opts := agent.DefaultOptions()
	var kubeconfig string
	fs := flag.NewFlagSet("endpoint-policy agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&kubeconfig, "kubeconfig", "",
		"Path to a kubeconfig: the API client, the cluster CA the endpoints are verified against, and the credentials /readyz is asked with. "+
			"Only required outside a pod; defaults to $KUBECONFIG, then the pod's ServiceAccount.")
	fs.StringVar(&opts.ConfigFile, "config", "",
		"Policy configuration file (PolicyConfiguration), the server's: host-network-endpoint's host, port and candidates. Read again every interval. Built-in defaults when not set.")
	fs.StringVar(&opts.NodeName, "node-name", os.Getenv("NODE_NAME"), "The node the agent runs on; defaults to $NODE_NAME.")
	fs.StringVar(&opts.Namespace, "namespace", os.Getenv("POD_NAMESPACE"),
		"Release namespace, where the node's Lease is written; defaults to $POD_NAMESPACE.")
	fs.DurationVar(&opts.Interval, "interval", opts.Interval, "How often the endpoints are checked.")
	fs.DurationVar(&opts.Heartbeat, "heartbeat", opts.Heartbeat,
		"How often the Lease is written when nothing changed; the webhook counts a report older than 3 heartbeats as stale.")
	fs.DurationVar(&opts.Timeout, "timeout", opts.Timeout, "How long one endpoint's check may take; at most --interval. When not set, the default or --interval, whichever is shorter.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "endpoint-policy agent: unexpected arguments %q\n", fs.Args())
		return 2
	}
	// A default the user did not choose must not refuse the interval they
	// did (the documented `--interval 1s`): only an explicit --timeout
	// longer than --interval is an error.
	if !flagSet(fs, "timeout") {
		opts.Timeout = min(opts.Timeout, opts.Interval)
	}
	if err := opts.Validate(); err != nil {
		fmt.Fprintf(stderr, "endpoint-policy agent: %v\n", err)
		return 2
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	log := ctrl.Log.WithName("agent")
	log.Info("Starting endpoint-policy agent", "version", version.Get().Version)

	restConfig, err := loadRESTConfig(kubeconfig)
	if err != nil {
		fmt.Fprintf(stderr, "endpoint-policy agent: %v\n", err)
		return 1
	}
	a, err := agent.New(opts, restConfig, log)
	if err != nil {
		fmt.Fprintf(stderr, "endpoint-policy agent: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := a.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "endpoint-policy agent: %v\n", err)
		return 1
	}
	return 0
}

// flagSet reports whether the command line set the flag name.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
