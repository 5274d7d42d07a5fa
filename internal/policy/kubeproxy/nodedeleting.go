package kubeproxy

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

// NodeDeletingID is the kube-proxy-node-deleting policy's stable identifier.
const NodeDeletingID policy.ID = "kube-proxy-node-deleting"

// NodeDeletingDescriptor describes the policy to the registry.
var NodeDeletingDescriptor = policy.Descriptor{
	ID:          NodeDeletingID,
	Effect:      policy.Mutating,
	DefaultMode: policy.Enforce,
	Severity:    policy.SeverityInfo,
	Category:    policy.CategoryNodeLifecycle,
	Summary: "kube-proxy pods on a node tainted `ToBeDeletedByClusterAutoscaler` or being deleted get " +
		"`endpoint-policy.io/node-deleting` and `endpoint-policy.io/node-deleting-since`, removed when the scale-down is cancelled " +
		"(a controller, and admission for pods created bound to the node)",
	Package:         "internal/policy/kubeproxy",
	DefaultSettings: policy.DefaultsOf(DefaultSettings),
	New: policy.NewWith(NodeDeletingID, func(s Settings) (*NodeDeletingRule, error) {
		return NewNodeDeletingRule(s, time.Now)
	}),
}

// Settings configure the kube-proxy-node-deleting rule:
// policies.kube-proxy-node-deleting in the configuration file.
type Settings struct {
	// PodSelectors select the kube-proxy pods: a pod is selected when any of
	// them matches its labels. Each selector is also what the controller's
	// pod cache lists and watches, so that no other pod is ever cached. A
	// file that sets the list replaces it whole.
	PodSelectors []metav1.LabelSelector `json:"podSelectors"`
}

var _ policy.RestartSettings = (*Settings)(nil)

// RestartRequired implements policy.RestartSettings: the controller's pod
// cache is built from PodSelectors at start, so a change takes a restart.
func (s Settings) RestartRequired(running policy.Settings, fldPath *field.Path) field.ErrorList {
	r, ok := running.(*Settings)
	if ok && equality.Semantic.DeepEqual(s.PodSelectors, r.PodSelectors) {
		return nil
	}
	return field.ErrorList{field.Forbidden(fldPath.Child("podSelectors"),
		"the kube-proxy pod cache is built from it at start, so a change takes a restart")}
}

// DefaultPodSelectors select kubeadm's DaemonSet pods (k8s-app=kube-proxy),
// the static pods of distributions that run kube-proxy from a manifest
// (component=kube-proxy), and Gardener's kube-proxy DaemonSets
// (app=kubernetes, role=proxy: gardener/gardener
// pkg/component/networking/kubeproxy).
func DefaultPodSelectors() []metav1.LabelSelector {
	return []metav1.LabelSelector{
		{MatchLabels: map[string]string{"k8s-app": "kube-proxy"}},
		{MatchLabels: map[string]string{"component": "kube-proxy"}},
		{MatchLabels: map[string]string{"app": "kubernetes", "role": "proxy"}},
	}
}

// DefaultSettings select kube-proxy pods by DefaultPodSelectors.
func DefaultSettings() Settings { return Settings{PodSelectors: DefaultPodSelectors()} }

// Validate returns the problems with s, with field paths under fldPath.
func (s Settings) Validate(fldPath *field.Path) field.ErrorList {
	p := fldPath.Child("podSelectors")
	if len(s.PodSelectors) == 0 {
		return field.ErrorList{field.Required(p, "at least one label selector for kube-proxy pods")}
	}
	var errs field.ErrorList
	for i := range s.PodSelectors {
		sel := &s.PodSelectors[i]
		errs = append(errs, metav1validation.ValidateLabelSelector(sel, metav1validation.LabelSelectorValidationOptions{}, p.Index(i))...)
		if len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0 {
			errs = append(errs, field.Invalid(p.Index(i), "{}", "an empty selector selects every pod in the cluster, which would all be cached"))
		}
	}
	return errs
}

// Selectors returns the parsed PodSelectors; s must be valid.
func (s Settings) Selectors() ([]labels.Selector, error) {
	out := make([]labels.Selector, 0, len(s.PodSelectors))
	for i := range s.PodSelectors {
		sel, err := metav1.LabelSelectorAsSelector(&s.PodSelectors[i])
		if err != nil {
			return nil, fmt.Errorf("podSelectors[%d]: %w", i, err)
		}
		out = append(out, sel)
	}
	return out, nil
}

// NodeDeletingRule annotates kube-proxy pods whose node is being deleted, and
// removes the annotations once it no longer is (scale-down cancelled).
//
// The annotations let health checks tell an expected unready kube-proxy (its
// node is going away, /healthz fails on purpose) from a real failure. The
// rule runs at admission (pods created already bound to a deleting node:
// static kube-proxy, pods created with nodeName) and in the kube-proxy
// controller, which follows Nodes for the pods bound later (DaemonSet pods).
type NodeDeletingRule struct {
	selectors []labels.Selector
	now       func() time.Time
}

var _ policy.Rule = (*NodeDeletingRule)(nil)

// NewNodeDeletingRule returns the rule for s, or an error when s is not
// valid. now is the clock used for the since annotation when the node does
// not say when its deletion started.
func NewNodeDeletingRule(s Settings, now func() time.Time) (*NodeDeletingRule, error) {
	if errs := s.Validate(field.NewPath(string(NodeDeletingID))); len(errs) > 0 {
		return nil, errs.ToAggregate()
	}
	selectors, err := s.Selectors()
	if err != nil {
		return nil, err
	}
	return &NodeDeletingRule{selectors: selectors, now: now}, nil
}

// ID implements policy.Rule.
func (r *NodeDeletingRule) ID() policy.ID { return NodeDeletingID }

// Effect implements policy.Rule: the rule mutates (annotations only).
func (r *NodeDeletingRule) Effect() policy.Effect { return policy.Mutating }

// Selects reports whether a pod with these labels is a kube-proxy pod by
// its labels (the kube-proxy controller caches those).
func (r *NodeDeletingRule) Selects(podLabels map[string]string) bool {
	return selected(podLabels, r.selectors)
}

// Evaluate implements policy.Rule. It applies to selected kube-proxy pods
// bound to a node the Cluster knows; a pod not yet bound, or an unknown node,
// gets no verdict. It returns at most one finding: annotate (the node is
// being deleted and the pod does not say so) or remove the annotations (it
// says so and the node no longer is).
func (r *NodeDeletingRule) Evaluate(t policy.Target) ([]policy.Finding, bool) {
	pod, ok := t.Object.(*corev1.Pod)
	if !ok || pod.Spec.NodeName == "" || t.Cluster == nil || !IsKubeProxyPod(pod.Labels, &pod.Spec, r.selectors) ||
		policy.Excluded(pod, t.NamespaceLabels) {
		return nil, false
	}
	node, ok := t.Cluster.Node(pod.Spec.NodeName)
	if !ok {
		return nil, false
	}
	annotations := field.NewPath("metadata", "annotations")
	reason, hasReason := pod.Annotations[NodeDeletingAnnotation]
	since, hasSince := pod.Annotations[NodeDeletingSinceAnnotation]

	deletions := Deletions(node)
	if len(deletions) == 0 {
		var remove []string
		if hasReason {
			remove = append(remove, NodeDeletingAnnotation)
		}
		if hasSince {
			remove = append(remove, NodeDeletingSinceAnnotation)
		}
		if len(remove) == 0 {
			return nil, true
		}
		return []policy.Finding{{
			Field:             annotations,
			Rule:              "node-no-longer-deleting",
			Message:           fmt.Sprintf("remove %s: node %q is no longer being deleted", strings.Join(remove, ", "), node.Name),
			RemoveAnnotations: remove,
		}}, true
	}

	// What the pod says stays while it is still true: no rewrite when the
	// node gains a second reason, and a since that was taken from the clock
	// is not taken again.
	d := deletions[0]
	for _, c := range deletions {
		if c.Reason == reason {
			d = c
			if _, err := time.Parse(time.RFC3339, since); err == nil {
				return nil, true
			}
		}
	}
	if d.Since.IsZero() {
		d.Since = r.now().UTC()
	}
	sinceText := d.Since.Format(time.RFC3339)
	return []policy.Finding{{
		Field: annotations,
		Rule:  "node-deleting",
		Message: fmt.Sprintf("annotate %s=%s, %s=%s: node %q is being deleted, and kube-proxy fails /healthz there on purpose "+
			"since Kubernetes v1.30 (KEP-3836), so this pod being unready is expected",
			NodeDeletingAnnotation, d.Reason, NodeDeletingSinceAnnotation, sinceText, node.Name),
		Annotations: map[string]string{NodeDeletingAnnotation: d.Reason, NodeDeletingSinceAnnotation: sinceText},
	}}, true
}
