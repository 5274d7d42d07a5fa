package webhook_test

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/endpoint-policy/endpoint-policy/internal/cluster"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
)

// clusterView is a test cluster: its nodes, and what their node agents
// reported (hostnetwork.Verifications), as admission's cluster view has them.
type clusterView struct {
	nodes
	*cluster.Endpoints
}

// verifiedCluster is ns, each of whose node agents verified endpoint an
// hour ago (fresh: the heartbeat is an hour).
func verifiedCluster(ns nodes, endpoint string) clusterView {
	v := clusterView{nodes: ns, Endpoints: cluster.NewEndpoints(time.Now, nil)}
	for _, n := range ns {
		v.SetNode(n)
		v.report(n.Name, endpoint, hostnetwork.StatusVerified)
	}
	return v
}

// report publishes node's report on endpoint, with status.
func (v clusterView) report(node, endpoint string, status hostnetwork.Status) {
	rep := hostnetwork.Report{Node: node, RenewTime: time.Now().Add(-time.Hour),
		Checks: []hostnetwork.Check{{Endpoint: "localhost:7443", Status: status, Message: "checked by the test"}}}
	if status == hostnetwork.StatusVerified {
		rep.Endpoint = endpoint
	}
	lease, err := hostnetwork.NewLease("endpoint-policy", rep, time.Hour)
	if err != nil {
		panic(err)
	}
	if err := v.SetLease(lease); err != nil {
		panic(err)
	}
}

// largeCluster has n Linux nodes, each verified, but the last unverified
// ones, whose agents find nothing on localhost:7443.
func largeCluster(tb testing.TB, n, unverified int) clusterView {
	tb.Helper()
	ns := nodes{}
	for i := range n {
		name := fmt.Sprintf("node-%05d", i)
		ns[name] = &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			corev1.LabelOSStable: "linux", corev1.LabelHostname: name, corev1.LabelTopologyZone: fmt.Sprintf("zone-%d", i%3)}}}
	}
	v := verifiedCluster(ns, "localhost:7443")
	for i := n - unverified; i < n; i++ {
		v.report(fmt.Sprintf("node-%05d", i), "localhost:7443", hostnetwork.StatusUnreachable)
	}
	return v
}
