package cluster

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"

	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
)

// agentReport is a node's report as an agent writes it with the chart's
// four candidates (values.yaml), the first verified.
func agentReport(node string, at time.Time) hostnetwork.Report {
	r := hostnetwork.Report{Node: node, Endpoint: "localhost:7443", RenewTime: at}
	for i, ep := range []string{"localhost:7443", "127.0.0.1:7445", "127.0.0.1:6444", "localhost:6443"} {
		c := hostnetwork.Check{Endpoint: ep, Status: hostnetwork.StatusVerified}
		if i > 0 {
			c.Status = hostnetwork.StatusUnreachable
			c.Message = fmt.Sprintf("nothing answers as an API server on %s on this node: dial tcp %s: connect: connection refused", ep, ep)
		}
		r.Checks = append(r.Checks, c)
	}
	return r
}

func agentLease(t testing.TB, node string, at time.Time) *coordinationv1.Lease {
	t.Helper()
	l, err := hostnetwork.NewLease("endpoint-policy", agentReport(node, at), 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	l.ResourceVersion = "1"
	return l
}

// TestParseLeases: the Lease informer's transform keeps each Lease as its
// parsed report, without the Lease's annotations and spec; a Lease that
// carries no report as the error naming its field; an object already
// parsed as it is. (The informer and the view it feeds run against a real
// API server in test/integration's verification specs.)
func TestParseLeases(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	parse := func(obj any) *ParsedLease {
		t.Helper()
		out, err := parseLeases(obj)
		if err != nil {
			t.Fatal(err)
		}
		p, ok := out.(*ParsedLease)
		if !ok {
			t.Fatalf("parsed into a %T", out)
		}
		return p
	}
	a := parse(agentLease(t, "node-a", now))
	if a.Err != nil || a.Report.Node != "node-a" || a.Report.Status() != hostnetwork.StatusVerified ||
		len(a.Report.Checks) != 4 || !a.Expires.Equal(now.Add(15*time.Minute)) {
		t.Errorf("node-a's Lease parsed as %+v", a)
	}
	if a.Annotations != nil || a.Labels != nil || a.Name != hostnetwork.LeaseName("node-a") || a.Namespace != "endpoint-policy" || a.ResourceVersion != "1" {
		t.Errorf("node-a's Lease kept %+v, want its name, namespace and resourceVersion only", a.ObjectMeta)
	}
	if again := parse(a); again != a {
		t.Errorf("a parsed Lease parsed again")
	}
	if c := a.DeepCopyObject().(*ParsedLease); c == a || c.Report.Node != "node-a" || c.Name != a.Name {
		t.Errorf("DeepCopyObject: %+v", c)
	}

	broken := agentLease(t, "node-b", now)
	broken.Spec.HolderIdentity = nil
	if b := parse(broken); b.Err == nil || !strings.Contains(b.Err.Error(), "spec.holderIdentity") || b.Name != broken.Name {
		t.Errorf("node-b's Lease (no holder) parsed as %+v, want its error", b)
	}
}

// BenchmarkLeaseStore is the heap 5,000 nodes' Leases and their reports
// hold: the Lease as it comes in the informer's store and its report in
// Endpoints, against the parsed Lease alone (Endpoints shares its report).
// Bytes per Lease after a garbage collection.
func BenchmarkLeaseStore(b *testing.B) {
	const nodes = 5000
	now := time.Now()
	for _, bb := range []struct {
		name  string
		store func(*coordinationv1.Lease) any
	}{
		// Before: the Lease in the store, its report in Endpoints.
		{"leases", func(l *coordinationv1.Lease) any {
			r, _, _ := hostnetwork.ReportOf(l)
			return []any{l, r}
		}},
		// After: the parsed Lease, whose report Endpoints shares.
		{"parsed", func(l *coordinationv1.Lease) any { return ParseLease(l) }},
	} {
		b.Run(bb.name, func(b *testing.B) {
			var perLease float64
			for b.Loop() {
				before := heapInUse()
				kept := make([]any, 0, nodes)
				for i := range nodes {
					// As the watch decodes it: a Lease of its own.
					kept = append(kept, bb.store(agentLease(b, fmt.Sprintf("node-%05d", i), now)))
				}
				perLease = float64(heapInUse()-before) / nodes
				runtime.KeepAlive(kept)
			}
			b.ReportMetric(perLease, "B/lease")
		})
	}
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
