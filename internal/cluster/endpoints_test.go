package cluster

import (
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func node(name string) *corev1.Node { return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}} }

func report(t *testing.T, e *Endpoints, node, endpoint string, at time.Time, heartbeat time.Duration) {
	t.Helper()
	status := hostnetwork.StatusUnreachable
	if endpoint != "" {
		status = hostnetwork.StatusVerified
	}
	l, err := hostnetwork.NewLease("ep", hostnetwork.Report{Node: node, Endpoint: endpoint, RenewTime: at,
		Checks: []hostnetwork.Check{{Endpoint: "localhost:7443", Status: status, Message: "m"}}}, heartbeat)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.SetLease(l); err != nil {
		t.Fatal(err)
	}
}

func groups(e *Endpoints) map[string][]string {
	out := map[string][]string{}
	for _, g := range e.Groups() {
		for n := range e.NodesVerifying(g) {
			out[g] = append(out[g], n.Node.Name)
		}
		slices.Sort(out[g])
	}
	return out
}

func TestEndpointsGroupsNodesByTheirVerifiedEndpoint(t *testing.T) {
	c := &clock{t: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	e := NewEndpoints(c.now, nil)
	for _, n := range []string{"a", "b", "c", "d"} {
		e.SetNode(node(n))
	}
	report(t, e, "a", "localhost:7443", c.t, time.Minute)
	report(t, e, "b", "localhost:7443", c.t, time.Minute)
	report(t, e, "c", "127.0.0.1:7445", c.t, time.Minute)
	report(t, e, "gone", "localhost:7443", c.t, time.Minute) // a Lease of a node that is not known

	want := map[string][]string{"localhost:7443": {"a", "b"}, "127.0.0.1:7445": {"c"}, "": {"d"}}
	if diff := cmp.Diff(want, groups(e)); diff != "" {
		t.Fatalf("groups (-want +got):\n%s", diff)
	}

	// b's agent finds nothing any more; a new node appears; c goes.
	report(t, e, "b", "", c.t, time.Minute)
	e.SetNode(node("gone"))
	e.DeleteNode("c")
	want = map[string][]string{"localhost:7443": {"a", "gone"}, "": {"b", "d"}}
	if diff := cmp.Diff(want, groups(e)); diff != "" {
		t.Fatalf("groups after changes (-want +got):\n%s", diff)
	}

	// Three heartbeats later a's report is stale; gone's Lease is deleted.
	report(t, e, "gone", "localhost:7443", c.t.Add(2*time.Minute), time.Minute)
	c.t = c.t.Add(3 * time.Minute)
	e.DeleteLease(hostnetwork.LeaseName("gone"))
	counts := e.Refresh()
	want = map[string][]string{"": {"a", "b", "d", "gone"}}
	if diff := cmp.Diff(want, groups(e)); diff != "" {
		t.Fatalf("groups after expiry (-want +got):\n%s", diff)
	}
	wantCounts := map[hostnetwork.Status]int{hostnetwork.StatusStale: 2, hostnetwork.StatusNoReport: 2}
	if diff := cmp.Diff(wantCounts, counts); diff != "" {
		t.Fatalf("counts (-want +got):\n%s", diff)
	}
	if rep, ok := e.Report("a"); !ok || !rep.Stale || rep.Status() != hostnetwork.StatusStale {
		t.Fatalf("a's report = %+v, %v; want it stale", rep, ok)
	}

	// A fresh report brings a back.
	report(t, e, "a", "localhost:7443", c.t, time.Minute)
	if got := groups(e)["localhost:7443"]; !slices.Equal(got, []string{"a"}) {
		t.Fatalf("verifying localhost:7443 = %v, want [a]", got)
	}
}

func TestEndpointsIgnoresALeaseWithoutAReport(t *testing.T) {
	e := NewEndpoints(time.Now, nil)
	e.SetNode(node("a"))
	report(t, e, "a", "localhost:7443", time.Now(), time.Minute)
	l, err := hostnetwork.NewLease("ep", hostnetwork.Report{Node: "a", RenewTime: time.Now()}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	l.Annotations[hostnetwork.ResultsAnnotation] = "{not json"
	if err := e.SetLease(l); err == nil {
		t.Fatal("a Lease with unreadable results was accepted")
	}
	if _, ok := e.Report("a"); ok {
		t.Fatal("the node kept the report of a Lease that no longer carries one")
	}
	if diff := cmp.Diff(map[string][]string{"": {"a"}}, groups(e)); diff != "" {
		t.Fatalf("groups (-want +got):\n%s", diff)
	}
}
