package hostnetwork

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"
)

// The node agent's report: one coordination.k8s.io/v1 Lease per node in the
// release namespace, written by `endpoint-policy agent` and read by the
// webhook. EndpointAnnotation, on the Lease as on a rewritten pod, holds the
// endpoint the node verified for the configuration ("" when none). These
// names are a contract with users (kubectl get lease -l ...) and with older
// and newer agents.
const (
	// LeasePrefix starts every agent Lease's name.
	LeasePrefix = "endpoint-policy-node-"
	// ResultsAnnotation holds the JSON list of the node's Checks.
	ResultsAnnotation = "endpoint-policy.io/results"

	// NameLabel and ComponentLabel select the agents' Leases.
	NameLabel      = "app.kubernetes.io/name"
	NameValue      = "endpoint-policy"
	ComponentLabel = "app.kubernetes.io/component"
	ComponentAgent = "agent"

	// HeartbeatsUntilStale is how many heartbeats a report stays fresh: the
	// Lease's leaseDurationSeconds is this many heartbeats.
	HeartbeatsUntilStale = 3
)

// AgentLeaseLabels are the labels of every agent Lease.
func AgentLeaseLabels() map[string]string {
	return map[string]string{NameLabel: NameValue, ComponentLabel: ComponentAgent}
}

// AgentLeaseSelector selects the agents' Leases.
func AgentLeaseSelector() labels.Selector {
	return labels.SelectorFromSet(AgentLeaseLabels())
}

// LeaseName is the name of node's Lease: LeasePrefix + the node name, or,
// when that is longer than an object name may be, a prefix of it and a hash
// of the whole node name.
func LeaseName(node string) string {
	name := LeasePrefix + node
	if len(name) <= validation.DNS1123SubdomainMaxLength {
		return name
	}
	sum := sha256.Sum256([]byte(node))
	suffix := "-" + hex.EncodeToString(sum[:])[:16]
	keep := validation.DNS1123SubdomainMaxLength - len(suffix)
	// A name must not end in "." or "-" before the suffix; node names are
	// DNS subdomains, so trimming those is enough.
	head := name[:keep]
	for len(head) > 0 && (head[len(head)-1] == '.' || head[len(head)-1] == '-') {
		head = head[:len(head)-1]
	}
	return head + suffix
}

// NewLease returns node's Lease in namespace carrying r, renewed now, lasting
// HeartbeatsUntilStale heartbeats.
func NewLease(namespace string, r Report, heartbeat time.Duration) (*coordinationv1.Lease, error) {
	checks := r.Checks
	if checks == nil {
		checks = []Check{}
	}
	results, err := json.Marshal(checks)
	if err != nil {
		return nil, fmt.Errorf("encoding the results: %w", err)
	}
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Name:      LeaseName(r.Node),
			Namespace: namespace,
			Labels:    AgentLeaseLabels(),
			Annotations: map[string]string{
				EndpointAnnotation: r.Endpoint,
				ResultsAnnotation:  string(results),
			},
		},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To(r.Node),
			LeaseDurationSeconds: ptr.To(int32((HeartbeatsUntilStale * heartbeat).Seconds())),
			RenewTime:            ptr.To(metav1.NewMicroTime(r.RenewTime)),
		},
	}, nil
}

// ReportOf reads a node's report from its Lease, and when it expires
// (renewTime + leaseDurationSeconds). A Lease that does not carry a report
// is an error naming the field.
func ReportOf(l *coordinationv1.Lease) (r Report, expires time.Time, err error) {
	if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
		return Report{}, time.Time{}, fmt.Errorf("lease %s/%s: spec.holderIdentity: the node name is missing", l.Namespace, l.Name)
	}
	r.Node = *l.Spec.HolderIdentity
	if l.Spec.RenewTime != nil {
		r.RenewTime = l.Spec.RenewTime.Time
	}
	var duration time.Duration
	if l.Spec.LeaseDurationSeconds != nil {
		duration = time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
	}
	r.Endpoint = l.Annotations[EndpointAnnotation]
	if raw, ok := l.Annotations[ResultsAnnotation]; ok {
		if err := json.Unmarshal([]byte(raw), &r.Checks); err != nil {
			return Report{}, time.Time{}, fmt.Errorf("lease %s/%s: metadata.annotations[%s]: %w", l.Namespace, l.Name, ResultsAnnotation, err)
		}
	}
	return r, r.RenewTime.Add(duration), nil
}
