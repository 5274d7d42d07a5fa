package check_test

import (
	"bytes"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/endpoint-policy/endpoint-policy/internal/check"
)

// FuzzRead feeds the check CLI's document reader arbitrary bytes on stdin,
// seeded with every file in testdata. For any input: no panic; an error names
// its document ("-#N"); input that reads is checked, and the report renders
// as JSON and as a table. `make fuzz` runs it for FUZZTIME.
func FuzzRead(f *testing.F) {
	err := filepath.WalkDir("testdata", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.Contains(path, string(filepath.Separator)+"fuzz"+string(filepath.Separator)) {
			return err
		}
		data, err := os.ReadFile(path)
		if err == nil {
			f.Add(data)
		}
		return err
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte("---\n---\n"))
	f.Add([]byte(`{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"List","items":[]}]}`))
	engine := defaultEngine(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := check.Read([]string{check.Stdin}, bytes.NewReader(data))
		if err != nil {
			if !strings.HasPrefix(err.Error(), check.Stdin+"#") {
				t.Fatalf("error does not name its document: %v", err)
			}
			return
		}
		r := check.Check(in, engine)
		if err := r.WriteJSON(io.Discard); err != nil {
			t.Fatalf("WriteJSON: %v", err)
		}
		if err := r.WriteTable(io.Discard); err != nil {
			t.Fatalf("WriteTable: %v", err)
		}
	})
}
