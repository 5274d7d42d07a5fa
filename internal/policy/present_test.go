package policy_test

import (
	"strings"
	"testing"
	"unicode/utf8"

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
