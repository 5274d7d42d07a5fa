package audit

// The pod feed's watch, read from the API server's protobuf stream in the
// feed's own goroutine and decoded only as far as the audit needs.
//
// client-go's watch (StreamWatcher, and RetryWatcher over it) decodes every
// event whole, a goroutine apart, and hands it on through two channels. For
// the audit most events need far less: a deletion needs the pod's name, a
// pod in an excluded namespace nothing more, and no policy reads a feed
// pod's status. So each event is decoded as far as its pod's name,
// namespace and resourceVersion; the rest of the pod only when it is
// audited (podEvent.decodePod), its status never (but the phase).
// BenchmarkPodEvent: 0.7 µs and 7 allocations against 19.7 µs and 231 for
// client-go's whole decode, 17.5 µs when the pod is audited; BenchmarkEndToEnd,
// docs/performance.md ("The pod feed's watch").

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/scheme"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/endpoint-policy/endpoint-policy/internal/cluster"
)

// podSource lists the hostNetwork pods and watches them.
type podSource interface {
	list(ctx context.Context, opts metav1.ListOptions) (*corev1.PodList, error)
	watch(ctx context.Context, resourceVersion string) (podStream, error)
}

// podStream is one watch: its events until an error (io.EOF when the API
// server ends it). An event is valid until the next is read: decode its pod
// (podEvent.decodePod) before.
type podStream interface {
	next() (podEvent, error)
	Close() error
}

// podEvent is one watch event: the name, namespace and resourceVersion of
// its pod (for a bookmark, only the resourceVersion), the rest of the pod
// undecoded until decodePod. An Error event has Status instead.
type podEvent struct {
	Type                             watch.EventType
	Namespace, Name, ResourceVersion string
	Status                           *metav1.Status
	meta, spec                       []byte
	phase                            corev1.PodPhase
}

// decodePod decodes the pod: its metadata, spec and status.phase.
func (ev *podEvent) decodePod() (*corev1.Pod, error) {
	p := &corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}, Status: corev1.PodStatus{Phase: ev.phase}}
	if err := p.ObjectMeta.Unmarshal(ev.meta); err != nil {
		return nil, fmt.Errorf("decoding the metadata of pod %s/%s: %w", ev.Namespace, ev.Name, err)
	}
	if err := p.Spec.Unmarshal(ev.spec); err != nil {
		return nil, fmt.Errorf("decoding the spec of pod %s/%s: %w", ev.Namespace, ev.Name, err)
	}
	return p, nil
}

// apiPods is the podSource of the API server: lists through the typed
// client, watches read by protobufStream. Both speak protobuf
// (cluster.ProtobufConfig).
type apiPods struct {
	client *corev1client.CoreV1Client
	// watches has a connection of its own, in HTTP/1.1: an event is read
	// from it by the goroutine that decodes it, and the client writes
	// nothing back. Over the manager's HTTP/2 connection, every event
	// went through the connection's reading goroutine, and about every
	// 4 KiB read (a pod or two) the client wrote a flow-control window
	// update (golang.org/x/net/http2's inflowMinRefresh):
	// BenchmarkEndToEnd, docs/performance.md ("The pod feed's watch").
	watches *corev1client.CoreV1Client
}

func newAPIPods(mgr manager.Manager) (*apiPods, error) {
	cfg := cluster.ProtobufConfig(mgr.GetConfig())
	c, err := corev1client.NewForConfigAndClient(cfg, mgr.GetHTTPClient())
	if err != nil {
		return nil, err
	}
	cfg.NextProtos = []string{"http/1.1"}
	watches, err := corev1client.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &apiPods{client: c, watches: watches}, nil
}

func (a *apiPods) list(ctx context.Context, opts metav1.ListOptions) (*corev1.PodList, error) {
	return a.client.Pods(metav1.NamespaceAll).List(ctx, opts)
}

// minWatchTimeout is the shortest a watch lasts before the API server ends
// it; each lasts between one and two of it, as a reflector's do.
const minWatchTimeout = 5 * time.Minute

func (a *apiPods) watch(ctx context.Context, resourceVersion string) (podStream, error) {
	timeout := int64(minWatchTimeout.Seconds() * (1 + rand.Float64())) //nolint:gosec // a spread of timeouts, not a secret
	body, err := a.watches.RESTClient().Get().Resource("pods").
		VersionedParams(&metav1.ListOptions{
			Watch: true, ResourceVersion: resourceVersion, FieldSelector: hostNetworkPods,
			AllowWatchBookmarks: true, TimeoutSeconds: &timeout,
		}, scheme.ParameterCodec).
		SetHeader("Accept", runtime.ContentTypeProtobuf+";stream=watch").
		Stream(ctx)
	if err != nil {
		return nil, err
	}
	return newProtobufStream(body), nil
}

// protobufStream reads a watch in the API server's protobuf stream format:
// each event a metav1.WatchEvent preceded by its length (4 bytes, big
// endian), its object in the protobuf envelope (runtime.Unknown after a
// 4-byte magic number).
type protobufStream struct {
	body  io.ReadCloser
	r     *bufio.Reader
	frame []byte // the last event's, reused: an event is valid until the next
}

func newProtobufStream(body io.ReadCloser) *protobufStream {
	return &protobufStream{body: body, r: bufio.NewReaderSize(body, 32<<10)}
}

// maxEventSize bounds one event: the API server's own limit on an object
// in etcd is 1.5 MiB, a pod whole is far smaller.
const maxEventSize = 16 << 20

// protobufMagic starts every object the protobuf serializer encodes.
var protobufMagic = []byte{0x6b, 0x38, 0x73, 0x00}

func (s *protobufStream) Close() error { return s.body.Close() }

func (s *protobufStream) next() (podEvent, error) {
	var size [4]byte
	if _, err := io.ReadFull(s.r, size[:]); err != nil {
		return podEvent{}, err
	}
	n := binary.BigEndian.Uint32(size[:])
	if n > maxEventSize {
		return podEvent{}, fmt.Errorf("watch event of %d bytes, more than %d", n, maxEventSize)
	}
	if cap(s.frame) < int(n) {
		s.frame = make([]byte, n)
	}
	frame := s.frame[:n]
	if _, err := io.ReadFull(s.r, frame); err != nil {
		return podEvent{}, fmt.Errorf("reading a watch event: %w", err)
	}
	return decodeEvent(frame)
}

// decodeEvent decodes one protobuf watch event (metav1.WatchEvent). The
// pod it keeps aside for decodePod is a part of frame.
func decodeEvent(frame []byte) (podEvent, error) {
	typ, object, err := fields2(frame, 1, 2)
	if err != nil {
		return podEvent{}, fmt.Errorf("decoding a watch event: %w", err)
	}
	raw, _, err := fields2(object, 1, 0) // runtime.RawExtension: raw
	if err != nil {
		return podEvent{}, fmt.Errorf("decoding a watch event: %w", err)
	}
	if !bytes.HasPrefix(raw, protobufMagic) {
		return podEvent{}, fmt.Errorf("decoding a watch event: its object is not in protobuf")
	}
	var kind runtime.TypeMeta // of the runtime.Unknown that wraps the object
	typeMeta, inner, err := fields2(raw[len(protobufMagic):], 1, 2)
	if err == nil {
		err = kind.Unmarshal(typeMeta)
	}
	if err != nil {
		return podEvent{}, fmt.Errorf("decoding a watch event: %w", err)
	}
	ev := podEvent{Type: watch.EventType(typ)}
	switch {
	case ev.Type == watch.Error && kind.Kind == "Status":
		ev.Status = &metav1.Status{}
		if err := ev.Status.Unmarshal(inner); err != nil {
			return podEvent{}, fmt.Errorf("decoding a watch error: %w", err)
		}
		return ev, nil
	case kind.Kind != "Pod":
		return podEvent{}, fmt.Errorf("watch event %s of a %s, not a Pod", typ, kind.Kind)
	case ev.Type != watch.Added && ev.Type != watch.Modified && ev.Type != watch.Deleted && ev.Type != watch.Bookmark:
		return podEvent{}, fmt.Errorf("watch event of type %q", typ)
	}
	if err := ev.setPod(inner); err != nil {
		return podEvent{}, err
	}
	return ev, nil
}

// setPod keeps the protobuf Pod b aside, and reads its name, namespace,
// resourceVersion and phase.
func (ev *podEvent) setPod(b []byte) error {
	meta, spec, status, err := podFields(b)
	if err != nil {
		return fmt.Errorf("decoding a watched pod: %w", err)
	}
	ev.meta, ev.spec = meta, spec
	err = eachField(meta, func(num protowire.Number, v []byte) {
		switch num { // ObjectMeta's
		case 1:
			ev.Name = string(v)
		case 3:
			ev.Namespace = string(v)
		case 6:
			ev.ResourceVersion = string(v)
		}
	})
	if err != nil {
		return fmt.Errorf("decoding a watched pod's metadata: %w", err)
	}
	phase, _, err := fields2(status, 1, 0) // PodStatus: phase
	if err != nil {
		return fmt.Errorf("decoding the status of pod %s/%s: %w", ev.Namespace, ev.Name, err)
	}
	ev.phase = corev1.PodPhase(phase)
	return nil
}

// podFields returns the metadata, spec and status of a protobuf Pod
// (fields 1, 2 and 3), undecoded.
func podFields(b []byte) (meta, spec, status []byte, err error) {
	err = eachField(b, func(num protowire.Number, v []byte) {
		switch num {
		case 1:
			meta = v
		case 2:
			spec = v
		case 3:
			status = v
		}
	})
	return meta, spec, status, err
}

// fields2 returns the bytes of fields a and b of message m (b 0: none).
func fields2(m []byte, a, b protowire.Number) (va, vb []byte, err error) {
	err = eachField(m, func(num protowire.Number, v []byte) {
		switch num {
		case a:
			va = v
		case b:
			vb = v
		}
	})
	return va, vb, err
}

// eachField calls f with every length-delimited field of message m (the
// messages, strings and bytes) and skips the others.
func eachField(m []byte, f func(protowire.Number, []byte)) error {
	for len(m) > 0 {
		num, typ, n := protowire.ConsumeTag(m)
		if n < 0 {
			return protowire.ParseError(n)
		}
		m = m[n:]
		if typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, m)
			if n < 0 {
				return protowire.ParseError(n)
			}
			m = m[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(m)
		if n < 0 {
			return protowire.ParseError(n)
		}
		m = m[n:]
		f(num, v)
	}
	return nil
}
