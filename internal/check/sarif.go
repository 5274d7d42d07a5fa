package check

// SARIF 2.1.0 output (`check -o sarif`), for code scanning: GitHub's
// upload-sarif, GitLab, Azure DevOps show each finding on the line of the
// manifest. https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/sarif-v2.1.0-errata01-os-complete.html

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"strings"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/registry"
)

const (
	sarifSchema  = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
	sarifVersion = "2.1.0"
	// Repository is where the tool, its policies' docs and its source are.
	Repository = "https://github.com/endpoint-policy/endpoint-policy"
	// fingerprintKey names the partial fingerprint: a finding keeps it when
	// its line moves (the policy, the object and the field, not the line).
	fingerprintKey = "endpointPolicyFinding/v1"
)

// Tool describes the program in a SARIF run.
type Tool struct {
	Version string
}

type sarifLog struct {
	Schema  string     `json:"$schema"`
	Version string     `json:"version"`
	Runs    []sarifRun `json:"runs"`
}

type sarifRun struct {
	Tool    sarifTool     `json:"tool"`
	Results []sarifResult `json:"results"`
}

type sarifTool struct {
	Driver sarifDriver `json:"driver"`
}

type sarifDriver struct {
	Name           string      `json:"name"`
	Version        string      `json:"version,omitempty"`
	InformationURI string      `json:"informationUri"`
	Rules          []sarifRule `json:"rules"`
}

type sarifRule struct {
	ID                   string            `json:"id"`
	Name                 string            `json:"name"`
	ShortDescription     sarifText         `json:"shortDescription"`
	FullDescription      sarifText         `json:"fullDescription"`
	HelpURI              string            `json:"helpUri"`
	DefaultConfiguration sarifRuleConfig   `json:"defaultConfiguration"`
	Properties           map[string]string `json:"properties"`
}

type sarifText struct {
	Text     string `json:"text"`
	Markdown string `json:"markdown,omitempty"`
}

type sarifRuleConfig struct {
	Enabled bool   `json:"enabled"`
	Level   string `json:"level"`
}

type sarifResult struct {
	RuleID              string            `json:"ruleId"`
	RuleIndex           int               `json:"ruleIndex"`
	Level               string            `json:"level"`
	Message             sarifText         `json:"message"`
	Locations           []sarifLocation   `json:"locations,omitempty"`
	PartialFingerprints map[string]string `json:"partialFingerprints"`
	Properties          map[string]string `json:"properties"`
}

type sarifLocation struct {
	PhysicalLocation *sarifPhysical `json:"physicalLocation,omitempty"`
	LogicalLocations []sarifLogical `json:"logicalLocations,omitempty"`
}

// sarifLogical names an object read from a cluster (check --cluster): it
// has no file.
type sarifLogical struct {
	Name               string `json:"name"`
	FullyQualifiedName string `json:"fullyQualifiedName"`
	Kind               string `json:"kind"`
}

type sarifPhysical struct {
	ArtifactLocation sarifArtifact `json:"artifactLocation"`
	Region           *sarifRegion  `json:"region,omitempty"`
}

type sarifArtifact struct {
	URI string `json:"uri"`
}

type sarifRegion struct {
	StartLine int `json:"startLine"`
}

// WriteSARIF writes r as a SARIF 2.1.0 log of one run: a rule per policy
// of the registry, a result per finding (level error for deny, warning for
// warn, note for what admission changes, holds back or an exemption lets
// stand), located on the file as given and the line of the offending field
// where the document tells it, else of the object's document.
func (r Report) WriteSARIF(w io.Writer, tool Tool) error {
	rules, index := sarifRules()
	results := make([]sarifResult, 0, len(r.Findings))
	for _, f := range r.Findings {
		res := sarifResult{
			RuleID:              string(f.Policy),
			RuleIndex:           index[f.Policy],
			Level:               sarifLevel(f.Action),
			Message:             sarifText{Text: f.Message},
			PartialFingerprints: map[string]string{fingerprintKey: f.fingerprint()},
			Properties:          map[string]string{"action": string(f.Action), "object": objectName(f)},
		}
		if f.Exemption != "" {
			res.Properties["exemption"], res.Properties["reason"] = f.Exemption, f.Reason
		}
		res.Locations = []sarifLocation{f.sarifLocation()}
		results = append(results, res)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(sarifLog{
		Schema:  sarifSchema,
		Version: sarifVersion,
		Runs: []sarifRun{{
			Tool:    sarifTool{Driver: sarifDriver{Name: "endpoint-policy", Version: tool.Version, InformationURI: Repository, Rules: rules}},
			Results: results,
		}},
	})
}

// sarifLocation is where f is: its file and line, or, for an object read
// from a cluster, the object.
func (f Finding) sarifLocation() sarifLocation {
	if o := f.object; o != nil && o.File != "" {
		phys := &sarifPhysical{ArtifactLocation: sarifArtifact{URI: artifactURI(o.File)}}
		if line := o.FieldLine(f.Field); line > 0 {
			phys.Region = &sarifRegion{StartLine: line}
		}
		return sarifLocation{PhysicalLocation: phys}
	}
	name := f.Kind + "/" + f.Name
	if f.Namespace != "" {
		name = f.Namespace + "/" + name
	}
	return sarifLocation{LogicalLocations: []sarifLogical{{Name: f.Name, FullyQualifiedName: name, Kind: "resource"}}}
}

// sarifRules returns a rule per policy of the registry, and each one's
// index.
func sarifRules() ([]sarifRule, map[policy.ID]int) {
	rules := make([]sarifRule, 0, len(registry.Policies))
	index := make(map[policy.ID]int, len(registry.Policies))
	for i, d := range registry.Policies {
		plain := strings.ReplaceAll(d.Summary, "`", "")
		rules = append(rules, sarifRule{
			ID:                   string(d.ID),
			Name:                 string(d.ID),
			ShortDescription:     sarifText{Text: policy.Shorten(plain, 120)},
			FullDescription:      sarifText{Text: plain, Markdown: d.Summary},
			HelpURI:              Repository + "/blob/main/" + d.Doc(),
			DefaultConfiguration: sarifRuleConfig{Enabled: d.DefaultMode != policy.Disabled, Level: defaultLevel(d)},
			Properties:           map[string]string{"severity": string(d.Severity), "category": d.Category, "effect": d.Effect.String()},
		})
		index[d.ID] = i
	}
	return rules, index
}

// defaultLevel is what the policy's findings are in its default mode: a
// validating policy's deny (Enforce) an error, its warning (Audit) a
// warning; a mutating policy's change a note.
func defaultLevel(d policy.Descriptor) string {
	switch {
	case d.DefaultMode == policy.Disabled:
		return "none"
	case d.Effect == policy.Mutating:
		return "note"
	case d.DefaultMode == policy.Enforce:
		return "error"
	}
	return "warning"
}

func sarifLevel(a policy.Action) string {
	switch a {
	case policy.ActionDeny:
		return "error"
	case policy.ActionWarn:
		return "warning"
	}
	return "note" // mutate, unverified, exempt
}

// artifactURI is the file as given, as a URI reference: relative stays
// relative, with forward slashes; standard input is "-".
func artifactURI(file string) string {
	return strings.ReplaceAll(file, `\`, "/")
}

// fingerprint identifies the finding across edits that move it: the
// policy, the object, the field (or, without one, the message).
func (f Finding) fingerprint() string {
	where := f.Field
	if where == "" {
		where = f.Message
	}
	sum := sha256.Sum256([]byte(strings.Join([]string{string(f.Policy), f.Kind, f.Namespace, f.Name, where}, "\x00")))
	return hex.EncodeToString(sum[:16])
}
