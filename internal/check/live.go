package check

// check --cluster: what the policies read, listed from a live cluster with
// the user's credentials, for a what-if of a candidate configuration.

import (
	"context"
	"fmt"
	"io"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	clientscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/endpoint-policy/endpoint-policy/internal/cluster"
	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/kinds"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/apiserver"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/cpendpoint"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
)

// ClusterSource is the Source of the objects read from a cluster.
const ClusterSource = "cluster"

// ClusterOptions say what ReadCluster reads.
type ClusterOptions struct {
	// Namespace is the server's: the node agents' Leases.
	Namespace string
	// EndpointConfigMaps are the candidate configuration's
	// endpointConfigMaps: read besides kubeadm-config, cluster-info and
	// kube-proxy.
	EndpointConfigMaps []types.NamespacedName
	// PageSize is how many objects one list call returns (default 500).
	PageSize int64
	// Progress, when set, is told the count of each kind as its pages
	// arrive, after the first page (a large cluster takes a while).
	Progress io.Writer
}

// listed is one kind ReadCluster lists: what it is, where, how.
type listed struct {
	kind     kinds.Kind
	list     client.ObjectList
	resource string // as RBAC names it, for errors
	opts     []client.ListOption
}

// ReadCluster lists what the policies read, as the audit reads it, with c
// (read-only: list and get): Namespaces and Nodes (the cluster's state), the
// hostNetwork pods (field selector spec.hostNetwork=true: the pods the
// policies are about; pods on the pod network are never listed), the
// workloads (not a ReplicaSet a Deployment owns, nor a Job a CronJob owns:
// their template is their owner's), the ConfigMaps kubeadm-config,
// cluster-info, kube-proxy and those of EndpointConfigMaps, and the node
// agents' Leases, whose reports host-network-endpoint's verification reads
// as the server does. A missing permission is an error that names the verb
// and the resource, never a partial result.
func ReadCluster(ctx context.Context, c client.Reader, opts ClusterOptions) (*Input, error) {
	if opts.PageSize <= 0 {
		opts.PageSize = 500
	}
	in := &Input{EndpointConfigMaps: opts.EndpointConfigMaps}
	for _, l := range []listed{
		{kinds.Namespace, &corev1.NamespaceList{}, "namespaces", nil},
		{kinds.Node, &corev1.NodeList{}, "nodes", nil},
		{kinds.Pod, &corev1.PodList{}, "pods", []client.ListOption{client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("spec.hostNetwork", "true")}}},
	} {
		if err := in.list(ctx, c, l, opts); err != nil {
			return nil, err
		}
	}
	for _, k := range []kinds.Kind{kinds.Deployment, kinds.StatefulSet, kinds.DaemonSet, kinds.ReplicaSet, kinds.Job, kinds.CronJob} {
		list, err := listOf(k)
		if err != nil {
			return nil, err
		}
		if err := in.list(ctx, c, listed{k, list, k.Resource.Resource + "." + k.Resource.Group, nil}, opts); err != nil {
			return nil, err
		}
	}
	if err := in.getConfigMaps(ctx, c, opts.EndpointConfigMaps); err != nil {
		return nil, err
	}
	endpoints, err := agentReports(ctx, c, in, opts)
	if err != nil {
		return nil, err
	}
	in.Verifications = endpoints
	return in, nil
}

// listOf returns an empty list of k's objects.
func listOf(k kinds.Kind) (client.ObjectList, error) {
	gvk := k.GVK
	gvk.Kind += "List"
	obj, err := clientscheme.Scheme.New(gvk)
	if err != nil {
		return nil, err
	}
	list, ok := obj.(client.ObjectList)
	if !ok {
		return nil, fmt.Errorf("%s is not a list", gvk)
	}
	return list, nil
}

// list reads every page of l into in.
func (in *Input) list(ctx context.Context, c client.Reader, l listed, opts ClusterOptions) error {
	base := append([]client.ListOption{client.Limit(opts.PageSize)}, l.opts...)
	count, pages, next := 0, 0, ""
	for {
		if err := c.List(ctx, l.list, append(base[:len(base):len(base)], client.Continue(next))...); err != nil {
			return permissionError("list", l.resource, "in all namespaces", err)
		}
		items, err := meta.ExtractList(l.list)
		if err != nil {
			return err
		}
		for _, item := range items {
			obj, ok := item.(client.Object)
			if !ok || policy.OwnedTemplate(obj) {
				continue
			}
			obj.GetObjectKind().SetGroupVersionKind(l.kind.GVK)
			in.Objects = append(in.Objects, Object{Source: ClusterSource, Object: obj})
			count++
		}
		pages++
		next = l.list.GetContinue()
		if opts.Progress != nil && (pages > 1 || next != "") {
			fmt.Fprintf(opts.Progress, "endpoint-policy check: listed %d %s\n", count, l.resource)
		}
		if next == "" {
			return nil
		}
	}
}

// getConfigMaps reads the ConfigMaps the policies read, by name; one that
// does not exist is left out, as a cluster without it has none.
func (in *Input) getConfigMaps(ctx context.Context, c client.Reader, endpoint []types.NamespacedName) error {
	names := []types.NamespacedName{
		{Namespace: apiserver.KubeadmConfigNamespace, Name: apiserver.KubeadmConfigName},
		{Namespace: cpendpoint.ClusterInfoNamespace, Name: cpendpoint.ClusterInfoName},
		{Namespace: cpendpoint.KubeProxyNamespace, Name: cpendpoint.KubeProxyName},
	}
	for _, n := range append(names, endpoint...) {
		cm := &corev1.ConfigMap{}
		switch err := c.Get(ctx, n, cm); {
		case apierrors.IsNotFound(err):
			continue
		case err != nil:
			return permissionError("get", "configmaps", fmt.Sprintf("%q in namespace %q", n.Name, n.Namespace), err)
		}
		cm.SetGroupVersionKind(kinds.ConfigMap.GVK)
		in.Objects = append(in.Objects, Object{Source: ClusterSource, Object: cm})
	}
	return nil
}

// agentReports reads the node agents' Leases in the server's namespace into
// the index the server keeps of them, with the Nodes in.
func agentReports(ctx context.Context, c client.Reader, in *Input, opts ClusterOptions) (*cluster.Endpoints, error) {
	e := cluster.NewEndpoints(time.Now, nil)
	for _, o := range in.Objects {
		if n, ok := o.Object.(*corev1.Node); ok {
			e.SetNode(n)
		}
	}
	leases := &coordinationv1.LeaseList{}
	base := []client.ListOption{client.InNamespace(opts.Namespace), client.MatchingLabelsSelector{Selector: hostnetwork.AgentLeaseSelector()}, client.Limit(opts.PageSize)}
	for next := ""; ; next = leases.Continue {
		if err := c.List(ctx, leases, append(base[:len(base):len(base)], client.Continue(next))...); err != nil {
			return nil, permissionError("list", "leases.coordination.k8s.io", fmt.Sprintf("in namespace %q (the node agents' reports)", opts.Namespace), err)
		}
		for i := range leases.Items {
			if err := e.SetLease(&leases.Items[i]); err != nil && opts.Progress != nil {
				fmt.Fprintf(opts.Progress, "endpoint-policy check: warning: Lease %s/%s: %v\n", opts.Namespace, leases.Items[i].Name, err)
			}
		}
		if leases.Continue == "" {
			return e, nil
		}
	}
}

// permissionError names the verb and the resource an error is about; a
// Forbidden one says what the credentials lack.
func permissionError(verb, resource, scope string, err error) error {
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("cannot %s %s %s: the credentials lack %q on %s (check --cluster reads, with get and list, what the policies read): %w",
			verb, resource, scope, verb, resource, err)
	}
	return fmt.Errorf("cannot %s %s %s: %w", verb, resource, scope, err)
}

// ConfigInForce reads the server's configuration from its ConfigMap
// (key config.yaml, as the chart mounts it).
func ConfigInForce(ctx context.Context, c client.Reader, name types.NamespacedName) (*config.PolicyConfiguration, error) {
	cm := &corev1.ConfigMap{}
	if err := c.Get(ctx, name, cm); err != nil {
		return nil, permissionError("get", "configmaps", fmt.Sprintf("%q in namespace %q (the configuration in force)", name.Name, name.Namespace), err)
	}
	data, ok := cm.Data["config.yaml"]
	if !ok {
		return nil, fmt.Errorf("ConfigMap %s has no key config.yaml", name)
	}
	cfg, err := config.Parse([]byte(data))
	if err != nil {
		return nil, fmt.Errorf("ConfigMap %s, config.yaml: %w", name, err)
	}
	return cfg, nil
}
