// Command benchscale is make bench-scale: endpoint-policy in a simulated
// cluster of --nodes kwok Nodes (test/sim) with the real controllers. Three
// hostNetwork DaemonSets (kube-proxy, a Cilium-like agent pinned to a
// control-plane IP, a node exporter) and a Deployment on the pod network roll
// out through the webhook; a leader (admission, the kube-proxy controller, the
// background audit) and a follower run as processes. It measures their RSS,
// Go heap and CPU per pod event, the API writes they make per pod, admission
// latency at the leader during the rollout, and how long the kube-proxy
// controller takes to annotate the kube-proxy pods of --taint nodes tainted at
// once and to remove the annotations. The report goes to --out (Markdown).
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/kubeproxy"
	"github.com/endpoint-policy/endpoint-policy/test/sim"
)

const (
	releaseNamespace = "endpoint-policy"
	podsNamespace    = "scale"
)

type options struct {
	nodes, podNetwork, taint int
	mode                     policy.Mode
	binary, out, logDir      string
}

func main() {
	var o options
	var mode string
	flag.IntVar(&o.nodes, "nodes", 5000, "kwok Nodes")
	flag.IntVar(&o.podNetwork, "pod-network-pods", 10000, "pods of the Deployment on the pod network")
	flag.IntVar(&o.taint, "taint", 500, "nodes tainted ToBeDeletedByClusterAutoscaler at once")
	flag.StringVar(&mode, "mode", "Enforce", "global mode: Enforce or Audit")
	flag.StringVar(&o.binary, "binary", filepath.Join("bin", "endpoint-policy"), "the endpoint-policy binary")
	flag.StringVar(&o.out, "out", filepath.Join("bin", "bench", "scale-enforce.md"), "the report")
	flag.StringVar(&o.logDir, "log-dir", filepath.Join("bin", "bench", "scale"), "the processes' logs")
	flag.Parse()
	o.mode = policy.Mode(mode)
	if err := run(o); err != nil {
		fmt.Fprintf(os.Stderr, "benchscale: %v\n", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) {
	fmt.Printf("%s ==> %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func run(o options) error {
	if o.mode != policy.Enforce && o.mode != policy.Audit {
		return fmt.Errorf("--mode %q: Enforce or Audit", o.mode)
	}
	if o.nodes < 1 || o.podNetwork < 0 {
		return fmt.Errorf("--nodes %d, --pod-network-pods %d: at least one node, and no negative count of pods", o.nodes, o.podNetwork)
	}
	if o.taint < 0 || o.taint > o.nodes {
		return fmt.Errorf("--taint %d: between 0 and --nodes (%d)", o.taint, o.nodes)
	}
	apiServer, assets, err := sim.AssetsFromEnv()
	if err != nil {
		return err
	}
	for _, d := range []string{o.logDir, filepath.Dir(o.out)} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	step("simulated cluster: %d kwok nodes", o.nodes)
	env := &envtest.Environment{
		WebhookInstallOptions: envtest.WebhookInstallOptions{Paths: []string{filepath.Join("config", "webhook")}},
		CRDDirectoryPaths:     []string{filepath.Join("charts", "endpoint-policy", "files", "crds")},
	}
	c, err := sim.Start(ctx, sim.Options{APIServerAssets: apiServer, Assets: assets, Nodes: o.nodes, Env: env, LogDir: o.logDir})
	if err != nil {
		return err
	}
	defer c.Stop()
	r := &report{opts: o, nodesReady: time.Since(start)}

	if _, err := c.Clients.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: releaseNamespace}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	if _, err := c.Clients.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: podsNamespace}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	step("every node's agent report (a Lease each): localhost:7443 verified")
	if err := publishLeases(ctx, c, o.nodes); err != nil {
		return err
	}

	cfg := config.Default()
	cfg.Mode = o.mode
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return err
	}
	configFile := filepath.Join(o.logDir, "config.yaml")
	if err := os.WriteFile(configFile, data, 0o600); err != nil {
		return err
	}
	wio := env.WebhookInstallOptions
	step("the leader and a follower")
	leader, err := startReplica(o, c, "leader", wio.LocalServingPort, wio.LocalServingCertDir, configFile)
	if err != nil {
		return err
	}
	defer leader.stop()
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		v, err := leader.metric("leader_election_master_status", nil)
		return err == nil && v == 1, nil
	}); err != nil {
		return fmt.Errorf("the first replica did not become the leader: %w", err)
	}
	follower, err := startReplica(o, c, "follower", freePort(), wio.LocalServingCertDir, configFile)
	if err != nil {
		return err
	}
	defer follower.stop()
	replicas := []*replica{leader, follower}
	// The caches filled, the audit's first pass over an empty cluster done.
	time.Sleep(5 * time.Second) // a measurement pause (caches filled), not synchronisation
	idle := sampleAll(replicas)

	step("rollout: 3 hostNetwork DaemonSets × %d nodes, %d pods on the pod network", o.nodes, o.podNetwork)
	events := &podEvents{}
	stopWatch, err := events.watch(ctx, c)
	if err != nil {
		return err
	}
	before := sampleAll(replicas)
	latencyBefore, err := leader.histogram("controller_runtime_webhook_latency_seconds", map[string]string{"webhook": "/mutate-v1-pod"})
	if err != nil {
		return err
	}
	peak := &peaks{}
	stopPeaks := peak.track(replicas)
	rolloutStart := time.Now()
	// The leader's CPU profile over the rollout's first 60 s (docs/performance.md says what it shows).
	go leader.profile(o.logDir, "profile?seconds=60", "cpu.pprof")
	if err := rollout(ctx, c, o); err != nil {
		return err
	}
	r.rollout = time.Since(rolloutStart)
	stopPeaks()
	after := sampleAll(replicas)
	latencyAfter, err := leader.histogram("controller_runtime_webhook_latency_seconds", map[string]string{"webhook": "/mutate-v1-pod"})
	if err != nil {
		return err
	}
	r.hostNetworkEvents = events.count.Load()
	stopWatch()

	for _, r := range replicas {
		r.profile(o.logDir, "heap?gc=1", "heap.pprof")
	}
	step("at rest for 60 s")
	time.Sleep(60 * time.Second) // the idle cost over a fixed window
	rest := sampleAll(replicas)

	step("writes: Events, PolicyReports")
	if r.events, err = countEvents(ctx, c); err != nil {
		return err
	}
	if r.reports, err = countReports(ctx, c); err != nil {
		return err
	}

	step("%d nodes tainted ToBeDeletedByClusterAutoscaler at once", o.taint)
	if r.taint, err = taintNodes(ctx, c, o.taint, o.mode == policy.Audit, leader); err != nil {
		return err
	}
	r.patches, _ = leader.metric("endpoint_policy_kube_proxy_node_deleting_annotations_total", map[string]string{"action": "add"})
	removes, _ := leader.metric("endpoint_policy_kube_proxy_node_deleting_annotations_total", map[string]string{"action": "remove"})
	r.patches += removes
	final := sampleAll(replicas)

	r.idle, r.before, r.after, r.rest, r.final, r.peaks = idle, before, after, rest, final, peak
	r.latency = quantiles(latencyBefore, latencyAfter)
	r.total = time.Since(start)
	return r.write()
}

// publishLeases writes every node's agent report, as the node agents would.
func publishLeases(ctx context.Context, c *sim.Cluster, nodes int) error {
	return sim.Parallel(0, nodes, func(i int) error {
		l, err := hostnetwork.NewLease(releaseNamespace, hostnetwork.Report{
			Node: sim.NodeName(i), Endpoint: "localhost:7443", RenewTime: time.Now(),
			Checks: []hostnetwork.Check{{Endpoint: "localhost:7443", Status: hostnetwork.StatusVerified, Message: "simulated"}},
		}, 24*time.Hour)
		if err != nil {
			return err
		}
		_, err = c.Clients.CoordinationV1().Leases(releaseNamespace).Create(ctx, l, metav1.CreateOptions{})
		return err
	})
}

// rollout creates the workloads and waits until every pod is Ready.
func rollout(ctx context.Context, c *sim.Cluster, o options) error {
	apps := c.Clients.AppsV1()
	for _, ds := range []*appsv1.DaemonSet{
		daemonSet("kube-proxy", "kube-system", map[string]string{"k8s-app": "kube-proxy"}, nil),
		daemonSet("cilium", "kube-system", map[string]string{"k8s-app": "cilium"}, pinned),
		daemonSet("node-exporter", podsNamespace, map[string]string{"app.kubernetes.io/name": "node-exporter"}, nil),
	} {
		if _, err := apps.DaemonSets(ds.Namespace).Create(ctx, ds, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	if err := podNetworkPods(ctx, c, o); err != nil {
		return err
	}
	last := time.Now()
	// Give up only on a rollout that stops moving.
	progress, readyBefore := time.Now(), -1
	return wait.PollUntilContextTimeout(ctx, 2*time.Second, 4*time.Hour, true, func(ctx context.Context) (bool, error) {
		if err := c.Healthy(); err != nil {
			return false, err
		}
		ready := 0
		for _, key := range []types.NamespacedName{{Namespace: "kube-system", Name: "kube-proxy"}, {Namespace: "kube-system", Name: "cilium"}, {Namespace: podsNamespace, Name: "node-exporter"}} {
			ds, err := apps.DaemonSets(key.Namespace).Get(ctx, key.Name, metav1.GetOptions{})
			if err != nil {
				return false, nil //nolint:nilerr // a busy API server: ask again
			}
			ready += int(ds.Status.NumberReady)
		}
		want := 3*o.nodes + o.podNetwork
		if ready == 3*o.nodes && o.podNetwork > 0 {
			// The pod-network pods, once the DaemonSets' are in: a list of
			// them from the watch cache, not every poll.
			n, err := readyPodNetworkPods(ctx, c)
			if err != nil {
				return false, nil //nolint:nilerr // a busy API server: ask again
			}
			ready += n
		}
		if ready > readyBefore {
			progress, readyBefore = time.Now(), ready
		} else if time.Since(progress) > 10*time.Minute {
			return false, fmt.Errorf("rollout stalled: %d of %d pods ready for 10 minutes", ready, want)
		}
		if time.Since(last) > 30*time.Second {
			step("   %d of %d pods ready", ready, want)
			last = time.Now()
		}
		return ready >= want, nil
	})
}

var pinned = []corev1.EnvVar{{Name: hostnetwork.EnvHost, Value: "10.0.1.16"}, {Name: hostnetwork.EnvPort, Value: "6443"}}

func daemonSet(name, namespace string, labels map[string]string, env []corev1.EnvVar) *appsv1.DaemonSet {
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labels},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: ptr.To(intstr.FromString("10%"))}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Containers:        []corev1.Container{{Name: name, Image: "registry.k8s.io/pause:3.10", Env: env}},
					HostNetwork:       true,
					PriorityClassName: "system-node-critical",
					Tolerations:       []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					NodeSelector:      map[string]string{corev1.LabelOSStable: "linux"},
				},
			},
		},
	}
}

// podNetworkPods creates the pods on the pod network already bound to the
// nodes, round robin, instead of a Deployment's pods placed by the
// scheduler: at 5,000 nodes the scheduler places about 7 pods/s on 2 cores,
// and 10,000 pods took the run past an hour, measuring the scheduler, not
// endpoint-policy. It does not flatter endpoint-policy's figures: pods
// created bound to a node are the ones its webhook's matchConditions send it
// (kube-proxy-node-deleting reads their node), so each of these costs it an
// admission, where a scheduled pod costs none; the audit and the kube-proxy
// controller select no pod-network pod either way.
func podNetworkPods(ctx context.Context, c *sim.Cluster, o options) error {
	return sim.Parallel(0, o.podNetwork, func(i int) error {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("web-%05d", i), Namespace: podsNamespace, Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{
				NodeName:   sim.NodeName(i % o.nodes),
				Containers: []corev1.Container{{Name: "web", Image: "registry.k8s.io/pause:3.10"}},
			},
		}
		_, err := c.Clients.CoreV1().Pods(podsNamespace).Create(ctx, pod, metav1.CreateOptions{})
		return err
	})
}

// readyPodNetworkPods counts the Ready pods podNetworkPods created.
func readyPodNetworkPods(ctx context.Context, c *sim.Cluster) (int, error) {
	pods, err := c.Clients.CoreV1().Pods(podsNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=web", ResourceVersion: "0"})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, p := range pods.Items {
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				n++
			}
		}
	}
	return n, nil
}

// taintNodes taints n nodes at once and returns how long writing the taints
// took, then how long, after the last taint was written, until every
// kube-proxy pod on them was annotated; and the same for removing them.
//
// In Audit the controller annotates nothing: it counts what it would have
// annotated (the warn metric, read from the leader), and there is nothing to
// remove.
func taintNodes(ctx context.Context, c *sim.Cluster, n int, audit bool, leader *replica) (t taintTimes, err error) {
	patch := func(i int, taint bool) error {
		node, err := c.Clients.CoreV1().Nodes().Get(ctx, sim.NodeName(i), metav1.GetOptions{})
		if err != nil {
			return err
		}
		var taints []corev1.Taint
		for _, t := range node.Spec.Taints {
			if t.Key != kubeproxy.ToBeDeletedTaint {
				taints = append(taints, t)
			}
		}
		if taint {
			taints = append(taints, corev1.Taint{Key: kubeproxy.ToBeDeletedTaint, Value: strconv.FormatInt(time.Now().Unix(), 10), Effect: corev1.TaintEffectNoSchedule})
		}
		node.Spec.Taints = taints
		_, err = c.Clients.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{})
		return err
	}
	warned := func() (int, error) {
		v, err := leader.metric("endpoint_policy_kube_proxy_node_deleting_annotations_total", map[string]string{"action": "warn"})
		return int(v), err
	}
	warnedBefore, _ := warned()
	annotated := func() (int, error) {
		if audit {
			w, err := warned()
			return w - warnedBefore, err
		}
		list, err := c.Clients.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "k8s-app=kube-proxy", ResourceVersion: "0"})
		if err != nil {
			return 0, err
		}
		count := 0
		for _, p := range list.Items {
			if _, ok := p.Annotations[kubeproxy.NodeDeletingAnnotation]; ok {
				count++
			}
		}
		return count, nil
	}
	phase := func(taint bool, want int) (written, done time.Duration, err error) {
		start := time.Now()
		if err := sim.Parallel(0, n, func(i int) error { return patch(i, taint) }); err != nil {
			return 0, 0, err
		}
		written = time.Since(start)
		start = time.Now()
		err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Minute, true, func(context.Context) (bool, error) {
			got, err := annotated()
			return err == nil && got == want, nil
		})
		return written, time.Since(start), err
	}
	if t.taintWritten, t.annotate, err = phase(true, n); err != nil {
		return t, fmt.Errorf("annotating: %w", err)
	}
	if audit {
		annotated = func() (int, error) { return 0, nil }
	}
	if t.untaintWritten, t.unannotate, err = phase(false, 0); err != nil {
		return t, fmt.Errorf("removing the annotations: %w", err)
	}
	return t, nil
}

// taintTimes are taintNodes' durations.
type taintTimes struct {
	taintWritten, annotate, untaintWritten, unannotate time.Duration
}

func countEvents(ctx context.Context, c *sim.Cluster) (int, error) {
	list, err := c.Clients.EventsV1().Events("").List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range list.Items {
		if e.ReportingController == "endpoint-policy" {
			n++
		}
	}
	return n, nil
}

// countReports counts the namespaced reports in both APIs: audit.reportAPI
// Auto writes OpenReports where served, else PolicyReports.
func countReports(ctx context.Context, c *sim.Cluster) (int, error) {
	n := 0
	for path, kind := range map[string]string{"/apis/wgpolicyk8s.io/v1alpha2/policyreports": "PolicyReport", "/apis/openreports.io/v1alpha1/reports": "Report"} {
		data, err := c.Clients.CoreV1().RESTClient().Get().AbsPath(path).DoRaw(ctx)
		if apierrors.IsNotFound(err) {
			continue // the CRD is not installed
		}
		if err != nil {
			return 0, err
		}
		n += strings.Count(string(data), `"kind":"`+kind+`"`)
	}
	return n, nil
}

// podEvents counts the changes of hostNetwork pods (adds, updates,
// deletes), as an informer with the audit's field selector sees them.
type podEvents struct{ count atomic.Int64 }

func (p *podEvents) watch(ctx context.Context, c *sim.Cluster) (func(), error) {
	ctx, cancel := context.WithCancel(ctx)
	factory := informers.NewSharedInformerFactoryWithOptions(c.Clients, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.hostNetwork", "true").String()
	}))
	inf := factory.Core().V1().Pods().Informer()
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { p.count.Add(1) },
		UpdateFunc: func(any, any) { p.count.Add(1) },
		DeleteFunc: func(any) { p.count.Add(1) },
	}); err != nil {
		cancel()
		return nil, err
	}
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	return func() { cancel(); factory.Shutdown() }, nil
}

// replica is an endpoint-policy serve process.
type replica struct {
	name        string
	cmd         *exec.Cmd
	metricsAddr string
	pprofAddr   string
	done        chan error
}

// profile saves the replica's pprof profile kind (heap; profile?seconds=N
// for CPU) into dir.
func (r *replica) profile(dir, kind, file string) {
	resp, err := http.Get("http://" + r.pprofAddr + "/debug/pprof/" + kind)
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchscale: %s profile: %v\n", r.name, err)
		return
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, r.name+"-"+file), data, 0o600)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchscale: %s profile: %v\n", r.name, err)
	}
}

func startReplica(o options, c *sim.Cluster, name string, port int, certDir, configFile string) (*replica, error) {
	r := &replica{name: name, metricsAddr: fmt.Sprintf("127.0.0.1:%d", freePort()), pprofAddr: fmt.Sprintf("127.0.0.1:%d", freePort()),
		done: make(chan error, 1)}
	health := fmt.Sprintf("127.0.0.1:%d", freePort())
	log, err := os.Create(filepath.Join(o.logDir, name+".log"))
	if err != nil {
		return nil, err
	}
	r.cmd = exec.Command(o.binary, "serve", "--kubeconfig="+c.Kubeconfig, "--config="+configFile,
		fmt.Sprintf("--webhook-port=%d", port), "--cert-dir="+certDir, "--metrics-bind-address="+r.metricsAddr, "--metrics-secure=false",
		"--health-probe-bind-address="+health, "--pprof-bind-address="+r.pprofAddr, "--leader-elect", "--leader-election-namespace="+releaseNamespace, "--namespace="+releaseNamespace)
	r.cmd.Stdout, r.cmd.Stderr = log, log
	if err := r.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { r.done <- r.cmd.Wait(); _ = log.Close() }()
	err = wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		select {
		case err := <-r.done:
			return false, fmt.Errorf("%s exited: %w", name, err)
		default:
		}
		resp, err := http.Get("http://" + health + "/readyz")
		if err != nil {
			return false, nil
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	return r, err
}

func (r *replica) stop() {
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-r.done:
		if err != nil {
			fmt.Fprintf(os.Stderr, "benchscale: %s: %v\n", r.name, err)
		}
	case <-time.After(30 * time.Second):
		_ = r.cmd.Process.Kill()
	}
}

func (r *replica) families() (map[string]*dto.MetricFamily, error) {
	resp, err := http.Get("http://" + r.metricsAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

func matches(m *dto.Metric, labels map[string]string) bool {
	for k, v := range labels {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == k && l.GetValue() == v {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func (r *replica) metric(name string, labels map[string]string) (float64, error) {
	fams, err := r.families()
	if err != nil {
		return 0, err
	}
	f, ok := fams[name]
	if !ok {
		return 0, fmt.Errorf("no metric %s", name)
	}
	sum := 0.0
	for _, m := range f.GetMetric() {
		if !matches(m, labels) {
			continue
		}
		switch {
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		}
	}
	return sum, nil
}

// histogram returns the cumulative bucket counts of a histogram, by upper
// bound.
func (r *replica) histogram(name string, labels map[string]string) (map[float64]uint64, error) {
	fams, err := r.families()
	if err != nil {
		return nil, err
	}
	out := map[float64]uint64{}
	for _, m := range fams[name].GetMetric() {
		if !matches(m, labels) || m.Histogram == nil {
			continue
		}
		for _, b := range m.GetHistogram().GetBucket() {
			if !math.IsInf(b.GetUpperBound(), 1) { // the sample count below
				out[b.GetUpperBound()] += b.GetCumulativeCount()
			}
		}
		out[math.Inf(1)] += m.GetHistogram().GetSampleCount()
	}
	return out, nil
}

// quantiles estimates p50 and p99 of the observations between two scrapes
// of a histogram, as the upper bound of the bucket each falls in.
func quantiles(before, after map[float64]uint64) [2]float64 {
	var bounds []float64
	for b := range after {
		bounds = append(bounds, b)
	}
	sort.Float64s(bounds)
	total := after[math.Inf(1)] - before[math.Inf(1)]
	var out [2]float64
	for i, q := range []float64{0.5, 0.99} {
		for _, b := range bounds {
			if float64(after[b]-before[b]) >= q*float64(total) {
				out[i] = b
				break
			}
		}
	}
	return out
}

// sample is a replica's resource use at one moment.
type sample struct {
	rss, heap float64 // bytes
	// rssFile is the part of rss mapped from files: the binary's pages.
	rssFile float64
	cpu     float64 // seconds since start
}

func (r *replica) sample() sample {
	var s sample
	pid := r.cmd.Process.Pid
	if f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			for name, to := range map[string]*float64{"VmRSS:": &s.rss, "RssFile:": &s.rssFile} {
				if v, ok := strings.CutPrefix(sc.Text(), name); ok {
					kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
					*to = kb * 1024
				}
			}
		}
		_ = f.Close()
	}
	if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// Fields after the command's closing parenthesis; utime and stime
		// are the 12th and 13th of those, in clock ticks (100/s).
		rest := string(data[strings.LastIndexByte(string(data), ')')+2:])
		f := strings.Fields(rest)
		if len(f) > 13 {
			u, _ := strconv.ParseFloat(f[11], 64)
			st, _ := strconv.ParseFloat(f[12], 64)
			s.cpu = (u + st) / 100
		}
	}
	s.heap, _ = r.metric("go_memstats_heap_inuse_bytes", nil)
	return s
}

func sampleAll(rs []*replica) []sample {
	out := make([]sample, len(rs))
	for i, r := range rs {
		out[i] = r.sample()
	}
	return out
}

// peaks tracks the largest RSS and heap of each replica while running.
type peaks struct {
	mu  sync.Mutex
	max []sample
}

func (p *peaks) track(rs []*replica) func() {
	p.max = make([]sample, len(rs))
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			for i, r := range rs {
				s := r.sample()
				p.mu.Lock()
				p.max[i].rss = max(p.max[i].rss, s.rss)
				p.max[i].heap = max(p.max[i].heap, s.heap)
				p.mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(stop); <-done }
}

type report struct {
	opts                             options
	nodesReady, rollout, total       time.Duration
	idle, before, after, rest, final []sample
	peaks                            *peaks
	hostNetworkEvents                int64
	events, reports                  int
	patches                          float64
	taint                            taintTimes
	latency                          [2]float64
}

func mib(b float64) string { return fmt.Sprintf("%.0f MiB", b/(1<<20)) }

func (r *report) write() error {
	o := r.opts
	var b strings.Builder
	hostNetworkPods := 3 * o.nodes
	fmt.Fprintf(&b, "# bench-scale: %d nodes, mode %s\n\n", o.nodes, o.mode)
	fmt.Fprintf(&b, "%d kwok nodes Ready in %s; %d hostNetwork pods (3 DaemonSets) and %d pods on the pod network Ready in %s; "+
		"%d changes of hostNetwork pods (adds and updates, as an informer with the audit's field selector sees them) during the rollout. Whole run %s.\n\n",
		o.nodes, r.nodesReady.Round(time.Second), hostNetworkPods, o.podNetwork, r.rollout.Round(time.Second), r.hostNetworkEvents, r.total.Round(time.Second))
	fmt.Fprintf(&b, "| | leader | follower |\n|---|---|---|\n")
	row := func(name string, f func(i int) string) {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", name, f(0), f(1))
	}
	row("RSS idle (caches filled, no pods)", func(i int) string { return mib(r.idle[i].rss) })
	row("RSS peak during the rollout", func(i int) string { return mib(r.peaks.max[i].rss) })
	row("RSS at rest after the rollout", func(i int) string { return mib(r.rest[i].rss) })
	row("of which mapped from the binary at rest", func(i int) string { return mib(r.rest[i].rssFile) })
	row("Go heap in use at rest", func(i int) string { return mib(r.rest[i].heap) })
	row("Go heap peak during the rollout", func(i int) string { return mib(r.peaks.max[i].heap) })
	row("CPU during the rollout", func(i int) string { return fmt.Sprintf("%.1f s", r.after[i].cpu-r.before[i].cpu) })
	row("CPU per hostNetwork pod event", func(i int) string {
		return fmt.Sprintf("%.3f ms", 1000*(r.after[i].cpu-r.before[i].cpu)/float64(max(r.hostNetworkEvents, 1)))
	})
	row("CPU per hostNetwork pod", func(i int) string {
		return fmt.Sprintf("%.3f ms", 1000*(r.after[i].cpu-r.before[i].cpu)/float64(hostNetworkPods))
	})
	row("CPU at rest (60 s)", func(i int) string { return fmt.Sprintf("%.2f s", r.rest[i].cpu-r.after[i].cpu) })
	fmt.Fprintf(&b, "\nAdmission at the leader during the rollout (`controller_runtime_webhook_latency_seconds`, /mutate-v1-pod, "+
		"bucket upper bounds): p50 ≤ %gs, p99 ≤ %gs.\n\n", r.latency[0], r.latency[1])
	fmt.Fprintf(&b, "API writes: %d Events from endpoint-policy (%.3f per hostNetwork pod), %d reports, %.0f pod patches by the kube-proxy controller.\n\n",
		r.events, float64(r.events)/float64(hostNetworkPods), r.reports, r.patches)
	rd := func(d time.Duration) time.Duration { return d.Round(10 * time.Millisecond) }
	if o.mode == policy.Audit {
		fmt.Fprintf(&b, "(Audit: the controller annotates nothing; \"annotated\" is its warn metric counting every pod it would have annotated.)\n\n")
	}
	fmt.Fprintf(&b, "%d nodes tainted `ToBeDeletedByClusterAutoscaler` at once (the taints written in %s): every kube-proxy pod on them annotated "+
		"%s after the last taint; the taints removed (in %s), every annotation gone %s after the last removal.\n",
		o.taint, rd(r.taint.taintWritten), rd(r.taint.annotate), rd(r.taint.untaintWritten), rd(r.taint.unannotate))
	if err := os.WriteFile(o.out, []byte(b.String()), 0o600); err != nil {
		return err
	}
	fmt.Print("\n" + b.String())
	return nil
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
