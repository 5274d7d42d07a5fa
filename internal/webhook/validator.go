package webhook

import (
	"context"
	"fmt"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/endpoint-policy/endpoint-policy/internal/metrics"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

const (
	// ValidateWorkloadsPath serves the validating policies for pods and the
	// pod templates of workloads. It fails open.
	ValidateWorkloadsPath = "/validate-workloads"
	// ValidateKubeadmConfigPath serves the validating policies for the
	// kube-system/kubeadm-config ConfigMap. Registered narrowly, it may fail
	// closed.
	ValidateKubeadmConfigPath = "/validate-kubeadm-config"
	// ValidateConfigMapsPath serves the validating policies for the other
	// ConfigMaps they read, kube-public/cluster-info and
	// kube-system/kube-proxy (control-plane-endpoint). It fails open.
	ValidateConfigMapsPath = "/validate-configmaps"
)

// Validator runs the engine's validating policies on the objects of its
// Kinds: it denies Enforce violations (except on objects that must never be
// denied, see policy.MayDeny) and warns about the rest.
type Validator struct {
	path    string
	kinds   Kinds
	engine  *policy.Store // the engine in force
	cluster policy.Cluster
	metrics *metrics.Recorder
	events  events.EventRecorder
}

// NewValidator returns the validating handler served at path for kinds.
// cluster may be nil (rules that need cluster state give no verdict); events
// may be nil (no Events are recorded).
func NewValidator(path string, kinds Kinds, engine *policy.Store, cluster policy.Cluster, rec *metrics.Recorder, ev events.EventRecorder) (*Validator, error) {
	if engine == nil || rec == nil || len(kinds) == 0 {
		return nil, fmt.Errorf("validator %s needs kinds, an engine store and a metrics recorder", path)
	}
	return &Validator{path: path, kinds: kinds, engine: engine, cluster: cluster, metrics: rec, events: ev}, nil
}

// Handle implements admission.Handler.
func (v *Validator) Handle(ctx context.Context, req admission.Request) admission.Response {
	k, ok := v.kinds[req.Resource]
	if !ok || req.SubResource != "" {
		return admission.Errored(http.StatusBadRequest,
			fmt.Errorf("%s does not serve resource %q subresource %q", v.path, req.Resource.String(), req.SubResource))
	}
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		return admission.Allowed("")
	}
	obj, err := decode(req.Object.Raw, k)
	if err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	if req.Operation == admissionv1.Update {
		old, err := decode(req.OldObject.Raw, k)
		if err != nil {
			return admission.Errored(http.StatusBadRequest, fmt.Errorf("oldObject: %w", err))
		}
		if unchanged(old, obj) {
			// An update that does not touch what the policies read (scaling,
			// labels, a finalizer) is never blocked: the object was
			// admitted before, and the background audit reports it.
			return admission.Allowed("")
		}
	}

	engine, target := v.engine.Load(), policy.Target{Object: obj, Cluster: v.cluster}
	results := engine.EvaluateEffect(target, policy.Validating)
	if _, isPod := obj.(*corev1.Pod); !isPod {
		// A mutating policy's verdict on a workload is about the pods its
		// template creates (Finding.Template): a warning now, the change
		// at their own admission.
		results = append(results, engine.EvaluateEffect(target, policy.Mutating)...)
	}
	mayDeny := policy.MayDeny(obj)
	verdicts := policy.Verdicts(obj, results)
	d := decide(verdicts, v.metrics)
	if len(d.denials) > 0 {
		logf.FromContext(ctx).Info("Denied", "violations", d.denials)
	} else if !mayDeny && !isDryRun(req) {
		v.record(obj, verdicts)
	}
	return d.response(noAnnotations) // validation never patches
}

// record puts an Event per policy with violations on a pod that may not be
// denied (a mirror pod, a controller's pod): its creator (the kubelet, a
// controller) is the only one to see the warnings. An exempted result has
// none: the exemption is the decision to live with it.
func (v *Validator) record(obj client.Object, verdicts []policy.Verdict) {
	if v.events == nil || obj.GetUID() == "" {
		return
	}
	for _, r := range verdicts {
		if r.Action == policy.ActionAllow || r.Action == policy.ActionExempt {
			continue
		}
		note := r.Summary("", maxMessagesPerPolicy, policy.MaxNoteBytes)
		v.events.Eventf(obj, nil, corev1.EventTypeWarning, policy.EventReason, "Admitted", "%s", note)
	}
}

func isDryRun(req admission.Request) bool { return req.DryRun != nil && *req.DryRun }

// unchanged reports whether an update leaves what the validating policies
// read as it was: the pod spec (or template), a ConfigMap's data.
func unchanged(old, obj client.Object) bool {
	if spec, _, ok := policy.PodSpecOf(obj); ok {
		oldSpec, _, _ := policy.PodSpecOf(old)
		return equality.Semantic.DeepEqual(oldSpec, spec)
	}
	if cm, ok := obj.(*corev1.ConfigMap); ok {
		return equality.Semantic.DeepEqual(old.(*corev1.ConfigMap).Data, cm.Data)
	}
	return false
}
