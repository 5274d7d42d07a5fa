package audit

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
)

// fakePods serves List in pages from pods and watches from the watchers the
// test hands it, and records the options of every list.
type fakePods struct {
	mu       sync.Mutex
	pods     []corev1.Pod
	rv       int
	lists    []metav1.ListOptions
	watchers chan *fakeWatch
}

func (f *fakePods) list(_ context.Context, opts metav1.ListOptions) (*corev1.PodList, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists = append(f.lists, opts)
	start := 0
	if opts.Continue != "" {
		_, _ = fmt.Sscan(opts.Continue, &start)
	}
	end := min(start+int(opts.Limit), len(f.pods))
	list := &corev1.PodList{ListMeta: metav1.ListMeta{ResourceVersion: fmt.Sprint(f.rv)}}
	list.Items = slices.Clone(f.pods[start:end])
	if end < len(f.pods) {
		list.Continue = fmt.Sprint(end)
	}
	return list, nil
}

// watch returns a watch in the API server's protobuf stream format, whose
// events the test writes (fakeWatch).
func (f *fakePods) watch(ctx context.Context, resourceVersion string) (podStream, error) {
	r, w := io.Pipe()
	// As an HTTP response's body, it ends with the request's context.
	go func() {
		<-ctx.Done()
		_ = r.CloseWithError(ctx.Err())
	}()
	f.watchers <- &fakeWatch{w: w, from: resourceVersion}
	return newProtobufStream(r), nil
}

func testPod(name, rv string) corev1.Pod {
	return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: name, ResourceVersion: rv},
		Spec: corev1.PodSpec{HostNetwork: true, Volumes: []corev1.Volume{{Name: "v"}}}}
}

// consumer collects what the feed hands on, as the audit's reconciles would:
// it takes each pod from the inbox, and records the largest inbox seen.
type consumer struct {
	feed *podFeed
	mu   sync.Mutex
	got  map[string]string // name -> resourceVersion; "" deleted
	peak int
}

func (a *consumer) enqueue(name types.NamespacedName) {
	a.feed.mu.Lock()
	a.peak = max(a.peak, len(a.feed.inbox))
	a.feed.mu.Unlock()
	go func() {
		p, found := a.feed.take(name)
		a.mu.Lock()
		defer a.mu.Unlock()
		switch found {
		case arrived:
			if len(p.Spec.Volumes) > 0 {
				panic("a pod in the inbox is not slimmed")
			}
			a.got[name.Name] = p.ResourceVersion
		case gone:
			a.got[name.Name] = ""
		}
	}()
}

func (a *consumer) snapshot() map[string]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.got)
}

// The feed lists in pages, hands on every pod once, follows the watch, and
// after the watch expires lists again and finds the pods deleted meanwhile.
func TestPodFeed(t *testing.T) {
	g := gomega.NewWithT(t)
	eventually := func(what string, cond func() bool) {
		t.Helper()
		g.Eventually(cond).WithTimeout(10*time.Second).WithPolling(5*time.Millisecond).Should(gomega.BeTrue(), what)
	}
	api := &fakePods{watchers: make(chan *fakeWatch, 4), rv: 10}
	for i := range 7 {
		api.pods = append(api.pods, testPod(fmt.Sprintf("p%d", i), "1"))
	}
	feed := newPodFeed(api, 3)
	a := &consumer{feed: feed, got: map[string]string{}}
	var started []string
	var startedMu sync.Mutex
	swept := make(chan struct{})
	resweep := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go feed.run(ctx, a.enqueue, func(n types.NamespacedName) {
		startedMu.Lock()
		defer startedMu.Unlock()
		started = append(started, n.Name)
	}, func() { close(swept) }, resweep)

	<-swept
	w := <-api.watchers
	startedMu.Lock()
	if len(started) != 7 {
		t.Errorf("the first sweep started %d pods, want 7", len(started))
	}
	startedMu.Unlock()
	eventually("every pod audited", func() bool { return len(a.snapshot()) == 7 })
	api.mu.Lock()
	for _, o := range api.lists {
		if o.FieldSelector != "spec.hostNetwork=true" || o.Limit != 3 {
			t.Errorf("listed with %+v, want hostNetwork pods 3 at a time", o)
		}
	}
	if len(api.lists) != 3 {
		t.Errorf("7 pods listed in %d pages, want 3", len(api.lists))
	}
	api.mu.Unlock()
	if a.peak > 2*3 {
		t.Errorf("up to %d pods waited in the inbox; a sweep keeps at most two pages", a.peak)
	}

	p := testPod("p1", "2")
	if w.from != "10" {
		t.Errorf("watched from resourceVersion %q, want the list's 10", w.from)
	}
	w.send(t, watch.Modified, &p)
	w.send(t, watch.Deleted, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "p2", ResourceVersion: "3"}})
	eventually("the watched change and deletion", func() bool {
		got := a.snapshot()
		return got["p1"] == "2" && got["p2"] == ""
	})

	// A sweep while the watch runs hands on only the versions it knows:
	// p1 at "1" is older than the watch's, p2 is gone.
	before := len(api.lists)
	resweep <- struct{}{}
	eventually("the interval's sweep", func() bool {
		api.mu.Lock()
		defer api.mu.Unlock()
		return len(api.lists) == before+3
	})
	eventually("the sweep's pods audited", func() bool {
		feed.mu.Lock()
		defer feed.mu.Unlock()
		return len(feed.inbox) == 0
	})
	if got := a.snapshot(); got["p1"] != "2" || got["p2"] != "" {
		t.Errorf("a sweep handed on versions the watch had replaced: %v", got)
	}

	// The watch expires; p3 was deleted and p1 changed meanwhile.
	api.mu.Lock()
	api.pods = slices.DeleteFunc(api.pods, func(p corev1.Pod) bool { return p.Name == "p2" || p.Name == "p3" })
	api.pods[1] = testPod("p1", "4")
	api.mu.Unlock()
	w.send(t, watch.Error, &apierrors.NewResourceExpired("too old").ErrStatus)
	<-api.watchers
	eventually("the full sweep after the watch expired", func() bool {
		got := a.snapshot()
		return got["p3"] == "" && got["p1"] == "4"
	})
	if feed.Len() != 5 {
		t.Errorf("the feed knows %d pods, want 5", feed.Len())
	}
}
