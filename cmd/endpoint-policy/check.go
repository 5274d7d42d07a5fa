package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

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
	var in *check.Input
	var report check.Report
	var readErr error
	if f.cluster {
		if in, report, err = checkCluster(f, cfg, engine, stderr); err != nil {
			return errorf("--cluster: %v", err)
		}
	} else {
		in, report, readErr = checkFiles(f, cfg, engine, stdin, stderr)
	}
	if err := writeReport(report, f.output, stdout); err != nil {
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

// checkFiles evaluates the configuration (cfg, engine) on the files of f.
// A document that cannot be read fails the check (readErr, exit 2), but
// the verdicts on everything else are still given: one bad file must not
// hide a deny.
func checkFiles(f checkFlags, cfg *config.PolicyConfiguration, engine *policy.Engine, stdin io.Reader, stderr io.Writer) (*check.Input, check.Report, error) {
	in, readErr := check.ReadWith(f.files, stdin, check.Options{StaticPods: f.staticPods})
	for _, w := range in.Warnings {
		fmt.Fprintf(stderr, "endpoint-policy check: warning: %s\n", w)
	}
	in.EndpointConfigMaps = cfg.EndpointConfigMapNames()
	return in, check.Check(in, engine), readErr
}

// writeReport writes report in format: table, json or sarif.
func writeReport(report check.Report, format string, stdout io.Writer) error {
	switch format {
	case "json":
		return report.WriteJSON(stdout)
	case "sarif":
		return report.WriteSARIF(stdout, check.Tool{Version: version.Get().Version})
	}
	return report.WriteTable(stdout)
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

	// check --cluster: what-if against a live cluster.
	cluster      bool
	kubeconfig   string
	context      string
	namespace    string
	serverConfig string
}

// checkCluster evaluates the candidate configuration (cfg, engine) on what
// the policies read in the cluster of the kubeconfig, with its
// credentials, and compares the verdicts with the configuration in force
// when the server's ConfigMap is readable.
func checkCluster(f checkFlags, cfg *config.PolicyConfiguration, engine *policy.Engine, stderr io.Writer) (*check.Input, check.Report, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = f.kubeconfig
	restConfig, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: f.context}).ClientConfig()
	if err != nil {
		return nil, check.Report{}, fmt.Errorf("loading the kubeconfig: %w", err)
	}
	c, err := client.New(restConfig, client.Options{})
	if err != nil {
		return nil, check.Report{}, err
	}
	ctx := context.Background()
	in, err := check.ReadCluster(ctx, c, check.ClusterOptions{Namespace: f.namespace, EndpointConfigMaps: cfg.EndpointConfigMapNames(), Progress: stderr})
	if err != nil {
		return nil, check.Report{}, err
	}
	report := check.Check(in, engine)
	report.CountPolicies()
	ns, name, _ := strings.Cut(f.serverConfig, "/")
	inForce, err := check.ConfigInForce(ctx, c, types.NamespacedName{Namespace: ns, Name: name})
	if err != nil {
		fmt.Fprintf(stderr, "endpoint-policy check: the configuration in force is not compared: %v\n", err)
		return in, report, nil
	}
	e, err := inForce.Engine()
	if err != nil {
		return nil, check.Report{}, fmt.Errorf("the configuration in force (%s): %w", f.serverConfig, err)
	}
	report.Compare(check.Check(in, e), f.serverConfig)
	return in, report, nil
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
       endpoint-policy check --cluster [--kubeconfig K] [--context C] --config CANDIDATE
                            [-o table|json|sarif] [--namespace NS] [--server-config NS/NAME]

Evaluates every policy on manifests, offline, and reports what admission would do:
deny, warn or mutate. PATH is a file, a directory (recursively: *.yaml, *.yml, *.json,
*.manifest; kubeadm patch files under a patches directory are skipped) or - for standard input. Objects given together stand in for the cluster (Nodes,
other kube-apiserver manifests).

--cluster evaluates the candidate configuration on what runs now (the hostNetwork pods, the
workloads, the ConfigMaps the policies read, Nodes, the node agents' Leases), read with the
kubeconfig's credentials, and says per policy what it finds and what changes against the
configuration in force (the server's ConfigMap, when readable).

-o sarif writes SARIF 2.1.0 for code scanning (GitHub's upload-sarif): each finding on the
line of its field in the file as given.

Exit codes, whatever the format: 0 no deny finding, 1 at least one deny finding (--strict:
or warn), 2 usage or input error (the verdicts on everything readable are still printed).

Flags:
`)
		fs.PrintDefaults()
	}
	fs.Var(&f.files, "f", "File, directory or - (standard input) to check; repeatable.")
	fs.BoolVar(&f.cluster, "cluster", false,
		"What-if: evaluate --config (the candidate) on what runs in the cluster of --kubeconfig, with its credentials (get and list, read-only), instead of files.")
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "With --cluster: the kubeconfig (default: $KUBECONFIG, else ~/.kube/config).")
	fs.StringVar(&f.context, "context", "", "With --cluster: the kubeconfig context (default: its current one).")
	fs.StringVar(&f.namespace, "namespace", "endpoint-policy", "With --cluster: the server's namespace, where the node agents' Leases are.")
	fs.StringVar(&f.serverConfig, "server-config", "endpoint-policy/endpoint-policy-config",
		"With --cluster: the server's ConfigMap (namespace/name, key config.yaml): the configuration in force, which the candidate's verdicts are compared with when it is readable.")
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
	if err := f.validateCluster(); err != nil {
		return err
	}
	switch {
	case len(f.files) == 0 && !f.cluster:
		return errors.New("-f: Required value: give at least one file, directory or - for standard input (or --cluster)")
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

// validateCluster checks --cluster's flags: files or a cluster, not both;
// the cluster's flags only with it.
func (f checkFlags) validateCluster() error {
	if !f.cluster {
		if f.kubeconfig != "" || f.context != "" {
			return errors.New("--kubeconfig and --context go with --cluster")
		}
		return nil
	}
	switch ns, name, ok := strings.Cut(f.serverConfig, "/"); {
	case len(f.files) > 0:
		return errors.New("--cluster and -f do not go together: check files, or what runs in the cluster")
	case f.patchDir != "" || f.staticPods:
		return errors.New("--emit-kubeadm-patches and --static-pods are for files, not --cluster")
	case !ok || ns == "" || name == "":
		return fmt.Errorf("--server-config %q: must be namespace/name", f.serverConfig)
	case f.namespace == "":
		return errors.New("--namespace: Required value: the server's namespace, where the node agents' Leases are")
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
