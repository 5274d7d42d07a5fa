package config_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/onsi/gomega"

	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

// recorder collects what a Watcher applies and reports.
type recorder struct {
	mu      sync.Mutex
	applied []policy.Mode
	results []error
}

func (r *recorder) apply(c *config.PolicyConfiguration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.applied = append(r.applied, c.Mode)
	return nil
}

func (r *recorder) result(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.results = append(r.results, err)
}

func (r *recorder) snapshot() ([]policy.Mode, []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]policy.Mode(nil), r.applied...), append([]error(nil), r.results...)
}

func TestWatcherReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(header + "mode: Enforce\n")
	_, raw, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	w := config.NewWatcher(path, raw, time.Hour, logr.Discard(), rec.apply, rec.result)

	// Unchanged content: nothing applied, nothing reported.
	w.Reload()
	if applied, results := rec.snapshot(); len(applied)+len(results) != 0 {
		t.Fatalf("unchanged file: applied %v, results %v", applied, results)
	}

	// A valid change is applied.
	write(header + "mode: Audit\n")
	w.Reload()
	if applied, results := rec.snapshot(); len(applied) != 1 || applied[0] != policy.Audit || results[0] != nil {
		t.Fatalf("valid change: applied %v, results %v", applied, results)
	}

	// An invalid change is reported, not applied, and not reported again
	// while the file stays the same.
	write(header + "mode: Sometimes\n")
	w.Reload()
	w.Reload()
	applied, results := rec.snapshot()
	if len(applied) != 1 || len(results) != 2 || results[1] == nil {
		t.Fatalf("invalid change: applied %v, results %v", applied, results)
	}

	// A missing file is reported; the configuration in force stays.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	w.Reload()
	if applied, results := rec.snapshot(); len(applied) != 1 || results[len(results)-1] == nil {
		t.Fatalf("missing file: applied %v, results %v", applied, results)
	}

	// Fixed again: applied.
	write(header + "mode: Enforce\n")
	w.Reload()
	if applied, _ := rec.snapshot(); len(applied) != 2 || applied[1] != policy.Enforce {
		t.Fatalf("fixed file: applied %v", applied)
	}
}

// TestWatcherFollowsConfigMapSwap changes the file the way the kubelet updates
// a mounted ConfigMap (a new ..data directory swapped in by renaming a
// symlink) and expects the watcher to notice through file notifications.
func TestWatcherFollowsConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	swapTo := func(name, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(dir, name), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "config.yaml"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(name, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	swapTo("..v1", header+"mode: Enforce\n")
	path := filepath.Join(dir, "config.yaml")
	if err := os.Symlink(filepath.Join("..data", "config.yaml"), path); err != nil {
		t.Fatal(err)
	}
	_, raw, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	// A poll interval far beyond the test's deadline: only notifications can
	// make it pass.
	w := config.NewWatcher(path, raw, time.Hour, logr.Discard(), rec.apply, rec.result)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start: %v", err)
		}
	}()

	// The watch is set up asynchronously: swap in a new version at every
	// poll until one is seen.
	version := 1
	g := gomega.NewWithT(t)
	g.Eventually(func() []policy.Mode {
		version++
		swapTo(fmt.Sprintf("..v%d", version), header+"mode: Audit\n")
		applied, _ := rec.snapshot()
		return applied
	}).WithTimeout(10 * time.Second).WithPolling(200 * time.Millisecond).Should(gomega.HaveExactElements(policy.Audit))
}
