package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// BenchmarkMemory20000Pods, as a Ginkgo spec (make bench): the memory of
// `endpoint-policy serve` (controllers and caches running, no leader
// election) in a cluster without unrelated pods, then with 20,000 of them
// (not hostNetwork: nothing the policies look at) — the replica that was
// running while they were created, and one started afterwards, which lists
// them from the start.
var _ = Describe("BenchmarkMemory20000Pods", Label("bench"), func() {
	const unrelated = 20000

	It("keeps the server's memory flat when 20,000 unrelated pods exist", func(ctx context.Context) {
		skipUnlessBench()
		ns := newNamespace(ctx, nil)
		before := startMeasuredReplica("memory-before")
		empty := measureMemory(before)

		By(fmt.Sprintf("creating %d unrelated pods", unrelated))
		cfg := rest.CopyConfig(restConfig)
		cfg.QPS, cfg.Burst = -1, 0
		c, err := client.New(cfg, client.Options{})
		Expect(err).NotTo(HaveOccurred())
		pods := make([]*corev1.Pod, unrelated)
		DeferCleanup(func(ctx context.Context) {
			// One DELETE each: a collection delete of 20,000 pods outlasts
			// the API server's request timeout.
			parallel(unrelated, func(i int) error { return client.IgnoreNotFound(c.Delete(ctx, pods[i], client.GracePeriodSeconds(0))) })
		})
		start := time.Now()
		parallel(unrelated, func(i int) error {
			pods[i] = pod(ns, false, nil)
			return c.Create(ctx, pods[i])
		})
		created := time.Since(start)
		afterCreate := measureMemory(before)
		after := startMeasuredReplica("memory-after")
		fresh := measureMemory(after)

		var b strings.Builder
		fmt.Fprintf(&b, "## Memory: %d unrelated pods\n\nMachine: %s. `endpoint-policy serve` with its controllers and caches (no leader election, so every cache is filled). Each figure is the median of 5 samples 500 ms apart; Go heap in use after a forced GC (`/debug/pprof/heap?gc=1`). The %d pods (not hostNetwork) took %s to create.\n\n",
			unrelated, machine(), unrelated, created.Round(time.Second))
		fmt.Fprintln(&b, "| Replica | Cluster | RSS MiB | of which anonymous | of which file (the binary) | Go heap in use MiB |")
		fmt.Fprintln(&b, "|---|---|---|---|---|---|")
		for _, row := range []struct {
			replica, cluster string
			m                memory
		}{
			{"started before", "no unrelated pods", empty},
			{"started before", fmt.Sprintf("%d unrelated pods created while it ran", unrelated), afterCreate},
			{"started after", fmt.Sprintf("%d unrelated pods listed at start", unrelated), fresh},
		} {
			fmt.Fprintf(&b, "| %s | %s | %.1f | %.1f | %.1f | %.1f |\n", row.replica, row.cluster, row.m.rss, row.m.anon, row.m.file, row.m.heap)
		}
		writeBenchReport("memory.md", b.String())
	})
})

type memory struct{ rss, anon, file, heap float64 } // MiB

// startMeasuredReplica starts a replica with its pprof endpoint on loopback.
func startMeasuredReplica(name string) *measuredReplica {
	GinkgoHelper()
	pprofAddr := freeAddr()
	return &measuredReplica{launchReplica(name, "", newFileLog(name+".log"), []string{"--pprof-bind-address=" + pprofAddr}), pprofAddr}
}

type measuredReplica struct {
	*replica
	pprofAddr string
}

// measureMemory samples RSS and the Go heap in use after a GC 5 times,
// 500 ms apart, and returns the medians.
func measureMemory(r *measuredReplica) memory {
	GinkgoHelper()
	var rss, anon, file, heap spread
	for i := range 5 {
		if i > 0 {
			time.Sleep(500 * time.Millisecond) // sampling interval, not synchronisation
		}
		rss = append(rss, float64(procStatus(r.cmd.Process.Pid, "VmRSS"))/(1<<20))
		anon = append(anon, float64(procStatus(r.cmd.Process.Pid, "RssAnon"))/(1<<20))
		file = append(file, float64(procStatus(r.cmd.Process.Pid, "RssFile"))/(1<<20))
		heap = append(heap, heapInuse(fetch("http://"+r.pprofAddr+"/debug/pprof/heap?gc=1&debug=1"))/(1<<20))
	}
	return memory{rss: rss.median(), anon: anon.median(), file: file.median(), heap: heap.median()}
}

// heapInuse reads "# HeapInuse = N" from a debug=1 heap profile.
func heapInuse(profile []byte) float64 {
	GinkgoHelper()
	s := bufio.NewScanner(bytes.NewReader(profile))
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "# HeapInuse = "); ok {
			n, err := strconv.ParseFloat(v, 64)
			Expect(err).NotTo(HaveOccurred())
			return n
		}
	}
	Fail("no HeapInuse in the heap profile")
	return 0
}
