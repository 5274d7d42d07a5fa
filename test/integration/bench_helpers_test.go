package integration

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// Helpers of the make bench specs (label "bench"): processes measured from
// /proc, the minimal reference webhook, and the report.

// BenchDirEnv names the directory make bench writes its report into.
const BenchDirEnv = "ENDPOINT_POLICY_BENCH_DIR"

// skipUnlessBench skips a benchmark spec outside make bench.
func skipUnlessBench() {
	if os.Getenv(BenchEnv) == "" {
		Skip("a benchmark: run with make bench (" + BenchEnv + "=1)")
	}
}

// writeBenchReport writes one section of the report to the bench directory
// (and the spec's output).
func writeBenchReport(name, content string) {
	GinkgoHelper()
	fmt.Fprintln(os.Stdout, content)
	dir := os.Getenv(BenchDirEnv)
	if dir == "" {
		return
	}
	Expect(os.MkdirAll(dir, 0o755)).To(Succeed())
	Expect(os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644)).To(Succeed())
}

// procCPU is the user + system CPU time process pid has used.
func procCPU(pid int) time.Duration {
	GinkgoHelper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	Expect(err).NotTo(HaveOccurred())
	// The fields after the command name, which is in parentheses: state is
	// field 3 of proc(5), utime 14 and stime 15, in clock ticks (USER_HZ,
	// 100 on Linux).
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, err := strconv.ParseInt(fields[11], 10, 64)
	Expect(err).NotTo(HaveOccurred())
	stime, err := strconv.ParseInt(fields[12], 10, 64)
	Expect(err).NotTo(HaveOccurred())
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// procRSS is process pid's resident set size in bytes (VmRSS).
func procRSS(pid int) uint64 { return procStatus(pid, "VmRSS") }

// procStatus reads a size in kB from /proc/pid/status (VmRSS, RssAnon,
// RssFile), in bytes; 0 when the process is gone.
func procStatus(pid int, field string) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// rssSampler records the highest RSS of pid, every 50 ms, until stopped.
type rssSampler struct {
	max  uint64
	done chan struct{}
	wg   sync.WaitGroup
}

func sampleRSS(pid int) *rssSampler {
	s := &rssSampler{done: make(chan struct{}), max: procRSS(pid)}
	s.wg.Go(func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.done:
				return
			case <-t.C:
				s.max = max(s.max, procRSS(pid))
			}
		}
	})
	return s
}

func (s *rssSampler) stop() uint64 {
	close(s.done)
	s.wg.Wait()
	return s.max
}

var (
	minimalOnce   sync.Once
	minimalBinary string
)

// minimalWebhook is test/bench/minimalwebhook running on loopback with the
// suite's serving certificate.
type minimalWebhook struct {
	cmd  *exec.Cmd
	addr string
}

func startMinimalWebhook() *minimalWebhook {
	GinkgoHelper()
	minimalOnce.Do(func() { minimalBinary = goBuild("./test/bench/minimalwebhook") })
	certDir := testEnv.WebhookInstallOptions.LocalServingCertDir
	m := &minimalWebhook{addr: freeAddr()}
	m.cmd = exec.Command(minimalBinary, "--addr="+m.addr,
		"--cert="+filepath.Join(certDir, "tls.crt"), "--key="+filepath.Join(certDir, "tls.key"))
	m.cmd.Stdout, m.cmd.Stderr = GinkgoWriter, GinkgoWriter
	Expect(m.cmd.Start()).To(Succeed())
	DeferCleanup(func() {
		_ = m.cmd.Process.Kill()
		_ = m.cmd.Wait()
	})
	Eventually(func() error {
		c, err := net.DialTimeout("tcp", m.addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}).WithTimeout(settle).WithPolling(50 * time.Millisecond).Should(Succeed())
	return m
}

// webhookClient calls a webhook on loopback as the API server does: HTTPS
// with the suite's CA, HTTP/1.1, kept-alive connections, up to conns of them.
func webhookClient(conns int) *http.Client {
	pool := x509.NewCertPool()
	Expect(pool.AppendCertsFromPEM(testEnv.WebhookInstallOptions.LocalServingCAData)).To(BeTrue())
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, IdleConnTimeout: time.Minute,
		DisableCompression: true,
	}}
}

// spread is the min, median and max of repeated measurements.
type spread []float64

func (s spread) String() string { return s.format("%.2f") }

func (s spread) format(verb string) string {
	if len(s) == 0 {
		return "–"
	}
	v := slices.Clone(s)
	slices.Sort(v)
	med := v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	if len(v) == 1 {
		return fmt.Sprintf(verb, med)
	}
	return fmt.Sprintf(verb+" ("+verb+"–"+verb+")", med, v[0], v[len(v)-1])
}

func (s spread) median() float64 {
	v := slices.Clone(s)
	slices.Sort(v)
	if len(v) == 0 {
		return 0
	}
	if len(v)%2 == 0 {
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return v[len(v)/2]
}

// percentile of sorted latencies, in milliseconds.
func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p)
	return float64(sorted[i].Microseconds()) / 1000
}

// machine describes where the figures were taken.
func machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	out, _ := exec.Command("go", "version").Output()
	return fmt.Sprintf("%s, %d CPUs visible; %s", cpu, runtime.NumCPU(), strings.TrimSpace(string(out)))
}

// saveProfile fetches pprof's profile kind from the /debug/pprof server at
// addr into the bench directory as name, in the background; the channel is
// closed when it is written (or the bench directory is not set).
func saveProfile(addr, kind, name string) <-chan struct{} {
	done := make(chan struct{})
	dir := os.Getenv(BenchDirEnv)
	if dir == "" {
		close(done)
		return done
	}
	go func() {
		defer GinkgoRecover()
		defer close(done)
		resp, err := http.Get("http://" + addr + "/debug/pprof/" + kind)
		Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(http.StatusOK))
		b, err := io.ReadAll(resp.Body)
		Expect(err).NotTo(HaveOccurred())
		Expect(os.MkdirAll(dir, 0o755)).To(Succeed())
		Expect(os.WriteFile(filepath.Join(dir, name), b, 0o644)).To(Succeed())
	}()
	return done
}

// untilIdle waits until process pid uses less than 2% of a CPU over a
// quarter of a second: it has handled what it was sent.
func untilIdle(pid int) {
	GinkgoHelper()
	last, at := procCPU(pid), time.Now()
	Eventually(func() float64 {
		now, t := procCPU(pid), time.Now()
		if t.Sub(at) < 200*time.Millisecond {
			return 1 // too short to tell
		}
		share := float64(now-last) / float64(t.Sub(at))
		last, at = now, t
		return share
	}).WithTimeout(time.Minute).WithPolling(250*time.Millisecond).Should(BeNumerically("<", 0.02), "the process's share of a CPU")
}
