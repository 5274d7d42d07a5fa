// Package proctest helps tests that run endpoint-policy, or the tools that
// build it, as separate processes: loopback ports, readiness, and go test's
// result cache.
package proctest

import (
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/onsi/gomega"
)

// FreePort returns a TCP port free on 127.0.0.1 now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// ReadTree reads every file under each path. Tests that hand the sources to
// another process (go build, helm, make) call it from TestMain: go test's
// result cache sees only the files the test binary opens, so reading them
// makes a change to any of them run the tests again instead of reporting a
// cached pass.
func ReadTree(paths ...string) error {
	for _, p := range paths {
		if err := filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			_, err = os.ReadFile(path)
			return err
		}); err != nil {
			return err
		}
	}
	return nil
}

// Ready waits until url answers 200, giving up at once when the process
// reports its exit on exited (which is sent the error back, for whoever
// waits on it next).
func Ready(t testing.TB, url string, exited chan error, timeout time.Duration, what string) {
	t.Helper()
	gomega.NewWithT(t).Eventually(func() (int, error) {
		select {
		case err := <-exited:
			exited <- err
			return 0, gomega.StopTrying(fmt.Sprintf("%s exited (%v) before it was ready", what, err))
		default:
		}
		resp, err := http.Get(url)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}, timeout, 100*time.Millisecond).Should(gomega.Equal(http.StatusOK), "%s never became ready", what)
}

// GoBuild returns the arguments of a `go build` of a binary the suites run
// as a process: with -race when race is set (outside the benchmarks, which
// measure the binary users run), so that the real process is checked for
// data races under the suites' load, and so that it links from the
// race-instrumented packages `make test` has compiled for go test -race
// (make race-build) instead of compiling every dependency a second time
// (docs/performance.md, "Cold build"). The process then stops at the first
// race it detects (RaceEnv).
func GoBuild(race bool, args ...string) []string {
	if race {
		return append([]string{"build", "-race"}, args...)
	}
	return append([]string{"build"}, args...)
}

// HaltOnRace makes the race-instrumented processes a test starts (they
// inherit its environment) exit at their first data race, status 66 with the
// report on stderr, instead of running on: the test then fails on it.
func HaltOnRace(t testing.TB) {
	t.Setenv("GORACE", "halt_on_error=1")
}
