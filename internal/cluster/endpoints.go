package cluster

import (
	"iter"
	"maps"
	"slices"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
)

// Endpoints holds the node agents' reports (their Leases) joined with the
// known Nodes, grouped by the endpoint each node verified: what
// host-network-endpoint decides a pod's rewrite from (it implements
// hostnetwork.Verifications). Grouping is what keeps the decision's cost
// independent of the number of nodes: a pod is evaluated only against the
// nodes outside the group of the endpoint it would get.
//
// Informer event handlers feed it (SetNode, SetLease, ...); Refresh, called
// periodically, moves the nodes whose reports expired out of their group.
type Endpoints struct {
	now    func() time.Time
	synced func() bool

	mu      sync.RWMutex
	nodes   map[string]*corev1.Node
	reports map[string]leaseReport // by node name, known node or not
	byLease map[string]string      // Lease name -> the node it reports on
	groups  map[string]map[string]*corev1.Node
	groupOf map[string]string // node name -> its key in groups
}

type leaseReport struct {
	lease   string // the Lease's name: a node's report is replaced or deleted only by its own Lease
	report  hostnetwork.Report
	expires time.Time
}

var _ hostnetwork.Verifications = (*Endpoints)(nil)

// NewEndpoints returns an empty index. now is its clock; synced says whether
// the informers that feed it have synced (nil: always).
func NewEndpoints(now func() time.Time, synced func() bool) *Endpoints {
	return &Endpoints{
		now: now, synced: synced,
		nodes:   map[string]*corev1.Node{},
		reports: map[string]leaseReport{},
		byLease: map[string]string{},
		groups:  map[string]map[string]*corev1.Node{},
		groupOf: map[string]string{},
	}
}

// SetNode adds or replaces a node. The node is kept, not copied: it must not
// be modified afterwards (informers' objects are not).
func (e *Endpoints) SetNode(n *corev1.Node) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.nodes[n.Name] = n
	e.regroup(n.Name, e.now())
}

// DeleteNode forgets a node.
func (e *Endpoints) DeleteNode(name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.nodes, name)
	e.ungroup(name)
}

// SetLease adds or replaces the report a node agent's Lease carries. A
// Lease that carries no readable report is an error (and forgets any report
// it carried before).
func (e *Endpoints) SetLease(l *coordinationv1.Lease) error {
	r, expires, err := hostnetwork.ReportOf(l)
	return e.SetReport(l.Name, r, expires, err)
}

// SetReport is SetLease with the Lease named lease already read: its report
// and expiry, or the error reading it (ParseLease).
func (e *Endpoints) SetReport(lease string, r hostnetwork.Report, expires time.Time, err error) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err != nil {
		e.forgetLease(lease)
		return err
	}
	if old, ok := e.reports[r.Node]; ok && old.lease != lease {
		// Another Lease claims the node; the newest report wins.
		if old.report.RenewTime.After(r.RenewTime) {
			return nil
		}
	}
	e.forgetLease(lease) // the Lease may have named another node before
	if old, ok := e.reports[r.Node]; ok {
		delete(e.byLease, old.lease)
	}
	e.reports[r.Node] = leaseReport{lease: lease, report: r, expires: expires}
	e.byLease[lease] = r.Node
	e.regroup(r.Node, e.now())
	return nil
}

// DeleteLease forgets the report of the Lease named name.
func (e *Endpoints) DeleteLease(name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.forgetLease(name)
}

func (e *Endpoints) forgetLease(name string) {
	node, ok := e.byLease[name]
	if !ok {
		return
	}
	delete(e.byLease, name)
	if r, ok := e.reports[node]; ok && r.lease == name {
		delete(e.reports, node)
		e.regroup(node, e.now())
	}
}

// regroup puts a known node into the group of the endpoint its fresh report
// names, "" when none. Called with the lock held.
func (e *Endpoints) regroup(name string, now time.Time) {
	if _, known := e.nodes[name]; !known {
		return
	}
	key := ""
	if r, ok := e.reports[name]; ok && now.Before(r.expires) {
		key = r.report.Endpoint
	}
	if old, ok := e.groupOf[name]; ok && old == key {
		e.groups[key][name] = e.nodes[name]
		return
	}
	e.ungroup(name)
	g := e.groups[key]
	if g == nil {
		g = map[string]*corev1.Node{}
		e.groups[key] = g
	}
	g[name] = e.nodes[name]
	e.groupOf[name] = key
}

func (e *Endpoints) ungroup(name string) {
	key, ok := e.groupOf[name]
	if !ok {
		return
	}
	delete(e.groups[key], name)
	if len(e.groups[key]) == 0 {
		delete(e.groups, key)
	}
	delete(e.groupOf, name)
}

// Refresh moves the nodes whose reports expired into the group of none, and
// returns how many known nodes have each status
// (endpoint_policy_endpoint_nodes).
func (e *Endpoints) Refresh() map[hostnetwork.Status]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	counts := map[hostnetwork.Status]int{}
	for name := range e.nodes {
		r, ok := e.reports[name]
		if ok && e.groupOf[name] != "" && !now.Before(r.expires) {
			e.regroup(name, now)
		}
		switch {
		case !ok:
			counts[hostnetwork.StatusNoReport]++
		default:
			counts[e.withStale(r, now).Status()]++
		}
	}
	return counts
}

func (e *Endpoints) withStale(r leaseReport, now time.Time) hostnetwork.Report {
	rep := r.report
	rep.Stale = !now.Before(r.expires)
	return rep
}

// VerificationsSynced implements hostnetwork.Verifications.
func (e *Endpoints) VerificationsSynced() bool { return e.synced == nil || e.synced() }

// Report implements hostnetwork.Verifications.
func (e *Endpoints) Report(node string) (hostnetwork.Report, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	r, ok := e.reports[node]
	if !ok {
		return hostnetwork.Report{}, false
	}
	return e.withStale(r, e.now()), true
}

// Nodes implements hostnetwork.Verifications. The loop runs under the read
// lock.
func (e *Endpoints) Nodes() iter.Seq[hostnetwork.NodeReport] {
	return func(yield func(hostnetwork.NodeReport) bool) {
		e.mu.RLock()
		defer e.mu.RUnlock()
		now := e.now()
		for _, n := range e.nodes {
			if !yield(e.nodeReport(n, now)) {
				return
			}
		}
	}
}

// Groups implements hostnetwork.Verifications.
func (e *Endpoints) Groups() []string {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return slices.Collect(maps.Keys(e.groups))
}

// NodesVerifying implements hostnetwork.Verifications. The loop runs under
// the read lock.
func (e *Endpoints) NodesVerifying(endpoint string) iter.Seq[hostnetwork.NodeReport] {
	return func(yield func(hostnetwork.NodeReport) bool) {
		e.mu.RLock()
		defer e.mu.RUnlock()
		now := e.now()
		for _, n := range e.groups[endpoint] {
			if !yield(e.nodeReport(n, now)) {
				return
			}
		}
	}
}

func (e *Endpoints) nodeReport(n *corev1.Node, now time.Time) hostnetwork.NodeReport {
	r, ok := e.reports[n.Name]
	if !ok {
		return hostnetwork.NodeReport{Node: n, Report: hostnetwork.Report{Node: n.Name}}
	}
	return hostnetwork.NodeReport{Node: n, Report: e.withStale(r, now), Reported: true}
}
