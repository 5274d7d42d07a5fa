package policy_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

// Shorten ends a cut message at a word, with "…": a report viewer shows a
// sentence that stops, not "…kube-apiser...".
func TestShorten(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		n        int
		want     string
	}{
		{"fits", "set KUBERNETES_SERVICE_HOST=localhost", 100, "set KUBERNETES_SERVICE_HOST=localhost"},
		{"at a word", "the probe fails and the kubelet restarts a healthy API server", 30, "the probe fails and the…"},
		{"trailing punctuation goes", "first clause; second clause is long", 19, "first clause…"},
		{"one long word: at a rune", "ääääääääääääääääääää", 11, "ääää…"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := policy.Shorten(tc.in, tc.n)
			if got != tc.want {
				t.Errorf("Shorten(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
			}
			if len(got) > tc.n || !utf8.ValidString(got) {
				t.Errorf("%q: %d bytes (max %d), valid UTF-8 %v", got, len(got), tc.n, utf8.ValidString(got))
			}
		})
	}
	long := strings.Repeat("word ", 400)
	if got := policy.Shorten(long, policy.MaxNoteBytes); len(got) > policy.MaxNoteBytes || !strings.HasSuffix(got, "word…") {
		t.Errorf("a 2,000-byte message cut to %d bytes, ending %q", len(got), got[len(got)-8:])
	}
}

// Summary says findings that share a fix once, and cuts each finding's own
// part, never the fix (issue 34: cp-1's startupProbe lost its fix).
func TestResultSummary(t *testing.T) {
	const fix = "when that address changes the probe fails. Set the probe's host to the node's FQDN or to 127.0.0.1"
	probe := func(name string) policy.Finding {
		return policy.Finding{Field: field.NewPath("spec", "containers").Index(0).Child(name, "httpGet", "host"),
			Message: "the " + name + ` of container "kube-apiserver" targets the IP 10.0.0.11: ` + fix, Detail: fix}
	}
	probes := policy.Result{Policy: "apiserver-probe-host", Findings: []policy.Finding{probe("livenessProbe"), probe("readinessProbe"), probe("startupProbe")}}
	long := policy.Result{Policy: "apiserver-probe-host", Findings: []policy.Finding{
		{Message: strings.Repeat("x ", 600) + ": " + fix, Detail: fix}, {Message: "alone"}}}
	for _, tt := range []struct {
		name     string
		r        policy.Result
		maxBytes int
		want     []string // substrings, in order
		wantOnce string   // said exactly once
	}{
		{name: "three probes, one fix", r: probes, maxBytes: policy.MaxNoteBytes, wantOnce: fix, want: []string{
			"[apiserver-probe-host] spec.containers[0].livenessProbe.httpGet.host: the livenessProbe",
			", spec.containers[0].readinessProbe.httpGet.host: the readinessProbe",
			", spec.containers[0].startupProbe.httpGet.host: the startupProbe", `targets the IP 10.0.0.11: ` + fix}},
		{name: "over the budget: the parts are cut, the fix is whole", r: probes, maxBytes: 300, wantOnce: fix,
			want: []string{"[apiserver-probe-host] spec.containers[0].livenessProbe", "…: " + fix}},
		{name: "a long finding is cut, not the one after it nor the fix", r: long, maxBytes: policy.MaxNoteBytes, wantOnce: fix,
			want: []string{"[apiserver-probe-host] x x", "…: " + fix, "; alone"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.r.Summary("", 10, tt.maxBytes)
			if len(got) > tt.maxBytes {
				t.Errorf("%d bytes, want at most %d: %s", len(got), tt.maxBytes, got)
			}
			if n := strings.Count(got, tt.wantOnce); n != 1 {
				t.Errorf("the fix said %d times: %s", n, got)
			}
			rest := got
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("%q not found (in order) in %s", w, got)
				}
				rest = rest[i+len(w):]
			}
		})
	}
}
