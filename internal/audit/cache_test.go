package audit_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/endpoint-policy/endpoint-policy/internal/audit"
	"github.com/endpoint-policy/endpoint-policy/internal/check"
	"github.com/endpoint-policy/endpoint-policy/internal/cluster"
	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
	"github.com/endpoint-policy/endpoint-policy/internal/testing/fixtures"
)

// fileCluster is what the pods' nodes tell, with every node's agent report
// verifying localhost:7443: host-network-endpoint's verification runs.
type fileCluster struct{ *cluster.Endpoints }

func (fileCluster) Node(string) (*corev1.Node, bool)     { return nil, false }
func (fileCluster) APIServerPods() ([]*corev1.Pod, bool) { return nil, true }

// The audit caches pods through slim; every policy must give a slimmed pod
// the verdict it gives the whole pod.
func TestSlimKeepsWhatThePoliciesRead(t *testing.T) {
	in, err := check.Read([]string{filepath.Join("..", "..", "examples"), filepath.Join("..", "check", "testdata", "manifests"),
		filepath.Join("..", "check", "testdata", "multi-doc.yaml"), filepath.Join("..", "check", "testdata", "list.json")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pods := []*corev1.Pod{fixtures.CiliumOperator(), fixtures.CiliumOperatorPinned(), fixtures.APIServerMirrorPod(),
		fixtures.KubeProxy("node-ok"), fixtures.KubeProxy(""), fixtures.LargePod(5, 20)}
	for _, o := range in.Objects {
		if p, ok := o.Object.(*corev1.Pod); ok {
			pods = append(pods, p)
		}
	}
	endpoints := cluster.NewEndpoints(time.Now, nil)
	for _, p := range pods {
		if p.Spec.NodeName == "" {
			continue
		}
		endpoints.SetNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: p.Spec.NodeName}})
		lease, err := hostnetwork.NewLease("ep", hostnetwork.Report{Node: p.Spec.NodeName, Endpoint: "localhost:7443", RenewTime: time.Now()}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := endpoints.SetLease(lease); err != nil {
			t.Fatal(err)
		}
	}
	engine, err := config.Default().Engine()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods {
		for _, c := range []policy.Cluster{nil, fileCluster{endpoints}} {
			want := render(engine.Evaluate(policy.Target{Object: p, Cluster: c}))
			slimmed, err := audit.Slim(p.DeepCopy())
			if err != nil {
				t.Fatal(err)
			}
			got := render(engine.Evaluate(policy.Target{Object: slimmed.(client.Object), Cluster: c}))
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("pod %s/%s (cluster %v): verdicts differ once slimmed (-whole +slim):\n%s", p.Namespace, p.Name, c != nil, diff)
			}
		}
	}
}

// render writes results down whole: policy, mode, and each finding's field,
// message, patch, annotations and whether it is held back.
func render(results []policy.Result) []string {
	var out []string
	for _, r := range results {
		for _, f := range r.Findings {
			out = append(out, fmt.Sprintf("%s %s %s %v %v %v %v", r.Policy, r.Mode, f, f.Patch, f.Annotations, f.RemoveAnnotations, f.Unverified))
		}
		if len(r.Findings) == 0 {
			out = append(out, fmt.Sprintf("%s %s allow", r.Policy, r.Mode))
		}
	}
	return out
}
