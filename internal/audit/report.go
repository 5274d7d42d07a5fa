package audit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
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
	// fieldOwner is the server-side apply field manager of the reports.
	fieldOwner = "endpoint-policy"
	// settle lets a burst of changes (the initial audit, a rollout) end in
	// one write per report.
	settle = time.Second
)

var (
	// PolicyReportGVK and ClusterPolicyReportGVK are the report kinds of
	// wgpolicyk8s.io/v1alpha2, the API of the Policy Working Group's
	// prototype that Kyverno and Policy Reporter read.
	PolicyReportGVK        = schema.GroupVersionKind{Group: "wgpolicyk8s.io", Version: "v1alpha2", Kind: "PolicyReport"}
	ClusterPolicyReportGVK = schema.GroupVersionKind{Group: "wgpolicyk8s.io", Version: "v1alpha2", Kind: "ClusterPolicyReport"}
	// ReportGVK and ClusterReportGVK are the report kinds of
	// openreports.io/v1alpha1, its successor (Kyverno since 1.15 behind a
	// flag, Policy Reporter since 3.2).
	ReportGVK        = schema.GroupVersionKind{Group: "openreports.io", Version: "v1alpha1", Kind: "Report"}
	ClusterReportGVK = schema.GroupVersionKind{Group: "openreports.io", Version: "v1alpha1", Kind: "ClusterReport"}
)

// reportAPI is one API the reports can be written in: a namespaced kind for
// each namespace with violations, a cluster-scoped one for cluster-scoped
// objects.
type reportAPI struct {
	name       config.ReportAPI
	namespaced schema.GroupVersionKind
	cluster    schema.GroupVersionKind
}

// reportAPIs are the APIs the reports can be written in, in the order Auto
// prefers them: OpenReports first, so that discover knows whether it is
// served before it selects the other.
var reportAPIs = []reportAPI{
	{config.ReportAPIOpenReports, ReportGVK, ClusterReportGVK},
	{config.ReportAPIWGPolicy, PolicyReportGVK, ClusterPolicyReportGVK},
}

// kind is the report kind for namespace ("": the cluster-scoped one).
func (a reportAPI) kind(namespace string) schema.GroupVersionKind {
	if namespace == "" {
		return a.cluster
	}
	return a.namespaced
}

// reportWriter keeps one report per namespace with violations (and a
// cluster-scoped one for cluster-scoped objects) in line with the audit's
// state, in each report API selected (audit.reportAPI) and installed, and
// deletes a report once its namespace is clean. It runs only on the leader,
// and writes nothing in an API whose CRDs are not installed.
type reportWriter struct {
	client client.Client
	mapper meta.RESTMapper
	state  *state
	// initial is closed once the initial audit is over; settings returns
	// the audit settings in force (interval, results per report, API).
	initial  <-chan struct{}
	settings func() config.Audit

	// installed says, for each report kind found out about, whether its
	// CRD is installed.
	installed map[schema.GroupVersionKind]bool
	// listed says, for each installed and selected report kind, that its
	// existing reports were listed: again when it is selected anew.
	listed map[schema.GroupVersionKind]bool
	// selected is audit.reportAPI as last applied.
	selected config.ReportAPI
	// written is the hash of each report written (or found) by this
	// process, by API and namespace, so that an unchanged report is not
	// written again.
	written map[writtenKey]string
	// prior are the first-seen times of the results in the reports found
	// when their kind was first listed: a result unchanged across a
	// restart or a change of leader keeps its time.
	prior priorTimes
}

type writtenKey struct {
	api       config.ReportAPI
	namespace string
}

// Start implements manager.Runnable.
func (w *reportWriter) Start(ctx context.Context) error {
	log := logf.FromContext(ctx).WithName(Name)
	w.installed = map[schema.GroupVersionKind]bool{}
	w.written = map[writtenKey]string{}
	w.listed = map[schema.GroupVersionKind]bool{}
	w.prior = priorTimes{}
	select {
	case <-ctx.Done():
		return nil
	case <-w.initial:
	}
	w.selected = w.settings().ReportAPI
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
		if api := w.settings().ReportAPI; api != w.selected {
			log.Info("Report API changed", "from", w.selected, "to", api)
			w.selected = api
			w.discover(ctx, log)
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

// isSelected says whether audit.reportAPI asks for api. Auto asks for one
// API, never both: a reader of both (Policy Reporter, where Kyverno installed
// both CRDs) would list every result twice. OpenReports where its Report
// CRD is served (Kyverno and Policy Reporter read it), else wgpolicyk8s.io.
func (w *reportWriter) isSelected(api reportAPI) bool {
	if w.selected == "" || w.selected == config.ReportAPIAuto {
		return (api.name == config.ReportAPIOpenReports) == w.installed[ReportGVK]
	}
	return w.selected == api.name
}

// discover finds out whether the report CRDs are installed (one log line
// when that changes) and, when a CRD appears, which reports already exist:
// their namespaces are reconciled with the audit's state, so that a report
// left by an earlier leader for a namespace now clean is deleted. Reports
// of an installed API that audit.reportAPI no longer selects are deleted.
func (w *reportWriter) discover(ctx context.Context, log logr.Logger) {
	for _, api := range reportAPIs {
		for _, gvk := range []schema.GroupVersionKind{api.namespaced, api.cluster} {
			_, err := w.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			installed := err == nil
			if err != nil && !meta.IsNoMatchError(err) {
				log.Error(err, "Cannot tell whether the report CRD is installed", "kind", gvk.String())
				continue
			}
			was, known := w.installed[gvk]
			w.installed[gvk] = installed
			// After installed is known: Auto's choice depends on it.
			selected := w.isSelected(api)
			if !installed {
				if !known || was {
					log.Info("Report CRD not installed: reports skipped (the violations gauge and Events are unaffected)", "kind", gvk.String())
				}
				continue
			}
			if !selected {
				w.deleteAll(ctx, log, api, gvk)
				continue
			}
			if known && was && w.listed[gvk] {
				continue
			}
			w.listed[gvk] = true
			log.Info("Report CRD installed: writing reports", "kind", gvk.String(), "reportAPI", w.selected)
			list := &unstructured.UnstructuredList{}
			list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
			if err := w.client.List(ctx, list, client.MatchingLabels{ManagedByLabel: managedBy}); err != nil {
				log.Error(err, "Listing existing reports", "kind", gvk.String())
			}
			var namespaces []string
			for _, r := range list.Items {
				if r.GetName() == ReportName {
					w.written[writtenKey{api.name, r.GetNamespace()}] = "unknown"
					namespaces = append(namespaces, r.GetNamespace())
					w.prior.add(r.Object)
				}
			}
			// Namespaces with violations are dirty already, or about to be.
			w.state.markDirty(namespaces...)
			w.state.markAllDirty()
		}
	}
}

// deleteAll deletes the audit's reports of kind gvk: its API is installed
// but no longer selected.
func (w *reportWriter) deleteAll(ctx context.Context, log logr.Logger, api reportAPI, gvk schema.GroupVersionKind) {
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
	if err := w.client.List(ctx, list, client.MatchingLabels{ManagedByLabel: managedBy}); err != nil {
		log.Error(err, "Listing the reports of an API no longer selected", "kind", gvk.String())
		return
	}
	for i := range list.Items {
		r := &list.Items[i]
		if r.GetName() != ReportName {
			continue
		}
		if err := client.IgnoreNotFound(w.client.Delete(ctx, r)); err != nil {
			log.Error(err, "Deleting a report of an API no longer selected", "kind", gvk.String(), "namespace", r.GetNamespace())
			continue
		}
		log.Info("Deleted a report of an API no longer selected (audit.reportAPI)", "kind", gvk.String(), "namespace", r.GetNamespace())
	}
	for k := range w.written {
		if k.api == api.name && (k.namespace == "") == (gvk == api.cluster) {
			delete(w.written, k)
		}
	}
	delete(w.listed, gvk)
}

// sync writes namespace's report (namespace "": the cluster-scoped one) in
// each API selected and installed, or deletes it when nothing is left to
// report. The first error is returned, after every API was tried.
func (w *reportWriter) sync(ctx context.Context, namespace string, entries []entry, limit int) error {
	var first error
	for _, api := range reportAPIs {
		if !w.isSelected(api) || !w.installed[api.kind(namespace)] {
			continue
		}
		if err := w.syncAPI(ctx, api, namespace, entries, limit); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (w *reportWriter) syncAPI(ctx context.Context, api reportAPI, namespace string, entries []entry, limit int) error {
	key := writtenKey{api.name, namespace}
	gvk := api.kind(namespace)
	report := buildReport(api, namespace, entries, limit, w.prior)
	if report == nil {
		if w.written[key] == "" {
			return nil
		}
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(gvk)
		u.SetNamespace(namespace)
		u.SetName(ReportName)
		if err := client.IgnoreNotFound(w.client.Delete(ctx, u)); err != nil {
			return err
		}
		delete(w.written, key)
		return nil
	}
	data, err := json.Marshal(report.Object)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(data)
	hash := hex.EncodeToString(sum[:])
	if w.written[key] == hash {
		return nil
	}
	if err := w.client.Apply(ctx, client.ApplyConfigurationFromUnstructured(report),
		client.FieldOwner(fieldOwner), client.ForceOwnership); err != nil {
		return err
	}
	w.written[key] = hash
	return nil
}

// buildReport renders entries as a report of api (reportResults says which
// results), with a summary that counts the results listed: what a viewer
// counts from them is the summary. A result seen before (prior, from the
// reports found at start) keeps the time it was first seen. A report whose
// results are all about one object has it as its scope. It returns nil when
// there is nothing to report.
func buildReport(api reportAPI, namespace string, entries []entry, limit int, prior priorTimes) *unstructured.Unstructured {
	rows := reportResults(entries, limit, prior)
	if len(rows) == 0 {
		return nil
	}
	counts := map[string]int64{"pass": 0, "fail": 0, "warn": 0, "error": 0, "skip": 0}
	results := make([]any, 0, len(rows))
	for _, r := range rows {
		counts[r.outcome]++
		res := map[string]any{
			"policy":  string(r.policy),
			"source":  managedBy,
			"result":  r.outcome,
			"message": r.message,
			"scored":  true,
			"timestamp": map[string]any{
				"seconds": r.since.Unix(),
				"nanos":   int64(0),
			},
			"properties": r.properties(),
		}
		if r.ref != (objectRef{}) {
			res["resources"] = []any{r.ref.reference()}
		}
		// Omitted when empty: the CRDs' severity is an enum.
		for k, v := range map[string]string{"rule": r.rule, "severity": string(r.severity), "category": r.category} {
			if v != "" {
				res[k] = v
			}
		}
		results = append(results, res)
	}
	summary := map[string]any{}
	for k, v := range counts {
		summary[k] = v
	}
	u := &unstructured.Unstructured{Object: map[string]any{"summary": summary, "results": results}}
	if one := rows[0].ref; rows[0].count == 1 && one != (objectRef{}) && !slices.ContainsFunc(rows, func(r result) bool { return r.ref.UID != one.UID || r.count != 1 }) {
		u.Object["scope"] = one.reference()
	}
	if api.name == config.ReportAPIOpenReports {
		// The report's own source, and the contract OpenReports has for a
		// capped report: at most maxResults results, and only failures,
		// warnings and what exemptions skip listed.
		u.Object["source"] = managedBy
		u.Object["configuration"] = map[string]any{"limits": map[string]any{
			"maxResults":   int64(limit),
			"statusFilter": []any{"fail", "warn", "skip"},
		}}
	}
	u.SetGroupVersionKind(api.kind(namespace))
	u.SetNamespace(namespace)
	u.SetName(ReportName)
	u.SetLabels(map[string]string{ManagedByLabel: managedBy})
	return u
}

// resultOf maps a violation onto a report result: what admission would
// block or change is a failure, what it only warns about (a change it holds
// back as unverified included) a warning, and so is a workload template
// whose pods admission will change: the template is what to fix, nothing
// runs wrong yet. What an exemption covers is a skip, with its reason.
func resultOf(v violation) string {
	if v.Action == policy.ActionExempt {
		return "skip"
	}
	if v.Template || v.Action == policy.ActionWarn || v.Action == policy.ActionUnverified {
		return "warn"
	}
	return "fail"
}
