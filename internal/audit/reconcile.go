package audit

// Auditing one object.

import (
	"context"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/endpoint-policy/endpoint-policy/internal/cluster"
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
	obj := kind.New()
	err := a.cache.Get(ctx, k.NamespacedName, obj)
	switch {
	case apierrors.IsNotFound(err):
		a.state.set(k, nil, nil, 0)
		return reconcile.Result{}, nil
	case err != nil:
		return reconcile.Result{}, err
	}
	if ownedTemplate(obj) {
		a.state.set(k, nil, nil, 0)
		return reconcile.Result{}, nil
	}

	nsLabels, err := cluster.NamespaceLabels(ctx, a.namespaces, k.Namespace)
	if err != nil {
		return reconcile.Result{}, err
	}
	results := a.engine.Load().Evaluate(policy.Target{Object: obj, NamespaceLabels: nsLabels, Cluster: a.cluster})
	var violations []violation
	passes := 0
	now := time.Now()
	for _, r := range policy.Verdicts(obj, results) {
		if a.skip[r.Policy] {
			continue
		}
		action := r.Action
		if action == policy.ActionAllow {
			passes++
			continue
		}
		violations = append(violations, violation{
			Policy:  r.Policy,
			Mode:    r.Mode,
			Action:  action,
			Message: policy.Shorten(strings.Join(r.Messages(policy.Would, maxMessagesPerResult), "; "), policy.MaxNoteBytes),
			Since:   now,
		})
	}
	ref := objectRef{APIVersion: kind.GVK.GroupVersion().String(), Kind: kind.GVK.Kind, Namespace: obj.GetNamespace(),
		Name: obj.GetName(), UID: obj.GetUID()}
	for _, v := range a.state.set(k, &ref, violations, passes) {
		if !a.wasAnnounced(obj.GetUID(), v.Message) {
			a.events.Eventf(obj, nil, corev1.EventTypeWarning, policy.EventReason, EventAction, "%s", v.Message)
		}
	}
	return reconcile.Result{}, nil
}

// violation is one policy's verdict on one object, when it is not allow.
type violation struct {
	Policy  policy.ID
	Mode    policy.Mode
	Action  policy.Action
	Message string
	// Since is when the audit first saw this violation.
	Since time.Time
}

// same reports whether v and o are the same violation with the same verdict.
func (v violation) same(o violation) bool {
	return v.sameFinding(o) && v.Action == o.Action && v.Mode == o.Mode
}

// sameFinding reports whether v and o are the same finding of the same
// policy, whatever the verdict.
func (v violation) sameFinding(o violation) bool {
	return v.Policy == o.Policy && v.Message == o.Message
}
