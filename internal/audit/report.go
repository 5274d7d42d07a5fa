package audit

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strconv"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

const (
	// ReportName is the name of the PolicyReport the audit writes in each
	// namespace with violations, and of its ClusterPolicyReport.
	ReportName = "endpoint-policy"
	// ManagedByLabel marks the reports the audit owns.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	managedBy      = "endpoint-policy"
	// OmittedResultsAnnotation counts the results left out of a report
	// beyond audit.maxReportResults; the summary counts them all.
	OmittedResultsAnnotation = "endpoint-policy.io/omitted-results"
	// fieldOwner is the server-side apply field manager of the reports.
	fieldOwner = "endpoint-policy"
	// settle lets a burst of changes (the initial audit, a rollout) end in
	// one write per report.
	settle = time.Second
)

var (
	// PolicyReportGVK and ClusterPolicyReportGVK are the report kinds
	// (wgpolicyk8s.io/v1alpha2, the API of the Policy Working Group's
	// prototype that policy engine and report viewers read).
	PolicyReportGVK        = schema.GroupVersionKind{Group: "wgpolicyk8s.io", Version: "v1alpha2", Kind: "PolicyReport"}
	ClusterPolicyReportGVK = schema.GroupVersionKind{Group: "wgpolicyk8s.io", Version: "v1alpha2", Kind: "ClusterPolicyReport"}
)

// reportWriter keeps one PolicyReport per namespace with violations (and a
// ClusterPolicyReport for cluster-scoped objects) in line with the audit's
// state, and deletes a report once its namespace is clean. It runs only on
// the leader, and writes nothing when the CRDs are not installed.
type reportWriter struct {
	client client.Client
	mapper meta.RESTMapper
	state  *state
	// initial is closed once the initial audit is over; settings returns
	// the audit settings in force (interval, results per report).
	initial  <-chan struct{}
	settings func() config.Audit

	// installed says, for each report kind found out about, whether its
	// CRD is installed.
	installed map[schema.GroupVersionKind]bool
	// written is the hash of each report written (or found) by this
	// process, so that an unchanged report is not written again.
	written map[string]string
}

// Start implements manager.Runnable.
func (w *reportWriter) Start(ctx context.Context) error {
	log := logf.FromContext(ctx).WithName(Name)
	w.installed = map[schema.GroupVersionKind]bool{}
	w.written = map[string]string{}
	select {
	case <-ctx.Done():
		return nil
	case <-w.initial:
	}
	w.discover(ctx, log)
	for {
		recheck := time.NewTimer(w.settings().Interval.Duration)
		select {
		case <-ctx.Done():
			recheck.Stop()
			return nil
		case <-w.state.wake:
			recheck.Stop()
		case <-recheck.C:
			w.discover(ctx, log)
			w.state.markRetries()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(settle):
		}
		limit := w.settings().MaxReportResults
		for ns, entries := range w.state.takeDirty() {
			err := w.sync(ctx, ns, entries, limit)
			switch {
			case err == nil:
			case apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) || apierrors.IsNotFound(err):
				// The namespace, and its report, are going away.
			default:
				// Retried with the next change or the next interval, not
				// in a hot loop.
				log.Error(err, "Writing the policy report; will retry", "namespace", ns)
				w.state.retry(ns)
			}
		}
	}
}

// discover finds out whether the report CRDs are installed (one log line
// when that changes) and, when a CRD appears, which reports already exist:
// their namespaces are reconciled with the audit's state, so that a report
// left by an earlier leader for a namespace now clean is deleted.
func (w *reportWriter) discover(ctx context.Context, log logr.Logger) {
	for _, gvk := range []schema.GroupVersionKind{PolicyReportGVK, ClusterPolicyReportGVK} {
		_, err := w.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		installed := err == nil
		if err != nil && !meta.IsNoMatchError(err) {
			log.Error(err, "Cannot tell whether the report CRD is installed", "kind", gvk.String())
			continue
		}
		if was, known := w.installed[gvk]; known && was == installed {
			continue
		}
		w.installed[gvk] = installed
		if !installed {
			log.Info("Report CRD not installed: reports skipped (the violations gauge and Events are unaffected)", "kind", gvk.String())
			continue
		}
		log.Info("Report CRD installed: writing reports", "kind", gvk.String())
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := w.client.List(ctx, list, client.MatchingLabels{ManagedByLabel: managedBy}); err != nil {
			log.Error(err, "Listing existing reports", "kind", gvk.String())
		}
		var namespaces []string
		for _, r := range list.Items {
			if r.GetName() == ReportName {
				w.written[r.GetNamespace()] = "unknown"
				namespaces = append(namespaces, r.GetNamespace())
			}
		}
		// Namespaces with violations are dirty already, or about to be.
		w.state.markDirty(namespaces...)
		w.state.markAllDirty()
	}
}

// sync writes namespace's report (namespace "" is the ClusterPolicyReport),
// or deletes it when nothing is left to report.
func (w *reportWriter) sync(ctx context.Context, namespace string, entries []entry, limit int) error {
	gvk := PolicyReportGVK
	if namespace == "" {
		gvk = ClusterPolicyReportGVK
	}
	if !w.installed[gvk] {
		return nil
	}
	report := buildReport(gvk, namespace, entries, limit)
	if report == nil {
		if w.written[namespace] == "" {
			return nil
		}
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(gvk)
		u.SetNamespace(namespace)
		u.SetName(ReportName)
		if err := client.IgnoreNotFound(w.client.Delete(ctx, u)); err != nil {
			return err
		}
		delete(w.written, namespace)
		return nil
	}
	data, err := json.Marshal(report.Object)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(data)
	hash := hex.EncodeToString(sum[:])
	if w.written[namespace] == hash {
		return nil
	}
	if err := w.client.Apply(ctx, client.ApplyConfigurationFromUnstructured(report),
		client.FieldOwner(fieldOwner), client.ForceOwnership); err != nil {
		return err
	}
	w.written[namespace] = hash
	return nil
}

// buildReport renders entries as a report: at most limit results, failures
// first, then by policy, kind and name; the summary counts every result. It
// returns nil when there is nothing to report.
func buildReport(gvk schema.GroupVersionKind, namespace string, entries []entry, limit int) *unstructured.Unstructured {
	type row struct {
		ref objectRef
		v   violation
	}
	var rows []row
	pass := 0
	for _, e := range entries {
		pass += e.passes
		for _, v := range e.violations {
			rows = append(rows, row{e.ref, v})
		}
	}
	if len(rows) == 0 {
		return nil
	}
	slices.SortFunc(rows, func(a, b row) int {
		return cmp.Or(
			cmp.Compare(resultOf(a.v.Action), resultOf(b.v.Action)), // "fail" < "warn"
			cmp.Compare(a.v.Policy, b.v.Policy),
			cmp.Compare(a.ref.Kind, b.ref.Kind),
			cmp.Compare(a.ref.Name, b.ref.Name),
		)
	})
	fail, warn := 0, 0
	for _, r := range rows {
		if resultOf(r.v.Action) == "fail" {
			fail++
		} else {
			warn++
		}
	}
	shown := rows[:min(len(rows), limit)]
	results := make([]any, 0, len(shown))
	for _, r := range shown {
		results = append(results, map[string]any{
			"policy":  string(r.v.Policy),
			"source":  managedBy,
			"result":  resultOf(r.v.Action),
			"message": r.v.Message,
			"scored":  true,
			"timestamp": map[string]any{
				"seconds": r.v.Since.Unix(),
				"nanos":   int64(0),
			},
			"properties": map[string]any{
				"action": string(r.v.Action),
				"mode":   string(r.v.Mode),
			},
			"resources": []any{map[string]any{
				"apiVersion": r.ref.APIVersion,
				"kind":       r.ref.Kind,
				"namespace":  r.ref.Namespace,
				"name":       r.ref.Name,
				"uid":        string(r.ref.UID),
			}},
		})
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"summary": map[string]any{
			"pass": int64(pass), "fail": int64(fail), "warn": int64(warn), "error": int64(0), "skip": int64(0),
		},
		"results": results,
	}}
	u.SetGroupVersionKind(gvk)
	u.SetNamespace(namespace)
	u.SetName(ReportName)
	u.SetLabels(map[string]string{ManagedByLabel: managedBy})
	if omitted := len(rows) - len(shown); omitted > 0 {
		u.SetAnnotations(map[string]string{OmittedResultsAnnotation: strconv.Itoa(omitted)})
	}
	return u
}

// resultOf maps an action onto a report result: what admission would block
// or change is a failure, what it only warns about (a change it holds back
// as unverified included) a warning.
func resultOf(a policy.Action) string {
	if a == policy.ActionWarn || a == policy.ActionUnverified {
		return "warn"
	}
	return "fail"
}
