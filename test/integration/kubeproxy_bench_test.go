package integration

import (
	"context"
	"fmt"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/endpoint-policy/endpoint-policy/internal/policy/kubeproxy"
)

// BenchEnv turns on the benchmarks of this suite (make bench). They are
// measurements, not tests: they assert only that the work completes.
const BenchEnv = "ENDPOINT_POLICY_BENCH"

const (
	benchNodes   = 500
	benchRounds  = 3
	benchWorkers = 16 // concurrent client requests to set up and taint
)

// BenchmarkNodeDeleting500Nodes, as a Ginkgo spec so that it runs on the
// suite's API server and server: 500 nodes with one kube-proxy pod each are
// tainted ToBeDeletedByClusterAutoscaler at once (16 concurrent PATCHes), and
// the time is taken from the first PATCH until a watch on the pods has seen
// all 500 annotated; then the taints are removed and the time until every
// annotation is gone is taken the same way.
var _ = Describe("BenchmarkNodeDeleting500Nodes", Label("bench"), Ordered, func() {
	var (
		ns    string
		nodes []*corev1.Node
	)
	BeforeAll(func(ctx context.Context) {
		skipUnlessBench()
		ns = newNamespace(ctx, nil)
		nodes = make([]*corev1.Node, benchNodes)
		DeferCleanup(func(ctx context.Context) {
			Expect(k8s.DeleteAllOf(ctx, &corev1.Node{}, client.MatchingLabels{"bench.endpoint-policy.io/node": "true"})).To(Succeed())
		})
		parallel(benchNodes, func(i int) error {
			n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
				Name:   fmt.Sprintf("bench-%03d", i),
				Labels: map[string]string{"bench.endpoint-policy.io/node": "true"},
			}}
			if err := k8s.Create(ctx, n); err != nil {
				return err
			}
			nodes[i] = n
			return k8s.Create(ctx, kubeProxyPod(ns, n.Name))
		})
	})

	It("annotates every kube-proxy pod of 500 nodes tainted at once", func(ctx context.Context) {
		var tainted, annotated, removed spread
		for round := range benchRounds {
			start := time.Now()
			parallel(benchNodes, func(i int) error {
				n := nodes[i]
				patch := client.MergeFrom(n.DeepCopy())
				n.Spec.Taints = []corev1.Taint{{Key: kubeproxy.ToBeDeletedTaint, Value: fmt.Sprint(start.Unix()), Effect: corev1.TaintEffectNoSchedule}}
				return k8s.Patch(ctx, n, patch)
			})
			tainted = append(tainted, time.Since(start).Seconds())
			annotated = append(annotated, waitForAnnotated(ctx, ns, benchNodes, start).Seconds())

			start = time.Now()
			parallel(benchNodes, func(i int) error {
				n := nodes[i]
				patch := client.MergeFrom(n.DeepCopy())
				n.Spec.Taints = nil
				return k8s.Patch(ctx, n, patch)
			})
			removed = append(removed, waitForAnnotated(ctx, ns, 0, start).Seconds())
			GinkgoWriter.Printf("round %d done\n", round+1)
		}
		writeBenchReport("kube-proxy.md", fmt.Sprintf(`## Controller: %d nodes tainted at once

Machine: %s. The suite's server (leader) annotates; %d concurrent PATCHes taint the nodes; a watch on the pods sees the annotations. Seconds, median (min–max) over %d rounds.

| Measure | s |
|---|---|
| taint %d nodes (client) | %s |
| from the first PATCH until all %d pods are annotated | %s |
| from the first untaint until all %d annotations are removed | %s |
`, benchNodes, machine(), benchWorkers, benchRounds, benchNodes, tainted, benchNodes, annotated, benchNodes, removed))
	})
})

// waitForAnnotated watches the pods of namespace until exactly want of them
// carry the node-deleting annotation, and returns the time since start. A
// watch starts with the current state of every pod, so a watch that ends is
// simply opened again.
func waitForAnnotated(ctx context.Context, namespace string, want int, start time.Time) time.Duration {
	GinkgoHelper()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for {
		w, err := k8sWatch.Watch(ctx, &corev1.PodList{}, client.InNamespace(namespace))
		Expect(err).NotTo(HaveOccurred())
		annotated := map[string]bool{}
		count := 0
		for ev := range w.ResultChan() {
			p, isPod := ev.Object.(*corev1.Pod)
			if !isPod {
				continue
			}
			_, has := p.Annotations[kubeproxy.NodeDeletingAnnotation]
			has = has && ev.Type != watch.Deleted
			if has != annotated[p.Name] {
				if has {
					count++
				} else {
					count--
				}
			}
			annotated[p.Name] = has
			if len(annotated) >= benchNodes && count == want {
				w.Stop()
				return time.Since(start)
			}
		}
		Expect(ctx.Err()).NotTo(HaveOccurred(), "%d of %d pods annotated, want %d", count, len(annotated), want)
		GinkgoWriter.Println("the pod watch ended; watching again")
	}
}

// parallel runs f(0..n-1) on benchWorkers goroutines and fails on the first
// error.
func parallel(n int, f func(i int) error) {
	GinkgoHelper()
	parallelN(benchWorkers, n, f)
}

// parallelN runs f(0..n-1) on workers goroutines and fails on the first
// error.
func parallelN(workers, n int, f func(i int) error) {
	GinkgoHelper()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	next := make(chan int)
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	Expect(first).NotTo(HaveOccurred())
}
