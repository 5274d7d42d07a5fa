package registry_test

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/registry"
)

var update = flag.Bool("update", false, "rewrite the README's policy table from the registry")

// repoRoot is the repository, two levels above this package.
const repoRoot = "../.."

// Every descriptor is complete, and the rule it builds from its default
// settings says the same ID and effect.
func TestDescriptors(t *testing.T) {
	seen := map[policy.ID]bool{}
	for _, d := range registry.Policies {
		t.Run(string(d.ID), func(t *testing.T) {
			if d.ID == "" || seen[d.ID] {
				t.Fatalf("ID %q empty or listed twice", d.ID)
			}
			seen[d.ID] = true
			if got, ok := registry.Lookup(d.ID); !ok || got.ID != d.ID {
				t.Errorf("Lookup(%s) = %v, %v", d.ID, got.ID, ok)
			}
			if !d.DefaultMode.Valid() || d.Summary == "" || d.New == nil {
				t.Errorf("incomplete descriptor: default mode %q, summary %q, constructor set %v", d.DefaultMode, d.Summary, d.New != nil)
			}
			switch d.Severity {
			case policy.SeverityCritical, policy.SeverityHigh, policy.SeverityMedium, policy.SeverityLow, policy.SeverityInfo:
			default:
				t.Errorf("severity %q is not one the report APIs know", d.Severity)
			}
			if d.Category == "" {
				t.Error("no category: report viewers would file it under Other")
			}
			var settings policy.Settings
			if d.DefaultSettings != nil {
				settings = d.DefaultSettings()
				if errs := settings.Validate(field.NewPath("policies", string(d.ID))); len(errs) > 0 {
					t.Errorf("default settings not valid: %v", errs)
				}
			}
			rule, err := d.New(settings)
			if err != nil {
				t.Fatalf("New(default settings): %v", err)
			}
			if rule.ID() != d.ID || rule.Effect() != d.Effect {
				t.Errorf("rule says %s/%s, descriptor %s/%s", rule.ID(), rule.Effect(), d.ID, d.Effect)
			}
			for _, p := range []string{d.Package, d.Doc()} {
				if _, err := os.Stat(filepath.Join(repoRoot, p)); err != nil {
					t.Errorf("descriptor names %s: %v", p, err)
				}
			}
		})
	}
}

// A descriptor's New refuses another policy's settings with an error, not a
// panic.
func TestNewWithForeignSettings(t *testing.T) {
	for _, d := range registry.Policies {
		if d.DefaultSettings == nil {
			continue
		}
		for _, other := range registry.Policies {
			if other.DefaultSettings == nil || other.ID == d.ID {
				continue
			}
			if _, err := d.New(other.DefaultSettings()); err == nil || !strings.Contains(err.Error(), string(d.ID)) {
				t.Errorf("%s.New(%s's settings) = %v, want an error naming %s", d.ID, other.ID, err, d.ID)
			}
		}
	}
}

// PolicyTable renders the README's policy table from the registry.
func policyTable() string {
	var b strings.Builder
	b.WriteString("| ID | What | Effect | Default mode | Severity | Category | Code | Doc |\n|---|---|---|---|---|---|---|---|\n")
	for _, d := range registry.Policies {
		fmt.Fprintf(&b, "| `%s` | %s | %s | `%s` | %s | %s | [%s](%s) | [%s](%s) |\n",
			d.ID, d.Summary, d.Effect, d.DefaultMode, d.Severity, d.Category, strings.TrimPrefix(d.Package, "internal/"), d.Package, d.Doc(), d.Doc())
	}
	return b.String()
}

var tableRE = regexp.MustCompile(`(?s)<!-- policy-table:begin[^>]*-->\n.*?<!-- policy-table:end -->`)

// The README's policy table is the registry's: go test ./internal/registry
// -update rewrites it.
func TestREADMEPolicyTable(t *testing.T) {
	path := filepath.Join(repoRoot, "README.md")
	readme, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "<!-- policy-table:begin (generated from internal/registry: go test ./internal/registry -update) -->\n" +
		policyTable() + "<!-- policy-table:end -->"
	got := tableRE.Find(readme)
	if got == nil {
		t.Fatalf("README.md has no <!-- policy-table:begin --> ... <!-- policy-table:end --> block")
	}
	if string(got) == want {
		return
	}
	if !*update {
		t.Fatalf("README.md's policy table is not the registry's; run go test ./internal/registry -update\nwant:\n%s\ngot:\n%s", want, got)
	}
	out := tableRE.ReplaceAllLiteral(readme, []byte(want))
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Each policy's doc page starts with its header table, whose Code row links
// the rule's package.
func TestDocPagesLinkCode(t *testing.T) {
	for _, d := range registry.Policies {
		page, err := os.ReadFile(filepath.Join(repoRoot, d.Doc()))
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("| Code | [`%s`](../../%s) |", d.Package, d.Package)
		if !strings.Contains(string(page), want) {
			t.Errorf("%s has no header row %q", d.Doc(), want)
		}
	}
}
