// Command demo runs endpoint-policy end to end on this machine: a local
// control plane (etcd + kube-apiserver, the envtest binaries), the real
// `endpoint-policy serve` binary with a freshly generated self-signed
// certificate, the webhook registration from config/webhook, and the
// manifests in examples/. It prints what happened to each object, shows a
// node being tainted for deletion and its kube-proxy pod annotated, then a
// switch to Audit mode without a restart, and stops everything.
//
//	go run ./hack/demo --assets bin/k8s/... --binary bin/endpoint-policy --examples examples
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"sigs.k8s.io/yaml"

	"github.com/endpoint-policy/endpoint-policy/internal/audit"
	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/kubeproxy"
	"github.com/endpoint-policy/endpoint-policy/internal/testing/warnings"
)

func main() {
	start := time.Now()
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("\nDemo finished in %s.\n", time.Since(start).Round(100*time.Millisecond))
}

func run() error {
	assets := flag.String("assets", os.Getenv("KUBEBUILDER_ASSETS"), "directory holding kube-apiserver and etcd")
	binary := flag.String("binary", "bin/endpoint-policy", "the endpoint-policy binary")
	examples := flag.String("examples", "examples", "directory of manifests to apply")
	logFile := flag.String("log", filepath.Join("bin", "demo", "endpoint-policy.log"), "where the server's log is written")
	flag.Parse()
	logf.SetLogger(logr.Discard())

	work, err := os.MkdirTemp("", "endpoint-policy-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	step("Starting a local control plane (etcd + kube-apiserver from %s)", *assets)
	env := &envtest.Environment{
		BinaryAssetsDirectory: *assets,
		WebhookInstallOptions: envtest.WebhookInstallOptions{Paths: []string{filepath.Join("config", "webhook")}},
		// The PolicyReport CRDs, so that the background audit writes reports.
		CRDDirectoryPaths: []string{filepath.Join("charts", "endpoint-policy", "files", "crds")},
	}
	cfg, err := env.Start()
	if err != nil {
		return fmt.Errorf("starting the control plane: %w", err)
	}
	defer func() {
		step("Stopping the control plane")
		if err := env.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "demo: stopping the control plane: %v\n", err)
		}
	}()
	wio := env.WebhookInstallOptions
	fmt.Printf("   API server %s; webhook registered at https://%s:%d (self-signed CA, certificate in %s)\n",
		cfg.Host, wio.LocalServingHost, wio.LocalServingPort, wio.LocalServingCertDir)

	kubeconfig, err := writeKubeconfig(env, work)
	if err != nil {
		return err
	}
	configFile := filepath.Join(work, "config.yaml")
	if err := os.WriteFile(configFile, []byte(policyConfig(policy.Enforce)), 0o600); err != nil {
		return err
	}

	probe, metrics := freeAddr(), freeAddr()
	step("Starting %s serve", *binary)
	srv, err := startServer(*binary, *logFile, []string{
		"serve",
		"--kubeconfig", kubeconfig,
		"--cert-dir", wio.LocalServingCertDir,
		"--webhook-port", fmt.Sprint(wio.LocalServingPort),
		"--config", configFile,
		"--health-probe-bind-address", probe,
		"--metrics-bind-address", metrics,
		"--namespace", demoNamespace,
	})
	if err != nil {
		return err
	}
	defer func() {
		step("Stopping endpoint-policy (SIGTERM)")
		if err := srv.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		}
	}()
	if err := waitReady(probe, srv); err != nil {
		return err
	}
	fmt.Printf("   ready (/readyz on %s, metrics on %s)\n", probe, metrics)

	warnings := &warnings.Recorder{}
	clientConfig := rest.CopyConfig(cfg)
	clientConfig.WarningHandlerWithContext = warnings
	k8s, err := client.New(clientConfig, client.Options{})
	if err != nil {
		return err
	}
	ctx := context.Background()

	objs, err := readExamples(*examples)
	if err != nil {
		return err
	}
	step("Applying %d manifests from %s/ (default modes: apiserver-probe-host Audit, the others Enforce; "+
		"host-network-endpoint with verification: Off until the node agents below)", len(objs), *examples)
	for _, o := range objs {
		if err := apply(ctx, k8s, warnings, o, ""); err != nil {
			return err
		}
	}

	if err := kubeProxyScaleDown(ctx, k8s); err != nil {
		return err
	}

	apiServer, err := url.Parse(cfg.Host)
	if err != nil {
		return err
	}
	if err := nodeAgents(ctx, k8s, warnings, *binary, kubeconfig, configFile, work, apiServer.Host, filepath.Dir(*logFile)); err != nil {
		return err
	}

	step("Switching the configuration file to mode: Audit (no restart)")
	// Write and rename, as the kubelet updates a mounted ConfigMap.
	if err := os.WriteFile(configFile+".new", []byte(policyConfig(policy.Audit)), 0o600); err != nil {
		return err
	}
	if err := os.Rename(configFile+".new", configFile); err != nil {
		return err
	}
	// The server notices within its poll interval at the latest; apply the
	// pinned pod again under new names until a warning shows Audit is in force.
	for _, o := range objs {
		if o.file != "cilium-operator-pinned.yaml" {
			continue
		}
		attempt := 0
		var last created
		err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			attempt++
			var err error
			last, err = create(ctx, k8s, warnings, o, fmt.Sprintf("-audit-%d", attempt))
			return slices.ContainsFunc(last.warnings, func(w string) bool { return strings.Contains(w, "] "+policy.Would) }), err
		})
		if err != nil {
			return fmt.Errorf("waiting for Audit mode to take effect: %w", err)
		}
		report(o, last)
	}

	for _, o := range objs {
		if o.file == "kube-vip-v0.8.4-daemonset.yaml" {
			if err := apply(ctx, k8s, warnings, o, "-audit"); err != nil {
				return err
			}
		}
	}

	if err := showAuditReport(ctx, k8s); err != nil {
		return err
	}

	if body, err := httpGet("http://" + metrics + "/metrics"); err == nil {
		step("Metrics")
		for _, line := range strings.Split(body, "\n") {
			if strings.HasPrefix(line, "endpoint_policy_admission_decisions_total{") || strings.HasPrefix(line, "endpoint_policy_config_reloads_total{") ||
				strings.HasPrefix(line, "endpoint_policy_kube_proxy_node_deleting_") || strings.HasPrefix(line, "endpoint_policy_violations{") ||
				strings.HasPrefix(line, "endpoint_policy_endpoint_nodes{") {
				fmt.Println("   " + line)
			}
		}
	}
	fmt.Printf("\n   Server log: %s\n", *logFile)

	step("Offline: %s check -f %s/ (no cluster; exit 1 when admission would deny something)", *binary, *examples)
	check := exec.Command(*binary, "check", "-f", *examples)
	check.Stdout, check.Stderr = os.Stdout, os.Stderr
	err = check.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit) && exit.ExitCode() == 1:
		fmt.Println("   exit code 1: deny findings")
	case err != nil:
		return fmt.Errorf("endpoint-policy check: %w", err)
	default:
		fmt.Println("   exit code 0")
	}
	return nil
}

// showAuditReport waits for the background audit's PolicyReport on what
// Audit mode let through in kube-system, and prints it as
// `kubectl get policyreport` would, with its results.
func showAuditReport(ctx context.Context, k8s client.Client) error {
	step("Background audit: what runs in the cluster (PolicyReport kube-system/%s)", audit.ReportName)
	report := &unstructured.Unstructured{}
	report.SetGroupVersionKind(audit.PolicyReportGVK)
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		err := k8s.Get(ctx, client.ObjectKey{Namespace: "kube-system", Name: audit.ReportName}, report)
		if err != nil {
			return false, client.IgnoreNotFound(err)
		}
		warn, _, _ := unstructured.NestedInt64(report.Object, "summary", "warn")
		return warn > 0, nil // what Audit mode admitted is reported
	})
	if err != nil {
		return fmt.Errorf("waiting for the audit's PolicyReport: %w", err)
	}
	summary, _, _ := unstructured.NestedMap(report.Object, "summary")
	fmt.Printf("   summary: pass=%v fail=%v warn=%v\n", summary["pass"], summary["fail"], summary["warn"])
	results, _, _ := unstructured.NestedSlice(report.Object, "results")
	for _, r := range results {
		m := r.(map[string]any)
		res := m["resources"].([]any)[0].(map[string]any)
		msg := fmt.Sprint(m["message"])
		if len(msg) > 110 {
			msg = msg[:110] + "..."
		}
		fmt.Printf("   %-4s %-28s %s %s: %s\n", m["result"], m["policy"], res["kind"], res["name"], msg)
	}
	return nil
}

// kubeProxyScaleDown shows kube-proxy-node-deleting: a node gets
// cluster-autoscaler's ToBeDeletedByClusterAutoscaler taint, the controller
// annotates its kube-proxy pod; the scale-down is cancelled (taint removed),
// the annotations go away.
func kubeProxyScaleDown(ctx context.Context, k8s client.Client) error {
	step("kube-proxy on a node that cluster-autoscaler scales down (kube-proxy-node-deleting)")
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker-1"}}
	if err := k8s.Create(ctx, node); err != nil {
		return fmt.Errorf("creating node worker-1: %w", err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-proxy-worker-1", Namespace: "kube-system", Labels: map[string]string{"k8s-app": "kube-proxy"}},
		Spec: corev1.PodSpec{NodeName: node.Name, HostNetwork: true, Containers: []corev1.Container{{
			Name: "kube-proxy", Image: "registry.k8s.io/kube-proxy:v1.37.2",
			Command: []string{"/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/config.conf"},
		}}},
	}
	if err := k8s.Create(ctx, pod); err != nil {
		return fmt.Errorf("creating pod kube-proxy-worker-1: %w", err)
	}
	fmt.Printf("   node worker-1, pod kube-system/kube-proxy-worker-1 bound to it: %s\n", nodeDeletingAnnotations(pod))

	patch := client.MergeFrom(node.DeepCopy())
	node.Spec.Taints = []corev1.Taint{{Key: kubeproxy.ToBeDeletedTaint, Value: fmt.Sprint(time.Now().Unix()), Effect: corev1.TaintEffectNoSchedule}}
	start := time.Now()
	if err := k8s.Patch(ctx, node, patch); err != nil {
		return fmt.Errorf("tainting worker-1: %w", err)
	}
	fmt.Printf("   kubectl taint node worker-1 %s=%s:NoSchedule\n", kubeproxy.ToBeDeletedTaint, node.Spec.Taints[0].Value)
	if err := waitForPod(ctx, k8s, pod, func(p *corev1.Pod) bool { _, ok := p.Annotations[kubeproxy.NodeDeletingAnnotation]; return ok }); err != nil {
		return fmt.Errorf("waiting for kube-proxy-worker-1 to be annotated: %w", err)
	}
	fmt.Printf("   after %s: %s\n", time.Since(start).Round(time.Millisecond), nodeDeletingAnnotations(pod))
	events := &eventsv1.EventList{}
	if err := k8s.List(ctx, events, client.InNamespace("kube-system")); err == nil {
		for _, e := range events.Items {
			if e.Regarding.Name == pod.Name && e.Reason == "NodeDeleting" {
				fmt.Printf("   Event %s %s: %s\n", e.Type, e.Reason, e.Note)
			}
		}
	}

	patch = client.MergeFrom(node.DeepCopy())
	node.Spec.Taints = nil
	start = time.Now()
	if err := k8s.Patch(ctx, node, patch); err != nil {
		return fmt.Errorf("removing the taint from worker-1: %w", err)
	}
	fmt.Printf("   scale-down cancelled: kubectl taint node worker-1 %s-\n", kubeproxy.ToBeDeletedTaint)
	if err := waitForPod(ctx, k8s, pod, func(p *corev1.Pod) bool { _, ok := p.Annotations[kubeproxy.NodeDeletingAnnotation]; return !ok }); err != nil {
		return fmt.Errorf("waiting for the annotations to go: %w", err)
	}
	fmt.Printf("   after %s: %s\n", time.Since(start).Round(time.Millisecond), nodeDeletingAnnotations(pod))
	return nil
}

func waitForPod(ctx context.Context, k8s client.Client, pod *corev1.Pod, done func(*corev1.Pod) bool) error {
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			return false, err
		}
		return done(pod), nil
	})
}

func nodeDeletingAnnotations(p *corev1.Pod) string {
	var out []string
	for _, k := range []string{kubeproxy.NodeDeletingAnnotation, kubeproxy.NodeDeletingSinceAnnotation} {
		if v, ok := p.Annotations[k]; ok {
			out = append(out, k+"="+v)
		}
	}
	if len(out) == 0 {
		return "no node-deleting annotations"
	}
	return strings.Join(out, ", ")
}

// policyConfig renders the built-in configuration with the given global
// mode, and host-network-endpoint's verification Off: the examples' pods
// are not bound to nodes with agents (nodeAgents shows verification).
func policyConfig(mode policy.Mode) string {
	c := config.Default()
	c.Mode = mode
	c.Policies[hostnetwork.ID].Settings.(*hostnetwork.Settings).Verification = hostnetwork.VerificationOff
	out, err := yaml.Marshal(c)
	if err != nil {
		panic(err) // a fixed, valid struct
	}
	return string(out)
}

func step(format string, args ...any) { fmt.Printf("\n==> "+format+"\n", args...) }

type example struct {
	file string
	obj  *unstructured.Unstructured
}

func readExamples(dir string) ([]example, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	var out []example
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for {
			u := &unstructured.Unstructured{}
			if err := dec.Decode(&u.Object); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			if len(u.Object) == 0 {
				continue
			}
			out = append(out, example{file: filepath.Base(f), obj: u})
		}
	}
	return out, nil
}

type created struct {
	obj      *unstructured.Unstructured
	warnings []string
}

func create(ctx context.Context, k8s client.Client, w *warnings.Recorder, e example, suffix string) (created, error) {
	obj := e.obj.DeepCopy()
	obj.SetName(obj.GetName() + suffix)
	var err error
	got := w.During(func() { err = k8s.Create(ctx, obj) })
	if err != nil {
		return created{}, fmt.Errorf("%s: creating %s %s: %w", e.file, obj.GetKind(), obj.GetName(), err)
	}
	return created{obj: obj, warnings: got}, nil
}

// expectAnnotation, on an example, names words that its verdict (a warning
// or a denial) must contain. The demo waits, with dry runs, until the server
// gives that verdict (its cache may still be catching up with the previous
// example), then checks the real request.
const expectAnnotation = "demo.endpoint-policy.io/expect"

// apply creates an example and reports what admission did; a denial is a
// verdict to print, not an error.
func apply(ctx context.Context, k8s client.Client, w *warnings.Recorder, e example, suffix string) error {
	want := e.obj.GetAnnotations()[expectAnnotation]
	if want != "" {
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			var err error
			got := w.During(func() { err = k8s.Create(ctx, e.obj.DeepCopy(), client.DryRunAll) })
			return strings.Contains(fmt.Sprint(err, got), want), nil
		})
		if err != nil {
			return fmt.Errorf("%s: no verdict containing %q: %w", e.file, want, err)
		}
	}
	got, err := create(ctx, k8s, w, e, suffix)
	if apierrors.IsForbidden(err) {
		fmt.Printf("\n   %s: %s %s/%s\n     DENIED: %s\n", e.file, e.obj.GetKind(), e.obj.GetNamespace(), e.obj.GetName(), apiStatusMessage(err))
		return nil
	}
	if err != nil {
		return err
	}
	report(e, got)
	return nil
}

// apiStatusMessage is the message of the API server's Status in err.
func apiStatusMessage(err error) string {
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		return status.Status().Message
	}
	return err.Error()
}

// report prints what admission did to one object: env before -> after per
// container for pods, annotations added, warnings.
func report(e example, got created) {
	o := got.obj
	fmt.Printf("\n   %s: %s %s/%s\n", e.file, o.GetKind(), o.GetNamespace(), o.GetName())
	if o.GetKind() == "Pod" && !policy.IsMirrorPod(o) {
		var before, after corev1.Pod
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(e.obj.Object, &before); err != nil {
			fmt.Printf("     (cannot read as a Pod: %v)\n", err)
			return
		}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &after); err != nil {
			fmt.Printf("     (cannot read as a Pod: %v)\n", err)
			return
		}
		fmt.Printf("     hostNetwork: %v\n", after.Spec.HostNetwork)
		printContainers("init container", before.Spec.InitContainers, after.Spec.InitContainers)
		printContainers("container", before.Spec.Containers, after.Spec.Containers)
	}
	annotations := o.GetAnnotations()
	for _, k := range slices.Sorted(maps.Keys(annotations)) {
		if _, had := e.obj.GetAnnotations()[k]; !had {
			fmt.Printf("     + annotation %s=%s\n", k, annotations[k])
		}
	}
	if len(got.warnings) == 0 {
		fmt.Println("     warnings: none")
	}
	for _, w := range got.warnings {
		fmt.Printf("     Warning: %s\n", w)
	}
}

func printContainers(kind string, before, after []corev1.Container) {
	for i, c := range after {
		was := map[string]string{}
		if i < len(before) {
			for _, e := range before[i].Env {
				was[e.Name] = envString(e)
			}
		}
		now := map[string]string{}
		for _, e := range c.Env {
			now[e.Name] = envString(e)
		}
		fmt.Printf("     %s %q:\n", kind, c.Name)
		for _, name := range []string{"KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"} {
			b, a := orUnset(was[name]), orUnset(now[name])
			mark := ""
			if a == b {
				mark = "  (unchanged)"
			}
			fmt.Printf("       %-24s %-24s -> %s%s\n", name, b, a, mark)
		}
	}
}

func envString(e corev1.EnvVar) string {
	if e.ValueFrom != nil {
		return "(valueFrom)"
	}
	return e.Value
}

func orUnset(s string) string {
	if s == "" {
		return "(unset)"
	}
	return s
}

func writeKubeconfig(env *envtest.Environment, dir string) (string, error) {
	user, err := env.AddUser(envtest.User{Name: "demo-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return "", fmt.Errorf("creating a user: %w", err)
	}
	data, err := user.KubeConfig()
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "kubeconfig")
	return path, os.WriteFile(path, data, 0o600)
}

type serverProcess struct {
	cmd  *exec.Cmd
	done chan error
}

func startServer(binary, logFile string, args []string) (*serverProcess, error) {
	if err := os.MkdirAll(filepath.Dir(logFile), 0o755); err != nil {
		return nil, err
	}
	log, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		_ = log.Close()
		return nil, fmt.Errorf("starting %s: %w", binary, err)
	}
	p := &serverProcess{cmd: cmd, done: make(chan error, 1)}
	go func() {
		p.done <- cmd.Wait()
		_ = log.Close()
	}()
	return p, nil
}

func (p *serverProcess) stop() error {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case err := <-p.done:
		if err != nil {
			return fmt.Errorf("endpoint-policy exited: %w", err)
		}
		return nil
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		return errors.New("endpoint-policy did not stop within 30s of SIGTERM; killed")
	}
}

func waitReady(addr string, p *serverProcess) error {
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 60*time.Second, true, func(context.Context) (bool, error) {
		select {
		case err := <-p.done:
			return false, fmt.Errorf("endpoint-policy exited before it was ready: %w (see its log)", err)
		default:
		}
		_, err := httpGet("http://" + addr + "/readyz")
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("endpoint-policy not ready: %w", err)
	}
	return nil
}

func httpGet(url string) (string, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: HTTP %d", url, resp.StatusCode)
	}
	return string(body), nil
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}
