package audit

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/streaming"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/scheme"
	restwatch "k8s.io/client-go/rest/watch"

	"github.com/endpoint-policy/endpoint-policy/internal/testing/fixtures"
)

// watchEncoder writes watch events as the API server does for a client
// that accepts application/vnd.kubernetes.protobuf;stream=watch
// (k8s.io/apiserver's endpoints/handlers/watch.go, watchEncoder): each
// object encoded by the protobuf serializer, in a metav1.WatchEvent encoded
// by the stream serializer, framed by its length.
type watchEncoder struct {
	embedded runtime.Encoder
	stream   streaming.Encoder
}

func newWatchEncoder(t testing.TB, w io.Writer) *watchEncoder {
	info, ok := runtime.SerializerInfoForMediaType(scheme.Codecs.SupportedMediaTypes(), runtime.ContentTypeProtobuf)
	if !ok || info.StreamSerializer == nil {
		t.Fatal("no protobuf stream serializer")
	}
	return &watchEncoder{
		embedded: scheme.Codecs.EncoderForVersion(info.Serializer, corev1.SchemeGroupVersion),
		stream:   streaming.NewEncoder(info.StreamSerializer.NewFrameWriter(w), info.StreamSerializer.Serializer),
	}
}

func (e *watchEncoder) encode(t testing.TB, typ watch.EventType, obj runtime.Object) {
	var raw bytes.Buffer
	if err := e.embedded.Encode(obj, &raw); err != nil {
		t.Fatal(err)
	}
	if err := e.stream.Encode(&metav1.WatchEvent{Type: string(typ), Object: runtime.RawExtension{Raw: raw.Bytes()}}); err != nil {
		t.Error(err)
	}
}

// fakeWatch is a watch of fakePods: the test writes its events.
type fakeWatch struct {
	w    *io.PipeWriter
	from string // the resourceVersion it was opened at
	once sync.Once
	enc  *watchEncoder
}

func (w *fakeWatch) send(t testing.TB, typ watch.EventType, obj runtime.Object) {
	t.Helper()
	w.once.Do(func() { w.enc = newWatchEncoder(t, w.w) })
	w.enc.encode(t, typ, obj)
}

// watchedPod is a pod as the API server sends it in a watch: with status,
// managed fields and resourceVersion.
func watchedPod() *corev1.Pod {
	p := fixtures.CiliumOperator()
	p.Namespace, p.Name, p.UID, p.ResourceVersion = "kube-system", "cilium-operator-6d8b9c7f4-abcde", "0b4e5b2c-5a8c-4a5e-9a52-3c7b0c0a7f11", "123456"
	p.Spec.NodeName = "node-1"
	p.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubelet", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1",
		FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(`{"f:status":{"f:phase":{}}}`), Subresource: "status"}}
	p.Status = corev1.PodStatus{
		Phase:      corev1.PodRunning,
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(time.Unix(1_700_000_000, 0))}},
		ContainerStatuses: []corev1.ContainerStatus{{Name: p.Spec.Containers[0].Name, Ready: true, Image: p.Spec.Containers[0].Image,
			ContainerID: "containerd://4c1f0e9b"}},
		HostIP: "10.0.0.1", PodIP: "10.0.0.1",
	}
	return p
}

// A watch event decodes to what client-go's decoder gives (the metadata,
// the spec once asked for, the phase), and no more.
func TestDecodeEventAsClientGo(t *testing.T) {
	var stream bytes.Buffer
	enc := newWatchEncoder(t, &stream)
	pod := watchedPod()
	bookmark := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{ResourceVersion: "200"}}
	expired := &apierrors.NewResourceExpired("too old resource version: 1 (150)").ErrStatus
	enc.encode(t, watch.Added, pod)
	enc.encode(t, watch.Deleted, pod)
	enc.encode(t, watch.Bookmark, bookmark)
	enc.encode(t, watch.Error, expired)

	// client-go's own reading of the same bytes.
	info, _ := runtime.SerializerInfoForMediaType(scheme.Codecs.SupportedMediaTypes(), runtime.ContentTypeProtobuf)
	theirs := restwatch.NewDecoder(streaming.NewDecoder(info.StreamSerializer.NewFrameReader(io.NopCloser(bytes.NewReader(stream.Bytes()))),
		info.StreamSerializer.Serializer), scheme.Codecs.UniversalDeserializer())
	ours := newProtobufStream(io.NopCloser(&stream))
	for i := range 4 {
		typ, want, err := theirs.Decode()
		if err != nil {
			t.Fatalf("client-go, event %d: %v", i, err)
		}
		got, err := ours.next()
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if got.Type != typ {
			t.Errorf("event %d: type %s, want %s", i, got.Type, typ)
		}
		switch want := want.(type) {
		case *corev1.Pod:
			if got.Namespace != want.Namespace || got.Name != want.Name || got.ResourceVersion != want.ResourceVersion {
				t.Errorf("event %d: pod %s/%s at %s, want %s/%s at %s", i, got.Namespace, got.Name, got.ResourceVersion,
					want.Namespace, want.Name, want.ResourceVersion)
			}
			if typ == watch.Bookmark {
				continue
			}
			pod, err := got.decodePod()
			if err != nil {
				t.Fatal(err)
			}
			want.Status = corev1.PodStatus{Phase: want.Status.Phase}
			if !apiequality.Semantic.DeepEqual(pod, want) {
				t.Errorf("event %d: got %+v, want %+v", i, pod, want)
			}
		case *metav1.Status:
			if err := apierrors.FromObject(got.Status); !apierrors.IsResourceExpired(err) || err.Error() != apierrors.FromObject(want).Error() {
				t.Errorf("event %d: got %v, want %v", i, err, apierrors.FromObject(want))
			}
		}
	}
	if _, err := ours.next(); !errors.Is(err, io.EOF) {
		t.Errorf("after the last event: %v, want EOF", err)
	}
}

// A stream that is cut short, or is not what the API server sends, is an
// error: never a panic, never a pod.
func TestDecodeEventRefusesMalformed(t *testing.T) {
	var stream bytes.Buffer
	newWatchEncoder(t, &stream).encode(t, watch.Added, watchedPod())
	whole := stream.Bytes()
	frame := whole[4:]
	json := []byte(`{"type":"ADDED","object":{}}`)
	cases := map[string][]byte{
		"truncated frame":  whole[:len(whole)-10],
		"length too large": append([]byte{0x7f, 0xff, 0xff, 0xff}, frame...),
		"JSON":             append(binary.BigEndian.AppendUint32(nil, uint32(len(json))), json...),
	}
	// Every shorter frame: a field cut, or one missing.
	for i := range len(frame) {
		cases[fmt.Sprintf("frame cut at %d bytes", i)] = append(binary.BigEndian.AppendUint32(nil, uint32(i)), frame[:i]...)
	}
	for name, b := range cases {
		ev, err := newProtobufStream(io.NopCloser(bytes.NewReader(b))).next()
		if err == nil {
			t.Errorf("%s: decoded %+v, want an error", name, ev)
		}
	}
	// The frame of another kind.
	stream.Reset()
	newWatchEncoder(t, &stream).encode(t, watch.Added, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n"}})
	if _, err := newProtobufStream(io.NopCloser(&stream)).next(); err == nil || !bytes.Contains([]byte(err.Error()), []byte("Node, not a Pod")) {
		t.Errorf("a Node in the pod watch: %v, want an error naming it", err)
	}
}

// Changes the audit can drop (skip) are neither decoded nor handed on; the
// feed still knows the pods, so that its sweeps and deletions stay right.
func TestPodFeedSkips(t *testing.T) {
	api := &fakePods{watchers: make(chan *fakeWatch, 3), rv: 1}
	feed := newPodFeed(api, 10)
	var mu sync.Mutex
	var enqueued []string
	feed.skip = func(_ context.Context, n types.NamespacedName) bool { return n.Namespace == "excluded" }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- feed.watch(ctx, "1", func(n types.NamespacedName) {
			mu.Lock()
			defer mu.Unlock()
			enqueued = append(enqueued, n.String())
		})
	}()
	w := <-api.watchers
	skipped, audited := testPod("a", "2"), testPod("b", "3")
	skipped.Namespace = "excluded"
	w.send(t, watch.Added, &skipped)
	w.send(t, watch.Added, &audited)
	g := gomega.NewWithT(t)
	g.Eventually(feed.Len).WithTimeout(10*time.Second).WithPolling(5*time.Millisecond).Should(gomega.Equal(2), "the pods the feed knows")
	w.send(t, watch.Deleted, &skipped)
	w.send(t, watch.Deleted, &audited)
	// The watch ends (the API server's timeout): the feed watches again
	// from the last resourceVersion.
	_ = w.w.Close()
	next := <-api.watchers
	if next.from != "3" {
		t.Errorf("watched again from %q, want 3", next.from)
	}
	// An event that is not one: the feed watches again (after a backoff)
	// from the last resourceVersion it read.
	if _, err := next.w.Write([]byte{0, 0, 0, 3, 0xff, 0xff, 0xff}); err != nil {
		t.Fatal(err)
	}
	if again := <-api.watchers; again.from != "3" {
		t.Errorf("watched again after a bad event from %q, want 3", again.from)
	}
	mu.Lock()
	if got := enqueued; len(got) != 2 || got[0] != "kube-system/b" || got[1] != "kube-system/b" {
		t.Errorf("handed on %v, want kube-system/b created and deleted", got)
	}
	mu.Unlock()
	if feed.Len() != 0 {
		t.Errorf("the feed knows %d pods after both were deleted", feed.Len())
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("watch returned %v after its context ended", err)
	}
}

// BenchmarkPodEvent: one watched pod event, decoded as client-go does
// (whole) and as the pod feed does: its name, namespace and
// resourceVersion, and the rest when it is audited.
func BenchmarkPodEvent(b *testing.B) {
	var stream bytes.Buffer
	newWatchEncoder(b, &stream).encode(b, watch.Modified, watchedPod())
	frame := stream.Bytes()[4:]
	info, _ := runtime.SerializerInfoForMediaType(scheme.Codecs.SupportedMediaTypes(), runtime.ContentTypeProtobuf)
	b.Run("client-go", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var ev metav1.WatchEvent
			if _, _, err := info.StreamSerializer.Decode(frame, nil, &ev); err != nil {
				b.Fatal(err)
			}
			if _, err := runtime.Decode(scheme.Codecs.UniversalDeserializer(), ev.Object.Raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("name", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeEvent(frame); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("audited", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ev, err := decodeEvent(frame)
			if err == nil {
				_, err = ev.decodePod()
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}
