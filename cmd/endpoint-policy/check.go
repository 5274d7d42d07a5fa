package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/endpoint-policy/endpoint-policy/internal/check"
	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/version"
)

// Exit codes of the check command.
const (
	checkPass    = 0 // no deny finding (and, with --strict, no warn)
	checkFail    = 1 // at least one deny finding (or warn, with --strict)
	checkBadCall = 2 // usage or input error
)

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func checkCommand(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	errorf := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "endpoint-policy check: "+format+"\n", a...)
		return checkBadCall
	}
	f, err := parseCheckFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return checkPass
	}
	if errors.Is(err, errFlagsParsed) {
		return checkBadCall // the flag package has said why
	}
	if err != nil {
		return errorf("%v", err)
	}
	cfg, engine, err := loadEngine(f.configFile)
	if err != nil {
		return errorf("--config: %v", err)
	}
	// A document that cannot be read fails the check (exit 2), but the
	// verdicts on everything else are still given: one bad file must not
	// hide a deny.
	in, readErr := check.ReadWith(f.files, stdin, check.Options{StaticPods: f.staticPods})
	for _, w := range in.Warnings {
		fmt.Fprintf(stderr, "endpoint-policy check: warning: %s\n", w)
	}
	in.EndpointConfigMaps = cfg.EndpointConfigMapNames()
	report := check.Check(in, engine)
	switch f.output {
	case "json":
		err = report.WriteJSON(stdout)
	case "sarif":
		err = report.WriteSARIF(stdout, check.Tool{Version: version.Get().Version})
	default:
		err = report.WriteTable(stdout)
	}
	if err != nil {
		return errorf("writing the report: %v", err)
	}
	if readErr != nil {
		return errorf("%v", readErr)
	}
	if f.patchDir != "" {
		if err := emitPatches(in, f.patchDir, f.nodeFQDN, stderr); err != nil {
			return errorf("%v", err)
		}
	}
	if report.Summary.Deny > 0 || (f.strict && report.Summary.Warn > 0) {
		return checkFail
	}
	return checkPass
}

// checkFlags are the check command's flags.
type checkFlags struct {
	files      stringList
	output     string
	configFile string
	strict     bool
	patchDir   string
	nodeFQDN   string
	staticPods bool
}

// errFlagsParsed: the flag package refused the command line and said why.
var errFlagsParsed = errors.New("bad flags")

// parseCheckFlags parses and checks the command line.
func parseCheckFlags(args []string, stderr io.Writer) (checkFlags, error) {
	var f checkFlags
	fs := flag.NewFlagSet("endpoint-policy check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: endpoint-policy check -f PATH [-f PATH ...] [-o table|json|sarif] [--config FILE] [--strict]
                            [--static-pods] [--emit-kubeadm-patches DIR --node-fqdn NAME]

Evaluates every policy on manifests, offline, and reports what admission would do:
deny, warn or mutate. PATH is a file, a directory (recursively: *.yaml, *.yml, *.json,
*.manifest; kubeadm patch files under a patches directory are skipped) or - for standard input. Objects given together stand in for the cluster (Nodes,
other kube-apiserver manifests).

-o sarif writes SARIF 2.1.0 for code scanning (GitHub's upload-sarif): each finding on the
line of its field in the file as given.

Exit codes, whatever the format: 0 no deny finding, 1 at least one deny finding (--strict:
or warn), 2 usage or input error (the verdicts on everything readable are still printed).

Flags:
`)
		fs.PrintDefaults()
	}
	fs.Var(&f.files, "f", "File, directory or - (standard input) to check; repeatable.")
	fs.StringVar(&f.output, "o", "table", "Output format: table, json or sarif (SARIF 2.1.0, for code scanning).")
	fs.StringVar(&f.configFile, "config", "", "Policy configuration file (PolicyConfiguration); built-in defaults when not set.")
	fs.BoolVar(&f.strict, "strict", false, "Exit 1 on warn findings too.")
	fs.StringVar(&f.patchDir, "emit-kubeadm-patches", "",
		"Write DIR/kube-apiserver0+strategic.yaml, a kubeadm patch pointing the kube-apiserver's IP-pinned probes at --node-fqdn.")
	fs.StringVar(&f.nodeFQDN, "node-fqdn", "", "The node's DNS name, for --emit-kubeadm-patches.")
	fs.BoolVar(&f.staticPods, "static-pods", false,
		"Read every pod as a static pod, as its mirror pod is admitted: never changed (a violation is still a deny: the file can be fixed). Pods in a directory named manifests are read so anyway.")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return f, err
		}
		return f, errFlagsParsed
	}
	if fs.NArg() > 0 {
		return f, fmt.Errorf("unexpected arguments %q (give paths with -f)", fs.Args())
	}
	return f, f.validate()
}

// validate checks the flags together.
func (f checkFlags) validate() error {
	switch {
	case len(f.files) == 0:
		return errors.New("-f: Required value: give at least one file, directory or - for standard input")
	case f.output != "table" && f.output != "json" && f.output != "sarif":
		return fmt.Errorf("-o %q: must be table, json or sarif", f.output)
	case (f.patchDir == "") != (f.nodeFQDN == ""):
		return errors.New("--emit-kubeadm-patches and --node-fqdn go together")
	case f.nodeFQDN == "":
		return nil
	}
	if _, err := netip.ParseAddr(f.nodeFQDN); err == nil {
		return fmt.Errorf("--node-fqdn %q: must be the node's DNS name, not an IP (an IP is what breaks when the address changes)", f.nodeFQDN)
	}
	if errs := validation.IsDNS1123Subdomain(f.nodeFQDN); len(errs) > 0 {
		return fmt.Errorf("--node-fqdn %q: %s", f.nodeFQDN, strings.Join(errs, "; "))
	}
	return nil
}

// loadEngine builds the policy engine from the configuration file, or the
// built-in defaults.
func loadEngine(configFile string) (*config.PolicyConfiguration, *policy.Engine, error) {
	cfg := config.Default()
	if configFile != "" {
		var err error
		if cfg, _, err = config.Load(configFile); err != nil {
			return nil, nil, err
		}
	}
	engine, err := cfg.Engine()
	return cfg, engine, err
}

// emitPatches writes the kubeadm patch for the kube-apiserver manifests in
// in, and says on stderr what it wrote.
func emitPatches(in *check.Input, dir, nodeFQDN string, stderr io.Writer) error {
	path, err := check.EmitKubeadmPatches(in, dir, nodeFQDN)
	if err != nil {
		return err
	}
	if path == "" {
		fmt.Fprintln(stderr, "endpoint-policy check: no kube-apiserver manifest with IP-pinned probes: no kubeadm patch written")
	} else {
		fmt.Fprintf(stderr, "endpoint-policy check: wrote %s\n", path)
	}
	return nil
}
