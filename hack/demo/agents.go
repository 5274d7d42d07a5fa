package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
	"github.com/endpoint-policy/endpoint-policy/internal/testing/loopback"
	"github.com/endpoint-policy/endpoint-policy/internal/testing/warnings"
)

// demoNode is one made-up node and what answers on its node-local endpoint.
// All three "nodes" are this machine, so each agent is given the port that
// plays its node's localhost:7443.
type demoNode struct {
	name, what string
	port       string
}

// nodeAgents shows host-network-endpoint's verification: three nodes, an
// agent on each, and a pinned hostNetwork pod bound to each.
func nodeAgents(ctx context.Context, k8s client.Client, w *warnings.Recorder, binary, kubeconfig, configFile, work, apiServer, logDir string) error {
	step("host-network-endpoint, verification: Required: node agents check the endpoint on each node, the webhook decides per node")
	ca, err := loopback.NewCA("demo-cluster-ca")
	if err != nil {
		return err
	}
	balancer, err := loopback.Proxy(apiServer)
	if err != nil {
		return err
	}
	defer balancer.Close()
	// kubeadm's names without certSANs: no localhost.
	cert, err := ca.Issue([]string{"kubernetes", "kubernetes.default.svc"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		return err
	}
	badCert, err := loopback.ServeReadyz(cert, http.StatusOK)
	if err != nil {
		return err
	}
	defer badCert.Close()
	_, balancerPort, _ := net.SplitHostPort(balancer.Addr())
	_, badPort, _ := net.SplitHostPort(badCert.Addr())
	_, closedPort, _ := net.SplitHostPort(freeAddr())
	nodes := []demoNode{
		{"demo-worker-1", "a node-local balancer that passes TCP through to the API server", balancerPort},
		{"demo-worker-2", "no balancer: nothing listens", closedPort},
		{"demo-worker-3", "a server whose certificate, from the cluster CA, names 127.0.0.1 but not localhost (kubeadm without certSANs)", badPort},
	}

	// The webhook's configuration: localhost on worker-1's port.
	if err := writeConfigFile(configFile, agentConfig(balancerPort)); err != nil {
		return err
	}
	agentKubeconfig, err := withExtraCA(kubeconfig, ca.PEM, filepath.Join(work, "agent.kubeconfig"))
	if err != nil {
		return err
	}
	var agents []*exec.Cmd
	defer func() {
		for _, a := range agents {
			_ = a.Process.Kill()
			_ = a.Wait()
		}
	}()
	for _, n := range nodes {
		fmt.Printf("   node %s: %s (localhost:%s)\n", n.name, n.what, n.port)
		if err := k8s.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.name}}); err != nil {
			return err
		}
		path := filepath.Join(work, n.name+".yaml")
		if err := os.WriteFile(path, []byte(agentConfig(n.port)), 0o600); err != nil {
			return err
		}
		logFile, err := os.Create(filepath.Join(logDir, "agent-"+n.name+".log"))
		if err != nil {
			return err
		}
		cmd := exec.Command(binary, "agent", "--kubeconfig", agentKubeconfig, "--config", path, "--node-name", n.name,
			"--namespace", demoNamespace, "--interval", "1s", "--heartbeat", "10s", "--timeout", "1s")
		cmd.Stdout, cmd.Stderr = logFile, logFile
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("starting the agent of %s: %w", n.name, err)
		}
		agents = append(agents, cmd)
	}

	fmt.Printf("\n   $ kubectl -n %s get lease -l app.kubernetes.io/component=agent   (endpoint, results)\n", demoNamespace)
	for _, n := range nodes {
		lease := &coordinationv1.Lease{}
		key := client.ObjectKey{Namespace: demoNamespace, Name: hostnetwork.LeaseName(n.name)}
		if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			return k8s.Get(ctx, key, lease) == nil, nil
		}); err != nil {
			return fmt.Errorf("waiting for the Lease of %s (agent log in %s): %w", n.name, logDir, err)
		}
		var checks []hostnetwork.Check
		if err := json.Unmarshal([]byte(lease.Annotations[hostnetwork.ResultsAnnotation]), &checks); err != nil {
			return err
		}
		fmt.Printf("   %s  endpoint=%q\n", lease.Name, lease.Annotations[hostnetwork.EndpointAnnotation])
		for _, c := range checks {
			fmt.Printf("      %s %s: %s\n", c.Endpoint, c.Status, c.Message)
		}
	}

	fmt.Println("\n   A cilium-agent-like pod pinned to 10.0.1.16:6443, bound to each node:")
	for _, n := range nodes {
		// The webhook sees the Lease a moment after the API server has it.
		var p *corev1.Pod
		var msgs []string
		err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			p = pinnedPodOn(n.name)
			var err error
			msgs = w.During(func() { err = k8s.Create(ctx, p, client.DryRunAll) })
			return err == nil && (p.Annotations[hostnetwork.EndpointAnnotation] != "") == (n.name == "demo-worker-1"), err
		})
		if err != nil {
			return fmt.Errorf("pod on %s: %w", n.name, err)
		}
		fmt.Printf("   on %s: %s\n", n.name, envLine(p.Spec.Containers[0].Env))
		for _, m := range msgs {
			fmt.Printf("      Warning: %s\n", m)
		}
	}
	return nil
}

// demoNamespace is where the agents' Leases go, as the release namespace.
const demoNamespace = "default"

func agentConfig(port string) string {
	c := config.Default()
	s := c.Policies[hostnetwork.ID].Settings.(*hostnetwork.Settings)
	n, _ := strconv.Atoi(port)
	s.Host, s.Port, s.Candidates = "localhost", int32(n), []string{}
	out, err := yaml.Marshal(c)
	if err != nil {
		panic(err) // a fixed, valid struct
	}
	return string(out)
}

func writeConfigFile(path, content string) error {
	if err := os.WriteFile(path+".new", []byte(content), 0o600); err != nil {
		return err
	}
	return os.Rename(path+".new", path)
}

func pinnedPodOn(node string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "cilium-agent-", Namespace: "kube-system"},
		Spec: corev1.PodSpec{HostNetwork: true, NodeName: node, Containers: []corev1.Container{{
			Name: "cilium-agent", Image: "quay.io/cilium/cilium:v1.16.5",
			Env: []corev1.EnvVar{{Name: hostnetwork.EnvHost, Value: "10.0.1.16"}, {Name: hostnetwork.EnvPort, Value: "6443"}},
		}}},
	}
}

func envLine(env []corev1.EnvVar) string {
	var out []string
	for _, e := range env {
		out = append(out, e.Name+"="+e.Value)
	}
	return strings.Join(out, " ")
}

// withExtraCA writes a copy of kubeconfig whose clusters also trust caPEM: a
// cluster CA bundle of two CAs, as during a CA rotation.
func withExtraCA(kubeconfig string, caPEM []byte, path string) (string, error) {
	kc, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		return "", err
	}
	for _, c := range kc.Clusters {
		c.CertificateAuthorityData = append(append([]byte{}, c.CertificateAuthorityData...), caPEM...)
	}
	return path, clientcmd.WriteToFile(*kc, path)
}
