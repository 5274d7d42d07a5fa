package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/endpoint-policy/endpoint-policy/internal/testing/fixtures"
	epwebhook "github.com/endpoint-policy/endpoint-policy/internal/webhook"
)

// BenchmarkServer, as a Ginkgo spec (make bench): AdmissionReviews of the
// cilium-operator fixture pod posted over HTTPS, kept-alive HTTP/1.1
// connections, to `endpoint-policy serve` and to the minimal reference
// webhook (test/bench/minimalwebhook), at fixed rates (open loop: latency is
// taken from the scheduled send time, so a stalled server cannot hide its
// queue) and at saturation (closed loop). The targets alternate phase by
// phase, serverRounds times. CPU is the process's user + system time from
// /proc, RSS its highest VmRSS sampled every 50 ms.
var _ = Describe("BenchmarkServer", Label("bench"), func() {
	const (
		serverRounds  = 3
		phaseDuration = 5 * time.Second
		conns         = 8 // concurrent calls, each on its own kept-alive connection
	)
	type phase struct {
		name string
		rate int // reviews per second; 0: as fast as answered
	}
	phases := []phase{{"100/s", 100}, {"400/s", 400}, {"saturation", 0}}

	It("serves the AdmissionReviews of a hostNetwork pod at fixed rates and at saturation, side by side with the minimal webhook", func(ctx context.Context) {
		skipUnlessBench()
		pprofAddr := freeAddr()
		ours := launchReplica("bench", "", newFileLog("server.log"), []string{"--pprof-bind-address=" + pprofAddr})
		minimal := startMinimalWebhook()
		body := fixtures.Review(fixtures.CiliumOperator(), "pods")

		type target struct {
			name   string
			url    string
			pid    int
			client *http.Client
		}
		targets := []target{
			{"endpoint-policy", "https://" + ours.addr() + epwebhook.MutatePodPath, ours.cmd.Process.Pid, webhookClient(conns)},
			{"minimal webhook", "https://" + minimal.addr + "/mutate", minimal.cmd.Process.Pid, webhookClient(conns)},
		}
		type result struct{ rps, p50, p99, maxMs, errors, cpuUs, rssMiB spread }
		results := map[string]*result{}
		idleRSS := map[string]float64{}
		for _, t := range targets {
			// Warm up: connections open, code paths and heap grown.
			drive(t.client, t.url, body, 0, conns, time.Second)
			idleRSS[t.name] = float64(procRSS(t.pid)) / (1 << 20)
		}
		var profile []byte
		for round := range serverRounds {
			for _, ph := range phases {
				for _, t := range targets {
					var profiled chan []byte
					if round == serverRounds-1 && ph.rate == 0 && t.name == "endpoint-policy" {
						profiled = make(chan []byte, 1)
						go func() {
							defer GinkgoRecover()
							profiled <- fetch(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", pprofAddr, int(phaseDuration/time.Second)-1))
						}()
					}
					cpu0 := procCPU(t.pid)
					rss := sampleRSS(t.pid)
					s := drive(t.client, t.url, body, ph.rate, conns, phaseDuration)
					maxRSS := rss.stop()
					cpu := procCPU(t.pid) - cpu0
					if profiled != nil {
						profile = <-profiled
					}
					key := t.name + "|" + ph.name
					r := results[key]
					if r == nil {
						r = &result{}
						results[key] = r
					}
					n := float64(len(s.latencies) + s.errors)
					r.rps = append(r.rps, float64(len(s.latencies))/s.elapsed.Seconds())
					r.p50 = append(r.p50, percentile(s.latencies, 0.50))
					r.p99 = append(r.p99, percentile(s.latencies, 0.99))
					r.maxMs = append(r.maxMs, percentile(s.latencies, 1))
					r.errors = append(r.errors, float64(s.errors))
					r.cpuUs = append(r.cpuUs, float64(cpu.Microseconds())/n)
					r.rssMiB = append(r.rssMiB, float64(maxRSS)/(1<<20))
					GinkgoWriter.Printf("round %d %s %s: %d reviews, %d errors, %s CPU\n", round+1, ph.name, t.name, len(s.latencies), s.errors, cpu)
				}
			}
		}

		var b strings.Builder
		fmt.Fprintf(&b, "## Server: %s\n\nMachine: %s. %d rounds of %s per phase, %d connections, targets alternating phase by phase; median (min–max) over the rounds.\n\n",
			"AdmissionReviews over HTTPS", machine(), serverRounds, phaseDuration, conns)
		fmt.Fprintln(&b, "| Phase | Server | Reviews/s | p50 ms | p99 ms | max ms | Errors | CPU µs/review | RSS MiB (max) |")
		fmt.Fprintln(&b, "|---|---|---|---|---|---|---|---|---|")
		for _, ph := range phases {
			for _, t := range targets {
				r := results[t.name+"|"+ph.name]
				fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", ph.name, t.name, r.rps.format("%.0f"), r.p50, r.p99, r.maxMs,
					r.errors.format("%.0f"), r.cpuUs.format("%.0f"), r.rssMiB.format("%.1f"))
			}
		}
		fmt.Fprintf(&b, "\nIdle RSS after warm-up: endpoint-policy %.1f MiB, minimal webhook %.1f MiB.\n", idleRSS["endpoint-policy"], idleRSS["minimal webhook"])
		for _, ph := range phases {
			o, m := results["endpoint-policy|"+ph.name], results["minimal webhook|"+ph.name]
			fmt.Fprintf(&b, "CPU per review, endpoint-policy / minimal webhook, %s: %.2f×.\n", ph.name, o.cpuUs.median()/m.cpuUs.median())
		}
		writeBenchReport("server.md", b.String())

		Expect(profile).NotTo(BeEmpty())
		profileFile := filepath.Join(GinkgoT().TempDir(), "cpu.pprof")
		if dir := os.Getenv(BenchDirEnv); dir != "" {
			profileFile = filepath.Join(dir, "server-cpu.pprof")
		}
		Expect(os.WriteFile(profileFile, profile, 0o644)).To(Succeed())
		top, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=40", serverBinary(), profileFile).CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), "%s", top)
		cum, err := exec.Command("go", "tool", "pprof", "-top", "-cum", "-nodecount=60", serverBinary(), profileFile).CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), "%s", cum)
		writeBenchReport("server-cpu-profile.txt", "# endpoint-policy serve at saturation, by flat time\n"+string(top)+
			"\n# by cumulative time\n"+string(cum))
	})
})

type loadSample struct {
	latencies []time.Duration // of the successful reviews, sorted
	errors    int
	elapsed   time.Duration
}

// drive posts body to url for d: rate reviews per second spread over conns
// workers (open loop), or, with rate 0, conns workers back to back. A review
// succeeds when the answer is HTTP 200 with a patch.
func drive(c *http.Client, url string, body []byte, rate, conns int, d time.Duration) loadSample {
	var (
		mu sync.Mutex
		s  loadSample
		wg sync.WaitGroup
	)
	call := func(scheduled time.Time) {
		ok := false
		resp, err := c.Post(url, "application/json", bytes.NewReader(body))
		if err == nil {
			answer, readErr := io.ReadAll(resp.Body)
			resp.Body.Close()
			ok = readErr == nil && resp.StatusCode == http.StatusOK && bytes.Contains(answer, []byte(`"patch"`))
		}
		took := time.Since(scheduled)
		mu.Lock()
		defer mu.Unlock()
		if ok {
			s.latencies = append(s.latencies, took)
		} else {
			s.errors++
		}
	}
	start := time.Now()
	deadline := start.Add(d)
	if rate == 0 {
		for range conns {
			wg.Go(func() {
				for time.Now().Before(deadline) {
					call(time.Now())
				}
			})
		}
	} else {
		jobs := make(chan time.Time, rate*int(d/time.Second)+1)
		for range conns {
			wg.Go(func() {
				for t := range jobs {
					call(t)
				}
			})
		}
		interval := time.Second / time.Duration(rate)
		for i := 0; ; i++ {
			t := start.Add(time.Duration(i) * interval)
			if !t.Before(deadline) {
				break
			}
			time.Sleep(time.Until(t))
			jobs <- t
		}
		close(jobs)
	}
	wg.Wait()
	s.elapsed = time.Since(start)
	slices.Sort(s.latencies)
	return s
}

func fetch(url string) []byte {
	GinkgoHelper()
	resp, err := http.Get(url)
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	Expect(err).NotTo(HaveOccurred())
	Expect(resp.StatusCode).To(Equal(http.StatusOK), "%s", b)
	return b
}
