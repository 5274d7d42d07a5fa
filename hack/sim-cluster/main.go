// Command sim-cluster runs a simulated cluster (test/sim) by hand: the
// envtest API server, kube-controller-manager, kube-scheduler and kwok with
// --nodes kwok Nodes. It prints an administrator's kubeconfig and runs until
// Ctrl-C.
//
//	make sim-cluster NODES=50
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/endpoint-policy/endpoint-policy/test/sim"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "sim-cluster: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	nodes := flag.Int("nodes", 50, "kwok Nodes to create")
	logDir := flag.String("log-dir", filepath.Join("bin", "sim"), "where the processes' logs go")
	flag.Parse()
	if *nodes < 0 {
		return fmt.Errorf("--nodes %d: must not be negative", *nodes)
	}
	apiServer, assets, err := sim.AssetsFromEnv()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*logDir, 0o750); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	c, err := sim.Start(ctx, sim.Options{APIServerAssets: apiServer, Assets: assets, Nodes: *nodes, LogDir: *logDir})
	if err != nil {
		return err
	}
	defer c.Stop()
	fmt.Printf("Simulated cluster with %d Ready kwok nodes in %s.\n", *nodes, time.Since(start).Round(100*time.Millisecond))
	fmt.Printf("API server %s; logs in %s.\n\n  export KUBECONFIG=%s\n  kubectl get nodes\n\nCtrl-C stops it.\n", c.Config.Host, *logDir, c.Kubeconfig)
	for {
		select {
		case <-ctx.Done():
			fmt.Println("Stopping.")
			return nil
		case <-time.After(time.Second):
			if err := c.Healthy(); err != nil {
				return err
			}
		}
	}
}
