// Package sim runs a simulated Kubernetes cluster on this machine, without a
// container engine: the envtest control plane (etcd and kube-apiserver), the
// real kube-controller-manager and kube-scheduler, and kwok, which plays the
// kubelet of N fake Nodes (heartbeats; pods Running and Ready). DaemonSets
// and Deployments get their pods from the real controllers, bound by the
// real scheduler. Every process listens on 127.0.0.1.
//
// The binaries are built from Go modules by hack/envtest/build.sh and
// hack/sim/build.sh (make sim), which set KUBEBUILDER_ASSETS and
// ENDPOINT_POLICY_SIM_ASSETS.
package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// AssetsEnv names the directory holding kube-controller-manager,
// kube-scheduler and kwok.
const AssetsEnv = "ENDPOINT_POLICY_SIM_ASSETS"

// KwokAnnotation marks the Nodes kwok manages.
const KwokAnnotation = "kwok.x-k8s.io/node"

// NodeName is the name of the i-th simulated node.
func NodeName(i int) string { return fmt.Sprintf("kwok-node-%05d", i) }

// Options configure a simulated cluster.
type Options struct {
	// APIServerAssets holds kube-apiserver and etcd (KUBEBUILDER_ASSETS).
	APIServerAssets string
	// Assets holds kube-controller-manager, kube-scheduler and kwok.
	Assets string
	// Nodes is how many kwok Nodes to create.
	Nodes int
	// Env, when set, is started instead of a plain envtest.Environment (to
	// install webhooks or CRDs, or set API server flags).
	Env *envtest.Environment
	// LogDir receives each process's log; "" discards them.
	LogDir string
	// NodeLabels are added to every Node.
	NodeLabels map[string]string
}

// Cluster is a running simulated cluster.
type Cluster struct {
	Env *envtest.Environment
	// Config is an administrator's client configuration.
	Config *rest.Config
	// Kubeconfig is the path of an administrator's kubeconfig.
	Kubeconfig string
	Clients    kubernetes.Interface

	dir   string
	procs []*process
}

type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	log  io.Closer
}

// Start starts the control plane, the controllers, kwok and the Nodes, and
// returns once every Node is Ready. Stop it with Stop, also on error.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.APIServerAssets == "" || opts.Assets == "" {
		return nil, fmt.Errorf("sim: the binaries are not built: set KUBEBUILDER_ASSETS and %s (make sim builds them)", AssetsEnv)
	}
	for _, b := range []string{"kube-controller-manager", "kube-scheduler", "kwok", "kwok-stages.yaml"} {
		if _, err := os.Stat(filepath.Join(opts.Assets, b)); err != nil {
			return nil, fmt.Errorf("sim: %s: %w (make sim builds it)", b, err)
		}
	}
	env := opts.Env
	if env == nil {
		env = &envtest.Environment{}
	}
	env.BinaryAssetsDirectory = opts.APIServerAssets
	dir, err := os.MkdirTemp("", "endpoint-policy-sim-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{Env: env, dir: dir}
	cfg, err := env.Start()
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("sim: starting the API server: %w", err)
	}
	c.Config = cfg
	if err := c.start(ctx, opts); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) start(ctx context.Context, opts Options) error {
	admin, err := c.Env.AddUser(envtest.User{Name: "sim-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fmt.Errorf("sim: creating the administrator: %w", err)
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		return err
	}
	c.Kubeconfig = filepath.Join(c.dir, "kubeconfig")
	if err := os.WriteFile(c.Kubeconfig, kc, 0o600); err != nil {
		return err
	}
	c.Config = admin.Config()
	c.Config.QPS, c.Config.Burst = -1, 0 // the API server's priority and fairness protects it
	if c.Clients, err = kubernetes.NewForConfig(c.Config); err != nil {
		return err
	}

	kcm := []string{
		"--kubeconfig=" + c.Kubeconfig,
		// Only what the simulation needs: the workload controllers and the
		// garbage collector (pods of deleted workloads).
		"--controllers=daemonset,deployment,replicaset,garbage-collector-controller",
		"--leader-elect=false",
		"--secure-port=0",
		"--use-service-account-credentials=false",
		"--kube-api-qps=500", "--kube-api-burst=1000",
		"--concurrent-daemonset-syncs=8", "--concurrent-deployment-syncs=8", "--concurrent-replicaset-syncs=8",
	}
	sched := []string{"--kubeconfig=" + c.Kubeconfig, "--leader-elect=false", "--secure-port=0",
		"--kube-api-qps=500", "--kube-api-burst=1000"}
	kwok := []string{
		"--kubeconfig=" + c.Kubeconfig,
		"--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector=" + KwokAnnotation + "=fake",
		"--cidr=10.64.0.0/10", // pod IPs for pods on the pod network
		"--v=WARN",            // not a line per Node and Pod patched
		// kwok's default stages, which hack/sim/build.sh writes beside it.
		"--config=" + filepath.Join(opts.Assets, "kwok-stages.yaml"),
	}
	for _, p := range []struct {
		name string
		args []string
	}{{"kube-controller-manager", kcm}, {"kube-scheduler", sched}, {"kwok", kwok}} {
		if err := c.run(opts, p.name, p.args); err != nil {
			return err
		}
	}
	if err := c.AddNodes(ctx, 0, opts.Nodes, opts.NodeLabels); err != nil {
		return err
	}
	return nil
}

func (c *Cluster) run(opts Options, name string, args []string) error {
	cmd := exec.Command(filepath.Join(opts.Assets, name), args...)
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if opts.LogDir != "" {
		f, err := os.Create(filepath.Join(opts.LogDir, name+".log"))
		if err != nil {
			return err
		}
		cmd.Stdout, cmd.Stderr, p.log = f, f, f
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("sim: starting %s: %w", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	c.procs = append(c.procs, p)
	return nil
}

// AddNodes creates the kwok Nodes [from, from+n) and waits until they are
// Ready.
func (c *Cluster) AddNodes(ctx context.Context, from, n int, labels map[string]string) error {
	if err := Parallel(from, n, func(i int) error { return c.createNode(ctx, i, labels) }); err != nil {
		return err
	}
	if err := c.waitReady(ctx, from, n); err != nil {
		return err
	}
	return Parallel(from, n, func(i int) error { return c.untaint(ctx, NodeName(i)) })
}

// Parallel calls f for [from, from+n) from 16 goroutines (the API calls a
// simulated cluster is set up with) and returns the first error.
func Parallel(from, n int, f func(int) error) error {
	items := make(chan int)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range min(n, 16) {
		wg.Go(func() {
			for i := range items {
				errs <- f(i)
			}
		})
	}
	for i := from; i < from+n; i++ {
		items <- i
	}
	close(items)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// untaint lifts the not-ready taint that the API server's
// TaintNodesByCondition admission gives every new Node, as the node
// lifecycle controller does once the Node is Ready. That controller is not
// run: on a loaded 2-core machine it would mark slow-heartbeating kwok
// Nodes NotReady and evict their pods.
func (c *Cluster) untaint(ctx context.Context, name string) error {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err := c.Clients.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		kept := node.Spec.Taints[:0]
		for _, t := range node.Spec.Taints {
			if t.Key != corev1.TaintNodeNotReady {
				kept = append(kept, t)
			}
		}
		if len(kept) == len(node.Spec.Taints) {
			return nil
		}
		node.Spec.Taints = kept
		_, err = c.Clients.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("sim: lifting the not-ready taint of %s: %w", name, err)
	}
	return nil
}

func (c *Cluster) createNode(ctx context.Context, i int, extra map[string]string) error {
	name := NodeName(i)
	labels := map[string]string{
		corev1.LabelHostname: name, corev1.LabelOSStable: "linux", corev1.LabelArchStable: "amd64",
		"type": "kwok", corev1.LabelTopologyZone: "zone-" + strconv.Itoa(i%3),
	}
	for k, v := range extra {
		labels[k] = v
	}
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name: name, Labels: labels,
		Annotations: map[string]string{KwokAnnotation: "fake", "node.alpha.kubernetes.io/ttl": "0"},
	}}
	_, err := c.Clients.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sim: creating node %s: %w", name, err)
	}
	return nil
}

// waitReady waits until the Nodes [from, from+n) are Ready and untainted
// (the not-ready taint the API server gives a new Node lifted, as kwok's
// heartbeat makes it Ready).
func (c *Cluster) waitReady(ctx context.Context, from, n int) error {
	return wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := c.exited(); err != nil {
			return false, err
		}
		list, err := c.Clients.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil //nolint:nilerr // the API server may be busy; try again
		}
		ready := 0
		for i := range list.Items {
			node := &list.Items[i]
			var idx int
			if _, err := fmt.Sscanf(node.Name, "kwok-node-%05d", &idx); err != nil || idx < from || idx >= from+n {
				continue
			}
			if isReady(node) {
				ready++
			}
		}
		return ready == n, nil
	})
}

func isReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// exited returns an error when a process of the cluster has exited.
func (c *Cluster) exited() error {
	for _, p := range c.procs {
		select {
		case <-p.done:
			return fmt.Errorf("sim: %s exited: %w", p.name, p.err)
		default:
		}
	}
	return nil
}

// Healthy returns an error when a process of the cluster has exited.
func (c *Cluster) Healthy() error { return c.exited() }

// Stop stops the processes and the control plane.
func (c *Cluster) Stop() {
	for i := len(c.procs) - 1; i >= 0; i-- {
		p := c.procs[i]
		_ = p.cmd.Process.Kill()
		<-p.done
		if p.log != nil {
			_ = p.log.Close()
		}
	}
	c.procs = nil
	if c.Env != nil {
		_ = c.Env.Stop()
	}
	_ = os.RemoveAll(c.dir)
}

// ErrNotBuilt is returned by AssetsFromEnv when the binaries are missing.
var ErrNotBuilt = errors.New("sim: binaries not built")

// AssetsFromEnv returns the directories of the binaries from KUBEBUILDER_ASSETS
// and ENDPOINT_POLICY_SIM_ASSETS.
func AssetsFromEnv() (apiServer, sim string, err error) {
	apiServer, sim = os.Getenv("KUBEBUILDER_ASSETS"), os.Getenv(AssetsEnv)
	if apiServer == "" || sim == "" {
		return "", "", fmt.Errorf("%w: set KUBEBUILDER_ASSETS and %s (make sim builds them)", ErrNotBuilt, AssetsEnv)
	}
	return apiServer, sim, nil
}
