package integration

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/endpoint-policy/endpoint-policy/internal/testing/fixtures"
	epwebhook "github.com/endpoint-policy/endpoint-policy/internal/webhook"
)

// mapApplyConfiguration is the MutatingAdmissionPolicy equivalent of the
// host-network-endpoint rewrite: the two variables in every container
// (containers and env are maps keyed by name, so this sets or replaces
// them) and the annotation. Init containers are left out: the benchmark's
// pod has none.
const mapApplyConfiguration = `Object{
  metadata: Object.metadata{annotations: {"endpoint-policy.io/endpoint": "localhost:7443"}},
  spec: Object.spec{
    containers: object.spec.containers.map(c, Object.spec.containers{
      name: c.name,
      env: [
        Object.spec.containers.env{name: "KUBERNETES_SERVICE_HOST", value: "localhost"},
        Object.spec.containers.env{name: "KUBERNETES_SERVICE_PORT", value: "7443"}
      ]
    })
  }
}`

// BenchmarkEndToEnd, as a Ginkgo spec (make bench): Pod CREATEs of the
// cilium-operator fixture pod through the envtest kube-apiserver, with the
// suite's own webhooks unregistered, in four namespaces: one no admission
// policy selects (baseline), one for `endpoint-policy serve` (a copy of
// config/webhook's registration), one for the minimal reference webhook (the
// same registration), one for a MutatingAdmissionPolicy doing the same
// rewrite; and one for a second `endpoint-policy serve` that runs alone,
// without leader election, as `replicaCount: 1` does: admission, the
// background audit and the controllers, which see every pod it admits. The
// configurations are interleaved request by request: each worker creates
// one pod in each namespace in turn, in a rotating order, so that all five
// see the same machine at the same moment. Every namespace but the single
// replica's is excluded from the background audit
// (endpoint-policy.io/exclude), which would otherwise report the
// baseline's pods; its watch still sees every namespace's hostNetwork pods
// created and deleted, ten events per pod it admits. Each round ends with
// the pods' deletion and waits until the single replica is idle: the CPU
// counted is a pod's whole life. The latency is the client's, per create;
// e2eRounds rounds at concurrency 1 and 8.
var _ = Describe("BenchmarkEndToEnd", Label("bench"), func() {
	const singleReplica = "endpoint-policy single replica"
	const (
		e2eRounds  = 3
		perConfig  = 300 // creates per configuration, round and concurrency
		configured = "bench.endpoint-policy.io/config"
		warmUp     = 20 // creates per configuration before the rounds
	)

	It("adds to a hostNetwork pod creation about what the minimal webhook and a MutatingAdmissionPolicy add", func(ctx context.Context) {
		skipUnlessBench()
		// A follower, as every replica but the leader is: admission only; the
		// suite's server holds the lease and runs the controllers.
		ours := launchReplica("e2e", "", newFileLog("server.log"), []string{"--leader-elect", "--leader-election-namespace=" + serverNamespace})
		singlePprof := freeAddr()
		single := launchReplica("e2e-single", "", newFileLog("single.log"), []string{"--pprof-bind-address=" + singlePprof})
		minimal := startMinimalWebhook()

		cfg := rest.CopyConfig(restConfig)
		cfg.QPS, cfg.Burst = -1, 0 // no client-side rate limit
		c, err := client.New(cfg, client.Options{})
		Expect(err).NotTo(HaveOccurred())

		configs := []string{"baseline", "endpoint-policy", singleReplica, "minimal webhook", "MutatingAdmissionPolicy"}
		namespaces := make([]string, len(configs))
		for i, name := range configs {
			labels := map[string]string{configured: strings.ReplaceAll(name, " ", "-")}
			if name != singleReplica {
				labels["endpoint-policy.io/exclude"] = "true"
			}
			namespaces[i] = newNamespace(ctx, labels)
		}
		withoutWebhooks(ctx, func() {
			faultWebhook(ctx, namespaces[1], "https://"+ours.addr()+epwebhook.MutatePodPath, admissionregistrationv1.Ignore, 10, nil)
			faultWebhook(ctx, namespaces[2], "https://"+single.addr()+epwebhook.MutatePodPath, admissionregistrationv1.Ignore, 10, nil)
			faultWebhook(ctx, namespaces[3], "https://"+minimal.addr+"/mutate", admissionregistrationv1.Ignore, 10, nil)
			registerMutatingAdmissionPolicy(ctx, namespaces[4])
			for _, ns := range namespaces[1:] {
				untilMutated(ctx, ns)
			}

			type key struct {
				config      string
				concurrency int
			}
			p50, p99 := map[key]spread{}, map[key]spread{}
			cpu, cpuCreates := map[key]spread{}, map[key]spread{}
			pids := map[string]int{"endpoint-policy": ours.cmd.Process.Pid, singleReplica: single.cmd.Process.Pid, "minimal webhook": minimal.cmd.Process.Pid}
			deleteAndSettle := func() {
				for _, ns := range namespaces {
					Expect(c.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace(ns), client.GracePeriodSeconds(0))).To(Succeed())
				}
				untilIdle(single.cmd.Process.Pid)
			}
			createInterleaved(ctx, c, namespaces, 1, warmUp)
			deleteAndSettle()
			// The single replica's CPU profile over the first round's two
			// concurrencies, beside the report (docs/performance.md).
			profiled := saveProfile(singlePprof, "profile?seconds=20", "e2e-single-cpu.pprof")
			for round := range e2eRounds {
				for _, concurrency := range []int{1, 8} {
					cpu0 := map[string]time.Duration{}
					for name, pid := range pids {
						cpu0[name] = procCPU(pid)
					}
					lat := createInterleaved(ctx, c, namespaces, concurrency, perConfig/concurrency)
					afterCreates := map[string]time.Duration{}
					for name, pid := range pids {
						afterCreates[name] = procCPU(pid)
					}
					// A pod's cost to the single replica ends with its
					// deletion, which its watch sees too: delete them within
					// the round, and wait until it has caught up.
					deleteAndSettle()
					for i, name := range configs {
						k := key{name, concurrency}
						p50[k] = append(p50[k], percentile(lat[i], 0.50))
						p99[k] = append(p99[k], percentile(lat[i], 0.99))
						if pid, ok := pids[name]; ok {
							perPod := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(len(lat[i])) }
							cpu[k] = append(cpu[k], perPod(procCPU(pid)-cpu0[name]))
							cpuCreates[k] = append(cpuCreates[k], perPod(afterCreates[name]-cpu0[name]))
						}
					}
				}
				GinkgoWriter.Printf("round %d done\n", round+1)
			}

			Eventually(profiled).WithTimeout(time.Minute).Should(BeClosed())
			// RSS after the run, as a user's replicas are after a rollout:
			// the single replica has audited every pod it admitted.
			rss := map[string]float64{}
			for name, pid := range pids {
				rss[name] = float64(procRSS(pid)) / (1 << 20)
			}
			created := (warmUp + e2eRounds*(perConfig+(perConfig/8)*8)) * len(configs) // in all namespaces

			var b strings.Builder
			fmt.Fprintf(&b, "## End to end: Pod CREATE through the envtest kube-apiserver\n\nMachine: %s. %d rounds; per round, concurrency and configuration %d creates, interleaved request by request; median (min–max) over the rounds of each round's percentile. Added: the configuration's median minus the baseline's. Webhook CPU: the webhook process's CPU time over the round, per pod it was called for: over the creates, and over a pod's whole life (the creates, then the pods' deletion until the single replica is idle again; its watch sees both).\n\n",
				machine(), e2eRounds, perConfig)
			fmt.Fprintln(&b, "| Concurrency | Configuration | p50 ms | p99 ms | added p50 ms | added p99 ms | webhook CPU µs/pod, creates | whole life |")
			fmt.Fprintln(&b, "|---|---|---|---|---|---|---|---|")
			added := map[key][2]float64{}
			for _, concurrency := range []int{1, 8} {
				base := key{"baseline", concurrency}
				for _, name := range configs {
					k := key{name, concurrency}
					a := [2]float64{p50[k].median() - p50[base].median(), p99[k].median() - p99[base].median()}
					added[k] = a
					addedCells := "– | –"
					if name != "baseline" {
						addedCells = fmt.Sprintf("%+.2f | %+.2f", a[0], a[1])
					}
					fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s | %s |\n", concurrency, name, p50[k], p99[k], addedCells, cpuCreates[k].format("%.0f"), cpu[k].format("%.0f"))
				}
			}
			fmt.Fprintln(&b)
			for _, concurrency := range []int{1, 8} {
				o, m, p := added[key{"endpoint-policy", concurrency}], added[key{"minimal webhook", concurrency}], added[key{"MutatingAdmissionPolicy", concurrency}]
				fmt.Fprintf(&b, "Concurrency %d: endpoint-policy's added latency / the minimal webhook's: p50 %.2f×, p99 %.2f×; / the MutatingAdmissionPolicy's: p50 %.2f×, p99 %.2f×.\n",
					concurrency, o[0]/m[0], o[1]/m[1], o[0]/p[0], o[1]/p[1])
			}
			ratio := func(cpu map[key]spread, name string, concurrency int) float64 {
				return cpu[key{name, concurrency}].median() / cpu[key{"minimal webhook", concurrency}].median()
			}
			fmt.Fprintf(&b, "\n**Headline, as a user runs it** (README, top of docs/performance.md): CPU per admitted pod / the minimal webhook's, "+
				"a follower (admission only): %.2f× at concurrency 1, %.2f× at 8; the leader or single replica (admission, audit and controllers, "+
				"seeing the pods it admits): over the creates %.2f× at 1, %.2f× at 8; over a pod's whole life %.2f× at 1, %.2f× at 8. "+
				"RSS after the run (%d hostNetwork pods created): follower %.1f MiB, single replica %.1f MiB, minimal webhook %.1f MiB.\n",
				ratio(cpu, "endpoint-policy", 1), ratio(cpu, "endpoint-policy", 8),
				ratio(cpuCreates, singleReplica, 1), ratio(cpuCreates, singleReplica, 8), ratio(cpu, singleReplica, 1), ratio(cpu, singleReplica, 8),
				created, rss["endpoint-policy"], rss[singleReplica], rss["minimal webhook"])
			writeBenchReport("e2e.md", b.String())
		})
	})
})

// registerMutatingAdmissionPolicy makes the API server itself do the rewrite
// for hostNetwork pods created in namespace ns.
func registerMutatingAdmissionPolicy(ctx context.Context, ns string) {
	GinkgoHelper()
	policy := &admissionregistrationv1.MutatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "bench-host-network-endpoint-" + ns},
		Spec: admissionregistrationv1.MutatingAdmissionPolicySpec{
			MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
					Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
				}}}},
			MatchConditions: []admissionregistrationv1.MatchCondition{{Name: "host-network", Expression: "has(object.spec.hostNetwork) && object.spec.hostNetwork"}},
			Mutations: []admissionregistrationv1.Mutation{{
				PatchType:          admissionregistrationv1.PatchTypeApplyConfiguration,
				ApplyConfiguration: &admissionregistrationv1.ApplyConfiguration{Expression: mapApplyConfiguration},
			}},
			FailurePolicy:      ptr.To(admissionregistrationv1.Ignore),
			ReinvocationPolicy: admissionregistrationv1.NeverReinvocationPolicy,
		},
	}
	Expect(k8s.Create(ctx, policy)).To(Succeed(), "MutatingAdmissionPolicy (admissionregistration.k8s.io/v1) served by the envtest kube-apiserver")
	DeferCleanup(func(ctx context.Context) { Expect(k8s.Delete(ctx, policy)).To(Succeed()) })
	binding := &admissionregistrationv1.MutatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: policy.Name},
		Spec: admissionregistrationv1.MutatingAdmissionPolicyBindingSpec{
			PolicyName: policy.Name,
			MatchResources: &admissionregistrationv1.MatchResources{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: ns}},
			},
		},
	}
	Expect(k8s.Create(ctx, binding)).To(Succeed())
	DeferCleanup(func(ctx context.Context) { Expect(k8s.Delete(ctx, binding)).To(Succeed()) })
}

// createInterleaved creates, on concurrency workers, perWorker rounds of
// one cilium-operator pod in each of namespaces (a rotating order), and
// returns the latencies per namespace, sorted. The pods of the first
// namespace must come back untouched, the others' rewritten.
func createInterleaved(ctx context.Context, c client.Client, namespaces []string, concurrency, perWorker int) [][]time.Duration {
	GinkgoHelper()
	var (
		mu        sync.Mutex
		latencies = make([][]time.Duration, len(namespaces))
		wrong     []string
	)
	parallelN(concurrency, concurrency*perWorker, func(iteration int) error {
		for j := range namespaces {
			i := (iteration + j) % len(namespaces)
			p := fixtures.CiliumOperator()
			p.Namespace = namespaces[i]
			start := time.Now()
			if err := c.Create(ctx, p); err != nil {
				return err
			}
			took := time.Since(start)
			env := p.Spec.Containers[0].Env
			rewritten := len(env) > 0 && env[len(env)-1].Name == "KUBERNETES_SERVICE_PORT" && p.Annotations["endpoint-policy.io/endpoint"] == "localhost:7443"
			mu.Lock()
			latencies[i] = append(latencies[i], took)
			if rewritten != (i > 0) {
				wrong = append(wrong, p.Namespace+"/"+p.Name)
			}
			mu.Unlock()
		}
		return nil
	})
	Expect(wrong).To(BeEmpty(), "pods not as expected (the first namespace's untouched, the others' rewritten)")
	for _, l := range latencies {
		slices.Sort(l)
	}
	return latencies
}
