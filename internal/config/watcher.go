package config

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/go-logr/logr"
)

// Load reads and parses the configuration file at path. It returns the raw
// bytes too, so that a Watcher can tell a real change from a touch.
func Load(path string) (*PolicyConfiguration, []byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, data, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, data, nil
}

// Watcher re-reads the configuration file when it changes and hands every
// valid new configuration to Apply. An invalid file is logged and reported to
// Result, and the configuration in force stays.
//
// A mounted ConfigMap changes by swapping a symlink in the file's directory,
// so the directory is watched, not the file; a poll every Interval catches
// what file notifications miss (some volume types send none).
type Watcher struct {
	path     string
	interval time.Duration
	apply    func(*PolicyConfiguration) error
	result   func(error)
	log      logr.Logger
	last     []byte // the content last acted on, valid or not
}

// NewWatcher returns a watcher for path whose content in force is current.
// apply puts a new valid configuration in force; result, if not nil, is told
// the outcome of every reload attempt (nil for success).
func NewWatcher(path string, current []byte, interval time.Duration, log logr.Logger,
	apply func(*PolicyConfiguration) error, result func(error)) *Watcher {
	if result == nil {
		result = func(error) {}
	}
	return &Watcher{path: path, interval: interval, apply: apply, result: result, log: log, last: current}
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: every replica
// serves admission, so every replica follows the file.
func (w *Watcher) NeedLeaderElection() bool { return false }

// Start watches until ctx is done. It implements manager.Runnable.
func (w *Watcher) Start(ctx context.Context) error {
	var events <-chan fsnotify.Event
	var errs <-chan error
	if fw, err := fsnotify.NewWatcher(); err != nil {
		w.log.Error(err, "Cannot watch the configuration file for changes; polling only", "interval", w.interval)
	} else {
		defer fw.Close()
		if err := fw.Add(filepath.Dir(w.path)); err != nil {
			w.log.Error(err, "Cannot watch the configuration file for changes; polling only", "interval", w.interval)
		} else {
			events, errs = fw.Events, fw.Errors
		}
	}
	ticker := time.NewTicker(w.interval)
	defer ticker.Stop()
	// A file written in place produces a burst of events (truncate, write,
	// ...). Read it once the burst is over, not half-written.
	var settled <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-events:
			if settled == nil {
				settled = time.After(settleDelay)
			}
			continue
		case err := <-errs:
			w.log.Error(err, "Configuration file watch error")
			continue
		case <-settled:
			settled = nil
		case <-ticker.C:
		}
		w.Reload()
	}
}

// settleDelay is how long file events are collected before the file is read.
const settleDelay = 100 * time.Millisecond

// Reload re-reads the file and applies it when its content changed.
func (w *Watcher) Reload() {
	data, err := os.ReadFile(w.path)
	if err != nil {
		// A ConfigMap update briefly removes the file; the next event or
		// poll finds the new one. Keep what is in force.
		w.log.Error(err, "Cannot read the configuration file; keeping the configuration in force", "path", w.path)
		w.result(err)
		return
	}
	if bytes.Equal(data, w.last) {
		return
	}
	w.last = data
	cfg, err := Parse(data)
	if err == nil {
		err = w.apply(cfg)
	}
	if err != nil {
		w.log.Error(err, "Invalid configuration file; keeping the configuration in force", "path", w.path)
		w.result(err)
		return
	}
	w.log.Info("Configuration reloaded", "path", w.path, "mode", cfg.Mode)
	w.result(nil)
}
