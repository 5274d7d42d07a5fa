package audit

// Exemptions in the audit: what they cover is a skip (resultOf), counted in
// their matches, not in the violation gauge (state.tally). When one expires,
// everything is audited again without a reload, and a Warning Event says so
// about each object (or pod's workload) it covered; one that matches nothing
// is logged.

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

// ReasonExemptionExpired is the reason of the Warning Event about an object
// (or a pod's workload) whose exemption expired: its violations count again.
const ReasonExemptionExpired = "ExemptionExpired"

// maxLapsedSeen bounds the workloads remembered as told about an expiry;
// past it the memory starts again (at worst an Event more).
const maxLapsedSeen = 10000

// exemptionWatch is the audit's state about the exemptions in force.
type exemptionWatch struct {
	mu sync.Mutex
	// lapsedSeen: the objects and workloads told about an exemption's
	// expiry, so that a DaemonSet's pods make one Event.
	lapsedSeen map[lapsedKey]bool
	// engine is the engine whose exemptions are in force; unmatchedLogged
	// are the ones logged as matching nothing under it.
	engine          *policy.Engine
	unmatchedLogged map[string]bool
}

type lapsedKey struct {
	uid       types.UID
	exemption string
}

// announceLapsed records an ExemptionExpired Event for each exemption that
// covered obj until it expired (state.set's lapsed): about the pod's
// workload once, else about obj.
func (a *Audit) announceLapsed(ctx context.Context, obj client.Object, lapsed []violation) {
	if len(lapsed) == 0 {
		return
	}
	var regarding runtime.Object = obj
	uid := obj.GetUID()
	if pod, ok := obj.(*corev1.Pod); ok {
		if workload := podWorkload(ctx, a.cache, pod); workload != nil {
			regarding, uid = workload, workload.UID
		}
	}
	for _, v := range lapsed {
		x := v.Exemption
		if !a.exemptionState.firstLapse(lapsedKey{uid, x.Name}) {
			continue
		}
		a.events.Eventf(regarding, nil, corev1.EventTypeWarning, ReasonExemptionExpired, EventAction,
			"[%s] exemption %s expired at %s (%s): its violations are reported again",
			v.Policy, x.Name, x.Expires.UTC().Format(time.RFC3339), x.Reason)
	}
}

func (w *exemptionWatch) firstLapse(k lapsedKey) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.lapsedSeen[k] {
		return false
	}
	if w.lapsedSeen == nil || len(w.lapsedSeen) >= maxLapsedSeen {
		w.lapsedSeen = map[lapsedKey]bool{}
	}
	w.lapsedSeen[k] = true
	return true
}

// exemptionsInForce tells the state the exemptions of e, the engine in
// force, and returns a channel that receives at the next expiry among them
// (nil: none expires), with the timer's stop.
func (a *Audit) exemptionsInForce(e *policy.Engine) (<-chan time.Time, func() bool) {
	w := &a.exemptionState
	w.mu.Lock()
	if w.engine != e {
		w.engine = e
		w.unmatchedLogged = map[string]bool{}
		names := make([]string, 0, len(e.Exemptions()))
		for _, x := range e.Exemptions() {
			names = append(names, x.Name)
		}
		a.state.setExemptions(names)
	}
	w.mu.Unlock()
	next := e.NextExpiry(time.Now())
	if next.IsZero() {
		return nil, func() bool { return false }
	}
	t := time.NewTimer(time.Until(next))
	return t.C, t.Stop
}

// logUnmatched logs, once per configuration, each live exemption that
// exempts nothing after a whole audit interval: a stale entry, or one
// misspelt.
func (a *Audit) logUnmatched(log logr.Logger) {
	w := &a.exemptionState
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.engine == nil {
		return
	}
	now := time.Now()
	for _, name := range a.state.unmatched() {
		i := slices.IndexFunc(w.engine.Exemptions(), func(x *policy.Exemption) bool { return x.Name == name })
		if i < 0 || w.unmatchedLogged[name] || !w.engine.Exemptions()[i].Live(now) {
			continue
		}
		w.unmatchedLogged[name] = true
		x := w.engine.Exemptions()[i]
		log.Info("Exemption matches nothing: remove it, or check its namespace, kinds, names and selector",
			"exemption", name, "policies", x.Policies, "reason", x.Reason)
	}
}
