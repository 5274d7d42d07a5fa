package announce_test

import (
	"testing"

	"github.com/endpoint-policy/endpoint-policy/internal/announce"
)

func TestSet(t *testing.T) {
	var s announce.Set[string, string, string]
	if s.Has("node-a", "pod-1", "ToBeDeleted") || s.Take("node-a", "pod-1", "ToBeDeleted") {
		t.Fatal("the zero Set has announcements")
	}
	s.Replace("node-a", map[string]string{"pod-1": "ToBeDeleted", "pod-2": "NodeDeletion"})
	tests := []struct {
		name              string
		subject, key, val string
		want              bool
	}{
		{"announced", "node-a", "pod-1", "ToBeDeleted", true},
		{"another value under the key", "node-a", "pod-1", "NodeDeletion", false},
		{"another key", "node-a", "pod-3", "ToBeDeleted", false},
		{"another subject", "node-b", "pod-1", "ToBeDeleted", false},
	}
	for _, tt := range tests {
		if got := s.Has(tt.subject, tt.key, tt.val); got != tt.want {
			t.Errorf("%s: Has = %v, want %v", tt.name, got, tt.want)
		}
	}
	if !s.Take("node-a", "pod-1", "ToBeDeleted") || s.Take("node-a", "pod-1", "ToBeDeleted") {
		t.Error("Take answers true exactly once")
	}
	if !s.Has("node-a", "pod-2", "NodeDeletion") {
		t.Error("Take forgot another key")
	}
	s.Take("node-a", "pod-2", "NodeDeletion")
	if s.Len() != 0 {
		t.Errorf("a subject with nothing left is kept: %d subjects", s.Len())
	}
	s.Replace("node-b", map[string]string{"pod-9": "x"})
	s.Replace("node-b", nil)
	if s.Len() != 0 {
		t.Errorf("Replace with none keeps the subject: %d subjects", s.Len())
	}
}
