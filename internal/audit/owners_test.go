package audit

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

func controlledBy(apiVersion, kind, name string) []metav1.OwnerReference {
	return []metav1.OwnerReference{{APIVersion: apiVersion, Kind: kind, Name: name, UID: types.UID("uid-" + name), Controller: ptr.To(true)}}
}

func TestPodWorkload(t *testing.T) {
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "op-5d8", OwnerReferences: controlledBy("apps/v1", "Deployment", "op")}}
	bareRS := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "bare-rs"}}
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "nightly-29", OwnerReferences: controlledBy("batch/v1", "CronJob", "nightly")}}
	scheme := runtime.NewScheme()
	_ = appsv1.AddToScheme(scheme)
	_ = batchv1.AddToScheme(scheme)
	r := fake.NewClientBuilder().WithScheme(scheme).WithObjects(rs, bareRS, job).Build()
	for _, tc := range []struct {
		name   string
		owners []metav1.OwnerReference
		want   string // Kind/name; "" none
	}{
		{"a DaemonSet's pod", controlledBy("apps/v1", "DaemonSet", "cilium"), "DaemonSet/cilium"},
		{"a StatefulSet's pod", controlledBy("apps/v1", "StatefulSet", "db"), "StatefulSet/db"},
		{"a Deployment's pod, through its ReplicaSet", controlledBy("apps/v1", "ReplicaSet", "op-5d8"), "Deployment/op"},
		{"a ReplicaSet of its own", controlledBy("apps/v1", "ReplicaSet", "bare-rs"), "ReplicaSet/bare-rs"},
		{"a ReplicaSet not in the cache", controlledBy("apps/v1", "ReplicaSet", "gone"), "ReplicaSet/gone"},
		{"a CronJob's pod, through its Job", controlledBy("batch/v1", "Job", "nightly-29"), "CronJob/nightly"},
		{"a static pod: its controller is its Node", controlledBy("v1", "Node", "cp-1"), ""},
		{"another group's DaemonSet", controlledBy("example.com/v1", "DaemonSet", "x"), ""},
		{"an owner that is not the controller", []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: "x", UID: "u"}}, ""},
		{"a bare pod", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", OwnerReferences: tc.owners}}
			got := podWorkload(context.Background(), r, pod)
			switch {
			case tc.want == "" && got != nil:
				t.Errorf("got %s/%s, want none", got.Kind, got.Name)
			case tc.want != "" && (got == nil || got.Kind+"/"+got.Name != tc.want || got.Namespace != "ns" || got.UID == ""):
				t.Errorf("got %+v, want %s in ns with its UID", got, tc.want)
			}
		})
	}
	if podWorkload(context.Background(), r, nil) != nil {
		t.Error("no pod, no workload")
	}
}

// One Event per workload: the first after the settle time with every pod
// found meanwhile, by policy; the next no sooner than an interval later.
func TestOwnerEvents(t *testing.T) {
	g := gomega.NewWithT(t)
	type event struct {
		related, note string
		at            time.Time
	}
	var mu sync.Mutex
	var events []event
	recorded := func() []event {
		mu.Lock()
		defer mu.Unlock()
		return append([]event(nil), events...)
	}
	const interval = 400 * time.Millisecond
	o := &ownerEvents{settle: 50 * time.Millisecond, interval: func() time.Duration { return interval },
		record: func(regarding, related *corev1.ObjectReference, note string) {
			mu.Lock()
			defer mu.Unlock()
			events = append(events, event{related.Name, regarding.Kind + " " + string(regarding.UID) + " | " + note, time.Now()})
		}}
	ctx := context.Background()
	ds := &corev1.ObjectReference{Kind: "DaemonSet", Namespace: "kube-system", Name: "cilium", UID: "ds"}
	pod := func(name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: name, UID: types.UID(name)}}
	}
	const hne, vip = policy.ID("host-network-endpoint"), policy.ID("kube-vip-ipvs-backends")
	for _, p := range []string{"cilium-a", "cilium-b", "cilium-c"} {
		o.add(ctx, ds, hne, pod(p), "[host-network-endpoint] would set ...")
	}
	o.add(ctx, ds, vip, pod("cilium-a"), "[kube-vip-ipvs-backends] ...")
	g.Eventually(recorded).Should(gomega.HaveLen(1))
	g.Consistently(recorded).WithTimeout(interval/2).Should(gomega.HaveLen(1), "one Event for the workload")
	first := recorded()[0]
	g.Expect(first.note).To(gomega.Equal("DaemonSet ds | DaemonSet kube-system/cilium:" +
		" 3 pods newly in violation of host-network-endpoint, e.g. pod cilium-c: [host-network-endpoint] would set ...;" +
		" 1 pod newly in violation of kube-vip-ipvs-backends, e.g. pod cilium-a: [kube-vip-ipvs-backends] ..."))
	g.Expect(first.related).To(gomega.Equal("cilium-c"))
	g.Expect(ownerNotePolicies(first.note)).To(gomega.Equal([]policy.ID{hne, vip}), "a new leader reads the policies back")

	o.add(ctx, ds, hne, pod("cilium-d"), "[host-network-endpoint] would set ...")
	o.add(ctx, ds, hne, pod("cilium-e"), "[host-network-endpoint] would set ...")
	g.Consistently(recorded).WithTimeout(interval/4).Should(gomega.HaveLen(1), "not again within the interval")
	g.Eventually(recorded).Should(gomega.HaveLen(2))
	second := recorded()[1]
	g.Expect(second.at.Sub(first.at)).To(gomega.BeNumerically(">=", interval), "an interval after the workload's last Event")
	g.Expect(second.note).To(gomega.MatchRegexp(`^DaemonSet ds \| DaemonSet kube-system/cilium, since [0-9TZ:-]+: 2 pods newly in violation of host-network-endpoint, e\.g\. pod cilium-e: `))
	g.Expect(second.related).To(gomega.Equal("cilium-e"), "a pod of its own: not a repeat of the first Event")
}
