package audit

// Auditing one object.

import (
	"context"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/endpoint-policy/endpoint-policy/internal/cluster"
	"github.com/endpoint-policy/endpoint-policy/internal/kinds"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

// Reconcile implements reconcile.TypedReconciler: it audits one object.
func (a *Audit) Reconcile(ctx context.Context, k Key) (reconcile.Result, error) {
	select {
	case <-ctx.Done():
		return reconcile.Result{}, ctx.Err()
	case <-a.seeded:
	}
	// An object that fails is retried, but does not hold up the end of the
	// initial audit.
	defer a.done(k)
	kind, ok := audited[k.Kind]
	if !ok {
		return reconcile.Result{}, nil
	}
	obj, err := a.object(ctx, k, kind)
	if err != nil || obj == nil {
		return reconcile.Result{}, err
	}
	nsLabels, err := cluster.NamespaceLabels(ctx, a.namespaces, k.Namespace)
	if err != nil {
		if pod, ok := obj.(*corev1.Pod); ok {
			a.pods.putBack(pod)
		}
		return reconcile.Result{}, err
	}
	results := a.engine.Load().Evaluate(policy.Target{Object: obj, NamespaceLabels: nsLabels, Cluster: a.cluster})
	violations, passes := a.violations(obj, results)
	ref := objectRef{APIVersion: kind.GVK.GroupVersion().String(), Kind: kind.GVK.Kind, Namespace: obj.GetNamespace(),
		Name: obj.GetName(), UID: obj.GetUID()}
	if owner := metav1.GetControllerOf(obj); owner != nil {
		ref.OwnerAPIVersion, ref.OwnerKind, ref.OwnerName, ref.OwnerUID = owner.APIVersion, owner.Kind, owner.Name, owner.UID
	}
	added, lapsed := a.state.set(k, &ref, violations, passes)
	a.announce(ctx, obj, ref, added)
	a.announceLapsed(ctx, obj, lapsed)
	return reconcile.Result{}, nil
}

// object returns the object k names to audit, or nil when there is nothing
// to audit: gone (its results are cleared), a pod without a change waiting,
// or a template whose controller's is audited instead.
func (a *Audit) object(ctx context.Context, k Key, kind kinds.Kind) (client.Object, error) {
	if kind.GVK == kinds.Pod.GVK {
		pod, found, err := a.pod(ctx, k.NamespacedName)
		switch {
		case err != nil || found == absent:
			return nil, err
		case found == gone:
			a.state.set(k, nil, nil, 0)
			return nil, nil
		}
		return pod, nil
	}
	obj := kind.New()
	err := a.readerFor(k).Get(ctx, k.NamespacedName, obj)
	switch {
	case apierrors.IsNotFound(err):
		a.state.set(k, nil, nil, 0)
		return nil, nil
	case err != nil:
		return nil, err
	case policy.OwnedTemplate(obj):
		a.state.set(k, nil, nil, 0)
		return nil, nil
	}
	return obj, nil
}

// violations turns the engine's results on obj into the report's
// violations, and counts the passes; skipped policies count as neither.
func (a *Audit) violations(obj client.Object, results []policy.Result) ([]violation, int) {
	var violations []violation
	passes := 0
	now := time.Now()
	for _, r := range policy.Verdicts(obj, results) {
		if a.skip[r.Policy] {
			continue
		}
		if r.Action == policy.ActionAllow {
			passes++
			continue
		}
		field := string(r.Policy)
		if f := r.Findings[0].Field; f != nil {
			field = f.String()
		}
		message := r.Summary(policy.Would, maxMessagesPerResult, policy.MaxNoteBytes)
		if r.Exemption != nil {
			message = r.ExemptedSummary(policy.Would, maxMessagesPerResult, policy.MaxNoteBytes)
		}
		violations = append(violations, violation{
			Policy:    r.Policy,
			Mode:      r.Mode,
			Action:    r.Action,
			Rule:      findingRules(r.Findings),
			Message:   message,
			Since:     now,
			Template:  r.Findings[0].Template,
			Exemption: r.Exemption,
			field:     field,
		})
	}
	return violations, passes
}

// announce records an Event for each new violation: about a pod's workload
// once (ownerEvents), or about the object, related to the field.
func (a *Audit) announce(ctx context.Context, obj client.Object, ref objectRef, added []violation) {
	pod, _ := obj.(*corev1.Pod)
	for _, v := range added {
		if v.Exemption != nil {
			continue // exempted: the exemption is the decision to live with it
		}
		if workload := podWorkload(ctx, a.cache, pod); workload != nil {
			if !a.announcedOwners.Has(workload.UID, v.Policy, true) {
				a.owners.add(ctx, workload, v.Policy, pod, v.Message)
			}
			continue
		}
		if !a.wasAnnounced(obj.GetUID(), v.Message) {
			// The Events API makes a second Event about the same object,
			// reason and action a repeat of the first (a series, with the
			// first's note) unless the related object differs: each
			// violation's Event relates to the field it is about.
			related := &corev1.ObjectReference{APIVersion: ref.APIVersion, Kind: ref.Kind, Namespace: ref.Namespace, Name: ref.Name,
				UID: ref.UID, FieldPath: v.field}
			a.events.Eventf(obj, related, corev1.EventTypeWarning, policy.EventReason, EventAction, "%s", v.Message)
		}
	}
}

// pod returns the hostNetwork pod to audit: the change the pod feed
// delivered, or, for a re-audit of a kube-apiserver pod after a change of
// its peers or its Node, the pod in the manager's cache. Any other pod
// without a change waiting is absent: its verdicts stand until it changes
// or the next sweep.
func (a *Audit) pod(ctx context.Context, name types.NamespacedName) (*corev1.Pod, inboxState, error) {
	if p, found := a.pods.take(name); found != absent {
		return p, found, nil
	}
	p := &corev1.Pod{}
	switch err := a.apiServers.Get(ctx, name, p); {
	case apierrors.IsNotFound(err):
		return nil, absent, nil
	case err != nil:
		return nil, absent, err
	case !p.Spec.HostNetwork:
		return nil, absent, nil
	}
	return p, arrived, nil
}

// skipPod reports whether the pod feed can drop a change of the pod name
// unseen: no policy applies in its namespace (policy.Engine.SkipsNamespace)
// and the audit holds no result of it to clear. A namespace not (yet) in
// the cache is not skipped.
func (a *Audit) skipPod(_ context.Context, name types.NamespacedName) bool {
	labels, err := a.namespaceLabels(name.Namespace)
	if err != nil || !a.engine.Load().SkipsNamespace(labels) {
		return false
	}
	return !a.state.has(Key{Kind: kinds.Pod.GVK.Kind, NamespacedName: name})
}

// readerFor returns the cache that holds k: the ConfigMap's own, or the
// workloads'. A ConfigMap the audit does not read reads as not found.
func (a *Audit) readerFor(k Key) client.Reader {
	if k.Kind != kinds.ConfigMap.GVK.Kind {
		return a.cache
	}
	if c, ok := a.configMaps[k.NamespacedName]; ok {
		return c.reader()
	}
	return notFound{}
}

// findingRules joins the distinct rules of findings, sorted.
func findingRules(findings []policy.Finding) string {
	var out []string
	for _, f := range findings {
		if f.Rule != "" && !slices.Contains(out, f.Rule) {
			out = append(out, f.Rule)
		}
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

// violation is one policy's verdict on one object, when it is not allow.
type violation struct {
	Policy policy.ID
	Mode   policy.Mode
	Action policy.Action
	// Rule names the policy's checks that found it, sorted, comma-separated.
	Rule    string
	Message string
	// Since is when the audit first saw this violation.
	Since time.Time
	// Template: about the pods a workload's template creates
	// (policy.Finding.Template), which admission changes: worth a warning,
	// not a failure.
	Template bool
	// Exemption exempts it (Action is ActionExempt): a skip in the
	// reports, not counted as a violation.
	Exemption *policy.Exemption
	// field is the first finding's field (the policy when it has none):
	// the related object's fieldPath in the violation's Event.
	field string
}

// same reports whether v and o are the same violation with the same verdict.
func (v violation) same(o violation) bool {
	return v.sameFinding(o) && v.Action == o.Action && v.Mode == o.Mode && v.exemptionName() == o.exemptionName()
}

// exemptionName is the name of the exemption of v, "" when none.
func (v violation) exemptionName() string {
	if v.Exemption == nil {
		return ""
	}
	return v.Exemption.Name
}

// sameFinding reports whether v and o are the same finding of the same
// policy, whatever the verdict.
func (v violation) sameFinding(o violation) bool {
	return v.Policy == o.Policy && v.Message == o.Message
}
