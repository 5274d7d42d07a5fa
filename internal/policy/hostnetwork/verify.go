package hostnetwork

import (
	"fmt"
	"iter"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	corev1helpers "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
)

// Status is the outcome of a node agent's check of one endpoint on its node
// (the first six), or why a node has no usable report (the last two, which
// only the webhook gives).
type Status string

const (
	// StatusVerified: the endpoint answered, with a certificate that chains
	// to the cluster CA and is valid for the endpoint's host, and /readyz
	// said ok to the agent's credentials.
	StatusVerified Status = "Verified"
	// StatusUnreachable: nothing answered (refused, timed out, not TLS).
	StatusUnreachable Status = "Unreachable"
	// StatusCertificateNotValidForHost: the certificate chains to the
	// cluster CA but does not name the endpoint's host (or has expired).
	StatusCertificateNotValidForHost Status = "CertificateNotValidForHost"
	// StatusUnknownAuthority: the certificate is not signed by the cluster
	// CA: another server, or a balancer that terminates TLS.
	StatusUnknownAuthority Status = "UnknownAuthority"
	// StatusNotReady: /readyz answered, but not ok.
	StatusNotReady Status = "NotReady"
	// StatusUnauthorized: /readyz refused the agent's credentials (401, 403).
	StatusUnauthorized Status = "Unauthorized"

	// StatusNoReport: no agent has reported from the node.
	StatusNoReport Status = "NoReport"
	// StatusStale: the node's report was not renewed within
	// HeartbeatsUntilStale heartbeats.
	StatusStale Status = "Stale"
)

// Statuses are every status, in the order the endpoint_policy_endpoint_nodes
// gauge lists them.
var Statuses = []Status{
	StatusVerified, StatusUnreachable, StatusCertificateNotValidForHost, StatusUnknownAuthority,
	StatusNotReady, StatusUnauthorized, StatusNoReport, StatusStale,
}

// Check is one endpoint's check on one node, as the agent publishes it.
type Check struct {
	Endpoint string `json:"endpoint"`
	Status   Status `json:"status"`
	Message  string `json:"message"`
}

// Report is a node agent's latest report, as its Lease carries it.
type Report struct {
	// Node is the node the agent runs on.
	Node string
	// Endpoint is the endpoint the node verified for the configuration: the
	// configured one when it is Verified, under host: auto the first
	// Verified candidate; "" when none.
	Endpoint string
	// Checks are every endpoint checked, the configured one (or under host:
	// auto the first candidate) first.
	Checks []Check
	// RenewTime is when the agent last wrote the report.
	RenewTime time.Time
	// Stale is set by the view that holds the report: it was not renewed
	// within HeartbeatsUntilStale heartbeats.
	Stale bool
}

// Check returns the report's check of endpoint.
func (r Report) Check(endpoint string) (Check, bool) {
	for _, c := range r.Checks {
		if c.Endpoint == endpoint {
			return c, true
		}
	}
	return Check{}, false
}

// Status is the node's status for the configuration: Verified when it
// verified an endpoint, Stale, or the first check's status.
func (r Report) Status() Status {
	switch {
	case r.Stale:
		return StatusStale
	case r.Endpoint != "":
		return StatusVerified
	case len(r.Checks) > 0:
		return r.Checks[0].Status
	}
	return StatusNoReport
}

// Verifications is what the node agents reported, as a front-end holds it:
// admission's cluster view implements it beside policy.Cluster. A
// policy.Cluster that does not (the check CLI's files) knows of no agent.
// Implementations answer from memory. The nodes and reports they return are
// shared and must not be modified, and the loop over an iterator must not
// call back into the Verifications (it may hold a read lock).
type Verifications interface {
	// VerificationsSynced reports whether the nodes and reports are loaded;
	// until then no node counts as verified.
	VerificationsSynced() bool
	// Report returns node's latest report; ok is false when it has none.
	Report(node string) (report Report, ok bool)
	// Nodes yields every known node, with its report.
	Nodes() iter.Seq[NodeReport]
	// Groups returns the endpoints that known nodes verified (fresh
	// reports), and "" when some known node verified none.
	Groups() []string
	// NodesVerifying yields the known nodes whose fresh report names
	// endpoint ("": the nodes with none), with their reports.
	NodesVerifying(endpoint string) iter.Seq[NodeReport]
}

// NodeReport is a known node and its latest report, if any.
type NodeReport struct {
	Node     *corev1.Node
	Report   Report
	Reported bool
}

// maxNamedNodes bounds the nodes a warning names.
const maxNamedNodes = 3

// verify decides where pod may be rewritten: the endpoint verified on every
// node it can run on, or "" and the warning that says why not. want is the
// configured endpoint, "" under host: auto.
//
// The nodes are spec.nodeName; else the DaemonSet controller's
// matchFields metadata.name; else every known node the pod's nodeSelector,
// required node affinity and NoSchedule/NoExecute tolerations admit. For the
// last, only the nodes that have not verified the endpoint are evaluated,
// and one that has: in the steady state the cost does not grow with the
// number of nodes.
func verify(pod *corev1.Pod, v Verifications, want string) (endpoint, warning string) {
	shown := want
	if shown == "" {
		shown = "an endpoint (host: auto)"
	}
	if !v.VerificationsSynced() {
		return "", "not rewritten: " + shown + " is not verified: the node agents' reports are not loaded yet"
	}
	var m misses
	if names, ok := namedNodes(pod); ok {
		if len(names) == 0 {
			return "", "not rewritten: " + shown + " is not verified on any node: the pod's node affinity names none"
		}
		want = m.named(v, names, want)
	} else {
		fits := fitsNode(pod)
		if !anyFits(v, fits) {
			return "", "not rewritten: " + shown + " is not verified on any node: no known node matches the pod's nodeSelector, node affinity and tolerations"
		}
		want = m.fitting(v, fits, want)
	}
	if len(m.nodes) == 0 {
		return want, ""
	}
	if want != "" {
		shown = want
	}
	return "", fmt.Sprintf("not rewritten: %s is not verified on node(s) %s: %s", shown, nodeList(m.nodes), why(m.first, want))
}

// misses are the nodes a pod can run on that did not verify the endpoint.
type misses struct {
	nodes []string
	first NodeReport // the first by name, whose status and message are shown
}

func (m *misses) add(n NodeReport) {
	if len(m.nodes) == 0 || n.Report.Node < m.first.Report.Node {
		m.first = n
	}
	m.nodes = append(m.nodes, n.Report.Node)
}

// named checks the nodes a pod names (its nodeName, or node affinity on
// metadata.name) and returns the endpoint wanted: want, or under host: auto
// the first named node's verified one.
func (m *misses) named(v Verifications, names []string, want string) string {
	for _, name := range names {
		rep, ok := v.Report(name)
		verified := ok && !rep.Stale && rep.Endpoint != ""
		if want == "" && verified {
			want = rep.Endpoint
		}
		if !verified || rep.Endpoint != want {
			rep.Node = name
			m.add(NodeReport{Report: rep, Reported: ok})
		}
	}
	return want
}

// fitting checks every known node the pod fits, by the endpoint each
// verified, and returns the endpoint wanted. Under host: auto (want "")
// that is the first endpoint, in order, that a node the pod fits verified;
// not the first node's a cache lists, which would change the warning (and
// a report) from one call to the next.
func (m *misses) fitting(v Verifications, fits func(*corev1.Node) bool, want string) string {
	if want == "" {
		want = firstVerifiedFitting(v, fits)
	}
	for _, g := range v.Groups() {
		if g == want && want != "" {
			continue
		}
		for n := range v.NodesVerifying(g) {
			if fits(n.Node) {
				n.Report.Node = n.Node.Name
				m.add(n)
			}
		}
	}
	return want
}

// anyFits reports whether the pod fits any known node.
func anyFits(v Verifications, fits func(*corev1.Node) bool) bool {
	for n := range v.Nodes() {
		if fits(n.Node) {
			return true
		}
	}
	return false
}

// firstVerifiedFitting returns the first endpoint, sorted, that a node
// fits admits verified: one node per endpoint is enough, so the cost is the
// number of endpoints in the steady state, not of nodes.
func firstVerifiedFitting(v Verifications, fits func(*corev1.Node) bool) string {
	for _, g := range slices.Sorted(slices.Values(v.Groups())) {
		if g == "" {
			continue
		}
		for n := range v.NodesVerifying(g) {
			if fits(n.Node) {
				return g
			}
		}
	}
	return ""
}

// why renders a node's status and message for endpoint.
func why(n NodeReport, endpoint string) string {
	rep := n.Report
	switch {
	case !n.Reported:
		return fmt.Sprintf("%s: no node agent has reported from this node (is the agent DaemonSet running there, and does it tolerate the node's taints?)", StatusNoReport)
	case rep.Stale:
		return fmt.Sprintf("%s: the node agent's last report is from %s, more than %d heartbeats ago (is it running, and can it reach the API server?)",
			StatusStale, rep.RenewTime.UTC().Format(time.RFC3339), HeartbeatsUntilStale)
	}
	if c, ok := rep.Check(endpoint); ok {
		return fmt.Sprintf("%s: %s", c.Status, c.Message)
	}
	if rep.Endpoint != "" {
		return fmt.Sprintf("node %s verified %s instead: pods that can run on several nodes are rewritten only to one endpoint verified on all of them", rep.Node, rep.Endpoint)
	}
	if len(rep.Checks) > 0 {
		return fmt.Sprintf("%s: %s", rep.Checks[0].Status, rep.Checks[0].Message)
	}
	return fmt.Sprintf("%s: the node agent checked no endpoint", StatusNoReport)
}

// nodeList names the first nodes, sorted, and counts the rest.
func nodeList(names []string) string {
	slices.Sort(names)
	if len(names) <= maxNamedNodes {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s (+%d more)", strings.Join(names[:maxNamedNodes], ", "), len(names)-maxNamedNodes)
}

// namedNodes returns the nodes a pod is bound to by name: spec.nodeName, or
// the DaemonSet controller's required node affinity, every term of which
// holds a matchFields metadata.name In.
func namedNodes(pod *corev1.Pod) ([]string, bool) {
	if pod.Spec.NodeName != "" {
		return []string{pod.Spec.NodeName}, true
	}
	a := pod.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return nil, false
	}
	terms := a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	if len(terms) == 0 {
		return nil, false
	}
	var names []string
	for _, t := range terms {
		named := false
		for _, f := range t.MatchFields {
			if f.Key == "metadata.name" && f.Operator == corev1.NodeSelectorOpIn {
				names = append(names, f.Values...)
				named = true
			}
		}
		if !named {
			return nil, false // a term that admits nodes by label: any of them
		}
	}
	return names, true
}

// fitsNode returns whether pod can run on a node, as the scheduler's
// NodeAffinity and TaintToleration filters decide it (nodeSelector and
// required node affinity; NoSchedule and NoExecute taints). A selector the
// scheduler could not parse counts as fitting: more candidate nodes only
// make a rewrite less likely.
func fitsNode(pod *corev1.Pod) func(*corev1.Node) bool {
	affinity := nodeaffinity.GetRequiredNodeAffinity(pod)
	tolerations := pod.Spec.Tolerations
	return func(n *corev1.Node) bool {
		if ok, err := affinity.Match(n); err == nil && !ok {
			return false
		}
		_, untolerated := corev1helpers.FindMatchingUntoleratedTaint(logr.Discard(), n.Spec.Taints, tolerations, scheduling, false)
		return !untolerated
	}
}

func scheduling(t *corev1.Taint) bool {
	return t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute
}
