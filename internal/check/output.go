package check

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	corev1 "k8s.io/api/core/v1"

	"github.com/endpoint-policy/endpoint-policy/internal/policy/apiserver"
	"github.com/endpoint-policy/endpoint-policy/internal/registry"
)

// WriteJSON writes r in the contract's JSON shape.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes r for people: one line per finding, then the summary.
func (r Report) WriteTable(w io.Writer) error {
	if len(r.Findings) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ACTION\tPOLICY\tOBJECT\tSOURCE\tMESSAGE")
		for _, f := range r.Findings {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", f.Action, f.Policy, objectName(f), f.Source, oneLine(f.Message))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(w)
	}
	s := r.Summary
	unverified, patches := "", ""
	if s.Unverified > 0 {
		unverified = fmt.Sprintf(", %d unverified", s.Unverified)
	}
	if s.Exempt > 0 {
		unverified += fmt.Sprintf(", %d exempt", s.Exempt)
	}
	if s.SkippedPatches > 0 {
		patches = fmt.Sprintf(", %d kubeadm patch files skipped", s.SkippedPatches)
	}
	_, err := fmt.Fprintf(w, "%d objects checked, %d skipped (kinds no policy reads)%s: %d deny, %d warn, %d mutate%s\n",
		s.Objects, s.Skipped, patches, s.Deny, s.Warn, s.Mutate, unverified)
	if err != nil {
		return err
	}
	return r.writeWhatIf(w)
}

// writeWhatIf writes check --cluster's per-policy counts and the verdicts
// that change against the configuration in force.
func (r Report) writeWhatIf(w io.Writer) error {
	if r.Policies != nil {
		fmt.Fprintln(w, "\nBy policy:")
		for _, d := range registry.Policies {
			counts := r.Policies[d.ID]
			var parts []string
			for _, a := range slices.Sorted(maps.Keys(counts)) {
				parts = append(parts, fmt.Sprintf("%d %s", counts[a], a))
			}
			if len(parts) == 0 {
				parts = []string{"nothing to report"}
			}
			fmt.Fprintf(w, "  %s: %s\n", d.ID, strings.Join(parts, ", "))
		}
	}
	if r.InForce == "" {
		return nil
	}
	if len(r.Changes) == 0 {
		_, err := fmt.Fprintf(w, "\nNo verdict changes against the configuration in force (%s).\n", r.InForce)
		return err
	}
	fmt.Fprintf(w, "\nWhat changes against the configuration in force (%s): %d verdicts\n", r.InForce, len(r.Changes))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  IN FORCE\tCANDIDATE\tPOLICY\tOBJECT")
	for _, c := range r.Changes {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", c.InForce, c.Candidate, c.Policy, objectName(Finding{Kind: c.Kind, Namespace: c.Namespace, Name: c.Name}))
	}
	return tw.Flush()
}

func objectName(f Finding) string {
	name := f.Name
	if f.Namespace != "" {
		name = f.Namespace + "/" + name
	}
	return f.Kind + " " + name
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// EmitKubeadmPatches writes, into dir, the kubeadm patch that points the
// IP-pinned probes of the one kube-apiserver manifest in in at fqdn (see
// apiserver.ProbeHostPatch). A patch directory is per node, so more than one
// manifest with pinned probes is an error. path is "" when no manifest has
// pinned probes (nothing is written).
func EmitKubeadmPatches(in *Input, dir, fqdn string) (path string, err error) {
	var patch []byte
	var from string
	for _, o := range in.Objects {
		pod, ok := o.Object.(*corev1.Pod)
		if !ok {
			continue
		}
		p, ok, err := apiserver.ProbeHostPatch(pod, fqdn)
		if err != nil {
			return "", fmt.Errorf("%s: %w", o.Source, err)
		}
		if !ok {
			continue
		}
		if patch != nil {
			return "", fmt.Errorf("--emit-kubeadm-patches: %s and %s both have IP-pinned probes; a patch directory is per node, "+
				"so give one node's kube-apiserver manifest", from, o.Source)
		}
		patch, from = p, o.Source
	}
	if patch == nil {
		return "", nil
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", fmt.Errorf("--emit-kubeadm-patches: %w", err)
	}
	path = filepath.Join(dir, apiserver.KubeadmPatchFile)
	if err := os.WriteFile(path, patch, 0o644); err != nil { //nolint:gosec // a kubeadm patch is not secret
		return "", fmt.Errorf("--emit-kubeadm-patches: %w", err)
	}
	return path, nil
}
