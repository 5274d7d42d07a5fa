package audit

// Announcing each violation once: the audit Events an earlier leader
// recorded are not recorded again.

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

// loadAnnounced reads the audit Events that an earlier leader recorded and
// that are still there (Events expire after an hour by default), page by
// page, so that a restart or a new leader does not announce every violation
// again.
func (a *Audit) loadAnnounced(ctx context.Context) {
	announced := map[types.UID]map[string]bool{}
	owners := map[types.UID][]policy.ID{}
	list := &corev1.EventList{}
	opts := []client.ListOption{client.MatchingFields{"reason": policy.EventReason}, client.Limit(500)}
	for {
		if err := a.apiReader.List(ctx, list, opts...); err != nil {
			// Not fatal: the violations are announced again.
			logf.FromContext(ctx).WithName(Name).Error(err, "Listing the audit Events of an earlier leader")
			return
		}
		for _, e := range list.Items {
			if e.Action != EventAction || e.ReportingController != a.reportingController {
				continue
			}
			uid := e.InvolvedObject.UID
			if ids := ownerNotePolicies(e.Message); len(ids) > 0 {
				owners[uid] = append(owners[uid], ids...)
				continue
			}
			if announced[uid] == nil {
				announced[uid] = map[string]bool{}
			}
			announced[uid][e.Message] = true
		}
		if list.Continue == "" {
			break
		}
		opts = append(opts[:2], client.Continue(list.Continue))
	}
	for uid, notes := range announced {
		a.announced.Replace(uid, notes)
	}
	for uid, ids := range owners {
		m := map[policy.ID]bool{}
		for _, id := range ids {
			m[id] = true
		}
		a.announcedOwners.Replace(uid, m)
	}
}

// wasAnnounced reports, once, whether an earlier leader announced note on
// the object uid.
func (a *Audit) wasAnnounced(uid types.UID, note string) bool {
	return a.announced.Take(uid, note, true)
}
