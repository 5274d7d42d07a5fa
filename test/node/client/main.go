// Command client is a hostNetwork pod's in-cluster API client, as
// cilium-operator's: rest.InClusterConfig (KUBERNETES_SERVICE_HOST and
// KUBERNETES_SERVICE_PORT, the ServiceAccount token and CA), then the
// server's version every half second, a line each: "ok <host>" or
// "error <host>: <why>". The real-node suite reads the lines from the
// kubelet's container log.
package main

import (
	"fmt"
	"os"
	"time"

	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
)

func main() {
	cfg, err := rest.InClusterConfig()
	if err != nil {
		fmt.Println("error config:", err)
		os.Exit(1)
	}
	// A request to an address that stopped answering fails in time.
	cfg.Timeout = 2 * time.Second
	client, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		fmt.Println("error client:", err)
		os.Exit(1)
	}
	for {
		if v, err := client.ServerVersion(); err != nil {
			fmt.Printf("error %s: %v\n", cfg.Host, err)
		} else {
			fmt.Printf("ok %s %s\n", cfg.Host, v.GitVersion)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
