package webhook_test

import (
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/endpoint-policy/endpoint-policy/internal/webhook"
)

// hostilePod renders a hostNetwork pod with the given containers and extra
// metadata and spec fields (raw JSON, each with a leading comma).
func hostilePod(containers []string, metadata, spec string) string {
	return `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"hostile","namespace":"kube-system"` + metadata + `},` +
		`"spec":{"hostNetwork":true` + spec + `,"containers":[` + strings.Join(containers, ",") + `]}}`
}

func manyContainers(n int) []string {
	cs := make([]string, n)
	for i := range cs {
		cs[i] = fmt.Sprintf(`{"name":"c%d","image":"busybox"}`, i)
	}
	return cs
}

func manyEnv(n int) string {
	var b strings.Builder
	b.WriteString(`{"name":"c","image":"busybox","env":[`)
	for i := range n {
		fmt.Fprintf(&b, `{"name":"VAR_%d","value":"%d"},`, i, i)
	}
	// The pinned host comes last: the rule has to look at every variable.
	b.WriteString(`{"name":"KUBERNETES_SERVICE_HOST","value":"10.0.1.16"}]}`)
	return b.String()
}

// nested renders depth levels of {"a":...} around {}.
func nested(depth int) string {
	return strings.Repeat(`{"a":`, depth) + `{}` + strings.Repeat(`}`, depth)
}

// TestHostileInput sends objects no real API server would, or at the edge
// of what one would, through the HTTP handlers as the API server does. Each
// gets the right answer, without a panic (recovery is off), within a
// deadline that only a hang or a quadratic blow-up would miss, and
// allocating a bounded multiple of its size.
func TestHostileInput(t *testing.T) {
	mutator := newFuzzMutator(t)
	workloads := newFuzzValidator(t, webhook.ValidateWorkloadsPath, webhook.WorkloadKinds)
	kubeadm := newFuzzValidator(t, webhook.ValidateKubeadmConfigPath, webhook.ConfigMapKinds)
	const mib = 1 << 20
	oversize := review("CREATE", "pods", hostilePod(manyContainers(1), `,"annotations":{"big":"`+strings.Repeat("x", 8*mib)+`"}`, ""))

	tests := []struct {
		name    string
		handler http.Handler
		path    string
		body    string
		// wantPatchOps > 0: allowed with that many patch operations;
		// wantCode != 0: refused with that code and wantMsg in the message;
		// both zero: allowed without a patch.
		wantPatchOps int
		wantCode     int32
		wantMsg      string
	}{
		{name: "1,000 containers: each pointed at the balancer", handler: mutator, path: webhook.MutatePodPath,
			body: review("CREATE", "pods", hostilePod(manyContainers(1000), "", "")), wantPatchOps: 1000 + 1},
		{name: "10,000 env vars, the pinned host last: rewritten", handler: mutator, path: webhook.MutatePodPath,
			body: review("CREATE", "pods", hostilePod([]string{manyEnv(10000)}, "", "")), wantPatchOps: 2 + 1},
		{name: "10,000 env vars on a kube-apiserver mirror pod: validated", handler: workloads, path: webhook.ValidateWorkloadsPath,
			body: validationReview{operation: "CREATE", resource: "/v1/pods", object: strings.Replace(apiServerMirrorPod,
				`"name":"kube-apiserver",`, `"name":"kube-apiserver","env":[`+strings.TrimSuffix(strings.SplitN(manyEnv(10000), `"env":[`, 2)[1], "}")+`,`, 1)}.String()},
		{name: "unknown fields nested 1,000 deep: ignored", handler: mutator, path: webhook.MutatePodPath,
			body: review("CREATE", "pods", hostilePod(manyContainers(1), `,"x-unknown":`+nested(1000), `,"x-unknown":`+nested(1000))), wantPatchOps: 2},
		{name: "unknown fields nested 100,000 deep: refused by the decoder", handler: mutator, path: webhook.MutatePodPath,
			body: review("CREATE", "pods", hostilePod(manyContainers(1), `,"x-unknown":`+nested(100000), "")), wantCode: http.StatusBadRequest, wantMsg: "depth"},
		{name: "a 4 MiB annotation value: rewritten", handler: mutator, path: webhook.MutatePodPath,
			body: review("CREATE", "pods", hostilePod(manyContainers(1), `,"annotations":{"big":"`+strings.Repeat("x", 4*mib)+`"}`, "")), wantPatchOps: 2},
		{name: "invalid UTF-8 in names and values: rewritten", handler: mutator, path: webhook.MutatePodPath,
			body: review("CREATE", "pods", hostilePod([]string{"{\"name\":\"c\xff\xfe\",\"env\":[{\"name\":\"X\xc3\x28\",\"value\":\"\xed\xa0\x80\"}]}"},
				",\"labels\":{\"a\":\"\xff\"}", "")), wantPatchOps: 2 + 1},
		{name: "a Deployment sent to the pod mutator", handler: mutator, path: webhook.MutatePodPath,
			body:     validationReview{operation: "CREATE", resource: "apps/v1/deployments", object: kubeVIPDeployment("v0.8.4", 1)}.String(),
			wantCode: http.StatusBadRequest, wantMsg: "serves v1 pods"},
		{name: "a pod sent to the kubeadm-config validator", handler: kubeadm, path: webhook.ValidateKubeadmConfigPath,
			body:     validationReview{operation: "CREATE", resource: "/v1/pods", object: apiServerMirrorPod}.String(),
			wantCode: http.StatusBadRequest, wantMsg: "pods"},
		{name: "a ConfigMap sent to the workloads validator", handler: workloads, path: webhook.ValidateWorkloadsPath,
			body:     validationReview{operation: "CREATE", resource: "/v1/configmaps", object: kubeadmConfigShared}.String(),
			wantCode: http.StatusBadRequest, wantMsg: "configmaps"},
		{name: "empty body", handler: mutator, path: webhook.MutatePodPath, body: "", wantCode: http.StatusBadRequest},
		{name: "a body over the 7 MiB limit", handler: mutator, path: webhook.MutatePodPath, body: oversize,
			wantCode: http.StatusRequestEntityTooLarge, wantMsg: "request entity is too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start := time.Now()
			resp := serve(t, tt.handler, tt.path, []byte(tt.body))
			took := time.Since(start)
			runtime.ReadMemStats(&after)
			allocated := after.TotalAlloc - before.TotalAlloc
			t.Logf("%d bytes in: answered in %s, %d bytes allocated", len(tt.body), took, allocated)

			switch {
			case tt.wantCode != 0:
				if resp.Allowed || resp.Result == nil || resp.Result.Code != tt.wantCode || !strings.Contains(resp.Result.Message, tt.wantMsg) {
					t.Errorf("answer %+v, want code %d with %q", resp.Result, tt.wantCode, tt.wantMsg)
				}
			case !resp.Allowed:
				t.Errorf("refused: %+v", resp.Result)
			case tt.wantPatchOps > 0:
				obj := patched(t, []byte(tt.body), resp)
				if n := len(patchOps(t, resp)); n != tt.wantPatchOps || obj == nil {
					t.Errorf("%d patch operations, want %d", n, tt.wantPatchOps)
				}
			case len(resp.Patch) > 0:
				t.Errorf("unexpected patch %s", resp.Patch)
			}
			// Bounds that only a hang or a blow-up (quadratic work, a copy
			// per element) would exceed; speed is measured by benchmarks.
			if took > 10*time.Second {
				t.Errorf("took %s", took)
			}
			if limit := uint64(64*len(tt.body)) + 16<<20; allocated > limit {
				t.Errorf("allocated %d bytes for a %d-byte request (limit %d)", allocated, len(tt.body), limit)
			}
		})
	}
}
