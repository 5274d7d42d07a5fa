package check_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/endpoint-policy/endpoint-policy/internal/check"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// sarifResults runs check -o sarif on what in read, and returns its results
// as "<ruleId> <level> <uri>:<line>".
func sarifResults(t *testing.T, in *check.Input) ([]string, map[string]any) {
	t.Helper()
	var out bytes.Buffer
	if err := check.Check(in, defaultEngine(t)).WriteSARIF(&out, check.Tool{Version: "test"}); err != nil {
		t.Fatal(err)
	}
	var log map[string]any
	if err := json.Unmarshal(out.Bytes(), &log); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range log["runs"].([]any)[0].(map[string]any)["results"].([]any) {
		res := r.(map[string]any)
		phys := res["locations"].([]any)[0].(map[string]any)["physicalLocation"].(map[string]any)
		line := phys["region"].(map[string]any)["startLine"]
		got = append(got, res["ruleId"].(string)+" "+res["level"].(string)+" "+phys["artifactLocation"].(map[string]any)["uri"].(string)+":"+jsonNumber(line))
	}
	return got, log
}

func jsonNumber(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestSARIFLines: each result is on the line of its field in the file as
// given, in multi-document files, Lists, JSON and standard input; a field
// the object leaves out points at the deepest part it has.
func TestSARIFLines(t *testing.T) {
	const stdin = `# a comment before the first document
---
apiVersion: v1
kind: ConfigMap
metadata: {name: unrelated}
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: kube-vip
  namespace: kube-system
spec:
  selector: {matchLabels: {app: kube-vip}}
  template:
    metadata: {labels: {app: kube-vip}}
    spec:
      hostNetwork: true
      containers:
        - name: kube-vip
          image: ghcr.io/kube-vip/kube-vip:v0.8.4
          env:
            - {name: cp_enable, value: "true"}
            - {name: lb_enable, value: "true"}
`
	yamlList := `apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: ConfigMap
    metadata: {name: first}
  - apiVersion: apps/v1
    kind: DaemonSet
    metadata: {name: kube-vip, namespace: kube-system}
    spec:
      selector: {matchLabels: {app: kube-vip}}
      template:
        metadata: {labels: {app: kube-vip}}
        spec:
          containers:
            - name: kube-vip
              env: [{name: cp_enable, value: "true"}, {name: lb_enable, value: "true"}]
              image: ghcr.io/kube-vip/kube-vip:v0.8.4
`
	listFile := filepath.Join(t.TempDir(), "list.yaml")
	if err := os.WriteFile(listFile, []byte(yamlList), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		paths []string
		stdin string
		want  []string
	}{
		{"multi-document file: the image's line, and the env of a container", []string{"testdata/multi-doc.yaml"}, "",
			[]string{"host-network-endpoint note testdata/multi-doc.yaml:14", "kube-vip-ipvs-backends error testdata/multi-doc.yaml:41"}},
		{"a List in YAML: the item's field", []string{listFile}, "",
			[]string{"kube-vip-ipvs-backends error " + listFile + ":18"}},
		{"a List in JSON: a container without env points at the container", []string{"testdata/list.json"}, "",
			[]string{"host-network-endpoint note testdata/list.json:9"}},
		{"standard input is -, lines counted from its first", []string{"-"}, stdin,
			[]string{"kube-vip-ipvs-backends error -:20"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, err := check.Read(tt.paths, strings.NewReader(tt.stdin))
			if err != nil {
				t.Fatal(err)
			}
			got, _ := sarifResults(t, in)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("results (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSARIFFingerprintIgnoresLines: the same finding moved down a file
// keeps its partial fingerprint (code scanning does not open a new alert).
func TestSARIFFingerprintIgnoresLines(t *testing.T) {
	data, err := os.ReadFile("testdata/multi-doc.yaml")
	if err != nil {
		t.Fatal(err)
	}
	fingerprints := func(data []byte) []string {
		in, err := check.Read([]string{"-"}, bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		_, log := sarifResults(t, in)
		var out []string
		for _, r := range log["runs"].([]any)[0].(map[string]any)["results"].([]any) {
			out = append(out, r.(map[string]any)["partialFingerprints"].(map[string]any)["endpointPolicyFinding/v1"].(string))
		}
		return out
	}
	before, after := fingerprints(data), fingerprints(append([]byte("# moved\n# down\n---\n"), data...))
	if len(before) != 2 || !cmp.Equal(before, after) {
		t.Errorf("fingerprints %v before, %v after moving the documents", before, after)
	}
}

// TestSARIFValidatesAgainstTheSchema checks check's SARIF against the
// official SARIF 2.1.0 JSON schema (sarifSchema), and that the validator
// refuses a log the schema forbids.
func TestSARIFValidatesAgainstTheSchema(t *testing.T) {
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(sarifSchema(t)))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AddResource("sarif-schema-2.1.0.json", doc); err != nil {
		t.Fatal(err)
	}
	schema, err := c.Compile("sarif-schema-2.1.0.json")
	if err != nil {
		t.Fatal(err)
	}
	in, err := check.Read([]string{"testdata", "-"}, strings.NewReader("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {hostNetwork: true, containers: [{name: c, image: i}]}\n"))
	if err != nil && len(in.Objects) == 0 {
		t.Fatal(err) // testdata holds files that do not parse, on purpose
	}
	// An object read from a cluster (check --cluster) has no file: a
	// logical location.
	live, err := check.Read([]string{"testdata/multi-doc.yaml"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range live.Objects {
		in.Objects = append(in.Objects, check.Object{Source: check.ClusterSource, Object: o.Object})
	}
	var out bytes.Buffer
	if err := check.Check(in, defaultEngine(t)).WriteSARIF(&out, check.Tool{Version: "test"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"fullyQualifiedName": "kube-system/DaemonSet/kube-vip"`) {
		t.Error("no logical location for the object read from a cluster")
	}
	log, err := jsonschema.UnmarshalJSON(bytes.NewReader(out.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if err := schema.Validate(log); err != nil {
		t.Errorf("check -o sarif is not valid SARIF 2.1.0: %v", err)
	}
	// The validator is not a rubber stamp: a level SARIF does not have.
	bad := strings.Replace(out.String(), `"level": "error"`, `"level": "fatal"`, 1)
	badLog, err := jsonschema.UnmarshalJSON(strings.NewReader(bad))
	if err != nil {
		t.Fatal(err)
	}
	if bad == out.String() || schema.Validate(badLog) == nil {
		t.Error("the schema accepted a result with level fatal")
	}
}

// sarifSchema returns the official SARIF 2.1.0 JSON schema, unedited: the
// OASIS Approved Errata 01 schema
// (https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json),
// byte for byte oasis-tcs/sarif-spec's sarif-2.1/schema/sarif-schema-2.1.0.json
// (commit ffa72eb, "Update the github copies of the schemata to match the
// Approved Errata", and the repository's head since). It is read from the
// copy gosec's module carries for its own SARIF tests, in the Go module
// cache at the version golangci-lint's build pins
// (hack/tools/golangci-lint/go.mod), and checked against its sha256.
func sarifSchema(t *testing.T) []byte {
	t.Helper()
	const module, file = "github.com/securego/gosec/v2", "report/sarif/testdata/sarif-schema-2.1.0.json"
	const sum = "c3b4bb2d6093897483348925aaa73af03b3e3f4bd4ca38cef26dcb4212a2682e"
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", module)
	cmd.Dir = filepath.Join("..", "..", "hack", "tools", "golangci-lint")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("locating %s in the module cache (make test downloads it to build golangci-lint; else go mod download in %s): %v", module, cmd.Dir, err)
	}
	data, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), file))
	if err != nil {
		t.Fatal(err)
	}
	if got := sha256.Sum256(data); hex.EncodeToString(got[:]) != sum {
		t.Fatalf("%s/%s is not the official schema: sha256 %x, want %s", module, file, got, sum)
	}
	return data
}

// TestSARIFGolden: check -o sarif on examples/, against the golden file
// (go test ./internal/check -run TestSARIFGolden -update rewrites it).
func TestSARIFGolden(t *testing.T) {
	in, err := check.Read([]string{"../../examples"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := check.Check(in, defaultEngine(t)).WriteSARIF(&out, check.Tool{Version: "test"}); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "examples.sarif")
	if *update {
		if err := os.WriteFile(golden, out.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), out.String()); diff != "" {
		t.Errorf("check -o sarif -f examples/ (-%s +got); go test ./internal/check -run TestSARIFGolden -update rewrites it:\n%s", golden, diff)
	}
}
