package hostnetwork_test

import (
	"encoding/json"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
	"github.com/endpoint-policy/endpoint-policy/internal/testing/fixtures"
)

func env(kv ...string) []corev1.EnvVar {
	out := []corev1.EnvVar{}
	for i := 0; i < len(kv); i += 2 {
		out = append(out, corev1.EnvVar{Name: kv[i], Value: kv[i+1]})
	}
	return out
}

var fromField = &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.hostIP"}}

func hostNetworkPod(e []corev1.EnvVar) *corev1.Pod {
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "kube-system"},
		Spec: corev1.PodSpec{
			HostNetwork: true,
			Containers:  []corev1.Container{{Name: "c", Image: "img", Env: e}},
		},
	}
}

// applyFindings applies the findings' patches (and annotations) to pod's JSON
// the way the API server would, and returns the patched pod.
func applyFindings(t *testing.T, pod *corev1.Pod, findings []policy.Finding) *corev1.Pod {
	t.Helper()
	doc, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	var ops []map[string]any
	for _, f := range findings {
		for _, op := range f.Patch {
			ops = append(ops, map[string]any{"op": op.Operation, "path": op.Path, "value": op.Value})
		}
		for k, v := range f.Annotations {
			if pod.Annotations == nil {
				ops = append(ops, map[string]any{"op": "add", "path": "/metadata/annotations", "value": map[string]string{}})
				pod = pod.DeepCopy()
				pod.Annotations = map[string]string{}
			}
			ops = append(ops, map[string]any{"op": "add", "path": "/metadata/annotations/" + policy.EscapePointer(k), "value": v})
		}
	}
	raw, _ := json.Marshal(ops)
	patch, err := jsonpatch.DecodePatch(raw)
	if err != nil {
		t.Fatalf("decoding patch %s: %v", raw, err)
	}
	out, err := patch.Apply(doc)
	if err != nil {
		t.Fatalf("applying patch %s: %v", raw, err)
	}
	patched := &corev1.Pod{}
	if err := json.Unmarshal(out, patched); err != nil {
		t.Fatal(err)
	}
	return patched
}

// unverified are the default settings without the node agents'
// verification: the tests of what a rewrite changes.
func unverified() hostnetwork.Settings {
	s := hostnetwork.DefaultSettings()
	s.Verification = hostnetwork.VerificationOff
	return s
}

// calicoEndpoint is Calico's envFrom (fixtures.CalicoNode).
var calicoEndpoint = fixtures.CalicoNode("").Spec.Containers[0].EnvFrom

func TestRuleEnv(t *testing.T) {
	def := unverified()
	always := def
	always.Override = hostnetwork.OverrideAlways
	never := def
	never.Override = hostnetwork.OverrideNever
	// A kube-vip VIP, its subnet, an IPv6 range and a load balancer's name
	// the user trusts to reach every API server.
	preserve := def
	preserve.Preserve = []string{"10.0.0.100", "192.168.10.0/24", "fd00:10::/64", "api.example.com"}
	preserveAlways := preserve
	preserveAlways.Override = hostnetwork.OverrideAlways
	kubespray := hostnetwork.Settings{Host: "127.0.0.1", Port: 6443, Override: hostnetwork.OverrideIPLiterals, Verification: hostnetwork.VerificationOff}

	const H, P = hostnetwork.EnvHost, hostnetwork.EnvPort
	tests := []struct {
		name     string
		settings hostnetwork.Settings
		env      []corev1.EnvVar
		envFrom  []corev1.EnvFromSource
		wantEnv  []corev1.EnvVar // nil: no finding, env unchanged
		wantOps  int             // number of env patch operations, when a finding is expected
	}{
		{name: "no env list", settings: def, env: nil,
			wantEnv: env(H, "localhost", P, "7443"), wantOps: 1},
		{name: "empty env list", settings: def, env: []corev1.EnvVar{},
			wantEnv: env(H, "localhost", P, "7443"), wantOps: 1},
		{name: "other vars kept, ours appended", settings: def, env: env("A", "1", "B", "2"),
			wantEnv: env("A", "1", "B", "2", H, "localhost", P, "7443"), wantOps: 2},
		{name: "pinned IPv4 rewritten with its port", settings: def, env: env("A", "1", H, "10.0.1.16", P, "6443"),
			wantEnv: env("A", "1", H, "localhost", P, "7443"), wantOps: 2},
		{name: "pinned IPv6 rewritten", settings: def, env: env(H, "fd00:10::16", P, "6443"),
			wantEnv: env(H, "localhost", P, "7443"), wantOps: 2},
		{name: "bracketed IPv6 rewritten", settings: def, env: env(H, "[fd00:10::16]", P, "6443"),
			wantEnv: env(H, "localhost", P, "7443"), wantOps: 2},
		{name: "DNS name kept by IPLiterals", settings: def, env: env(H, "api.example.com", P, "6443")},
		{name: "DNS name rewritten by Always", settings: always, env: env(H, "api.example.com", P, "6443"),
			wantEnv: env(H, "localhost", P, "7443"), wantOps: 2},
		{name: "valueFrom kept by IPLiterals", settings: def, env: []corev1.EnvVar{{Name: H, ValueFrom: fromField}, {Name: P, Value: "6443"}}},
		{name: "valueFrom rewritten by Always", settings: always, env: []corev1.EnvVar{{Name: H, ValueFrom: fromField}, {Name: P, Value: "6443"}},
			wantEnv: env(H, "localhost", P, "7443"), wantOps: 2},
		// Calico's manifest (fixtures.CalicoNode): an explicit env entry
		// overrides envFrom, so a rewrite would replace the user's choice.
		{name: "envFrom ConfigMap kept by IPLiterals", settings: def, envFrom: calicoEndpoint},
		{name: "envFrom ConfigMap kept by Never", settings: never, envFrom: calicoEndpoint},
		{name: "envFrom ConfigMap rewritten by Always", settings: always, envFrom: calicoEndpoint,
			wantEnv: env(H, "localhost", P, "7443"), wantOps: 1},
		{name: "envFrom with a prefix that cannot produce the names: added", settings: def,
			envFrom: []corev1.EnvFromSource{{Prefix: "CALICO_", ConfigMapRef: calicoEndpoint[0].ConfigMapRef}},
			wantEnv: env(H, "localhost", P, "7443"), wantOps: 1},
		{name: "a pinned env entry beside envFrom wins: rewritten, port added", settings: def, env: env(H, "10.0.1.16"), envFrom: calicoEndpoint,
			wantEnv: env(H, "localhost", P, "7443"), wantOps: 2},
		{name: "our host beside envFrom: the port left to envFrom", settings: def, env: env(H, "localhost"), envFrom: calicoEndpoint},
		{name: "preserved VIP kept", settings: preserve, env: env(H, "10.0.0.100", P, "6443")},
		{name: "preserved VIP kept by Always", settings: preserveAlways, env: env(H, "10.0.0.100", P, "6443")},
		{name: "address in a preserved CIDR kept", settings: preserve, env: env(H, "192.168.10.7", P, "6443")},
		{name: "address in a preserved IPv6 CIDR kept", settings: preserve, env: env(H, "[fd00:10::16]", P, "6443")},
		{name: "address outside the preserved ones rewritten", settings: preserve, env: env(H, "10.0.1.16", P, "6443"),
			wantEnv: env(H, "localhost", P, "7443"), wantOps: 2},
		{name: "preserved name kept by Always, whatever its case", settings: preserveAlways, env: env(H, "API.example.com.", P, "6443")},
		{name: "another name rewritten by Always", settings: preserveAlways, env: env(H, "api2.example.com", P, "6443"),
			wantEnv: env(H, "localhost", P, "7443"), wantOps: 2},
		{name: "loopback IP kept by IPLiterals", settings: def, env: env(H, "127.0.0.1", P, "6443")},
		{name: "IPv6 loopback kept by IPLiterals", settings: def, env: env(H, "::1", P, "6443")},
		{name: "loopback IP rewritten by Always", settings: always, env: env(H, "127.0.0.1", P, "6443"),
			wantEnv: env(H, "localhost", P, "7443"), wantOps: 2},
		{name: "only port given: host added, port rewritten", settings: def, env: env(P, "6443"),
			wantEnv: env(P, "7443", H, "localhost"), wantOps: 2},
		{name: "only pinned host given: host rewritten, port added", settings: def, env: env(H, "10.0.1.16"),
			wantEnv: env(H, "localhost", P, "7443"), wantOps: 2},
		{name: "port from valueFrom replaced when host is set", settings: def,
			env:     []corev1.EnvVar{{Name: H, Value: "10.0.1.16"}, {Name: P, ValueFrom: fromField}},
			wantEnv: env(H, "localhost", P, "7443"), wantOps: 2},
		{name: "already ours: nothing", settings: def, env: env(H, "localhost", P, "7443")},
		{name: "our host without port: port added", settings: def, env: env(H, "localhost"),
			wantEnv: env(H, "localhost", P, "7443"), wantOps: 1},
		{name: "our host with the user's port kept", settings: def, env: env(H, "localhost", P, "6443")},
		{name: "our host with the user's port replaced by Always", settings: always, env: env(H, "localhost", P, "6443"),
			wantEnv: env(H, "localhost", P, "7443"), wantOps: 1},
		{name: "empty host set", settings: def, env: env(H, "", P, "6443"),
			wantEnv: env(H, "localhost", P, "7443"), wantOps: 2},
		{name: "Never keeps a pinned IP", settings: never, env: env(H, "10.0.1.16", P, "6443")},
		{name: "Never adds an absent host, with its port", settings: never, env: env(P, "6443"),
			wantEnv: env(P, "7443", H, "localhost"), wantOps: 2},
		{name: "duplicates: every entry rewritten", settings: def, env: env(H, "10.0.0.1", P, "6443", H, "10.0.0.2"),
			wantEnv: env(H, "localhost", P, "7443", H, "localhost"), wantOps: 3},
		{name: "duplicates: entries already ours are not touched", settings: def, env: env(H, "localhost", H, "10.0.0.2", P, "7443"),
			wantEnv: env(H, "localhost", H, "localhost", P, "7443"), wantOps: 1},
		{name: "duplicates: the last one decides", settings: def, env: env(H, "10.0.0.1", H, "api.example.com")},
		{name: "custom target already in place", settings: kubespray, env: env(H, "127.0.0.1", P, "6443")},
		{name: "custom target: pinned IP rewritten", settings: kubespray, env: env(H, "10.0.1.16", P, "6443"),
			wantEnv: env(H, "127.0.0.1", P, "6443"), wantOps: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rule, err := hostnetwork.New(tt.settings)
			if err != nil {
				t.Fatal(err)
			}
			pod := hostNetworkPod(tt.env)
			pod.Spec.Containers[0].EnvFrom = tt.envFrom
			findings, applies := rule.Evaluate(policy.Target{Object: pod})
			if !applies {
				t.Fatal("rule does not apply to a hostNetwork pod")
			}
			if tt.wantEnv == nil {
				if len(findings) != 0 {
					t.Fatalf("want no finding, got %v", findings)
				}
				return
			}
			if len(findings) != 1 {
				t.Fatalf("want 1 finding, got %v", findings)
			}
			f := findings[0]
			if len(f.Patch) != tt.wantOps {
				t.Errorf("want %d patch operations, got %d: %+v", tt.wantOps, len(f.Patch), f.Patch)
			}
			if got, want := f.Field.String(), "spec.containers[0].env"; got != want {
				t.Errorf("field = %s, want %s", got, want)
			}
			wantEndpoint := "localhost:7443"
			if tt.settings.Host == kubespray.Host {
				wantEndpoint = "127.0.0.1:6443"
			}
			if got := f.Annotations[hostnetwork.EndpointAnnotation]; got != wantEndpoint {
				t.Errorf("endpoint annotation = %q, want %q", got, wantEndpoint)
			}
			patched := applyFindings(t, pod, findings)
			if diff := cmp.Diff(tt.wantEnv, patched.Spec.Containers[0].Env); diff != "" {
				t.Errorf("env after patch (-want +got):\n%s", diff)
			}
			// Idempotent: the webhook may be invoked again on its own output.
			again, _ := rule.Evaluate(policy.Target{Object: patched})
			if len(again) != 0 {
				t.Errorf("second pass over the patched pod found %v", again)
			}
		})
	}
}

func TestRuleScope(t *testing.T) {
	rule, err := hostnetwork.New(hostnetwork.DefaultSettings())
	if err != nil {
		t.Fatal(err)
	}
	pinned := env(hostnetwork.EnvHost, "10.0.1.16", hostnetwork.EnvPort, "6443")
	tests := []struct {
		name            string
		mutate          func(*corev1.Pod)
		namespaceLabels map[string]string
		wantApplies     bool
	}{
		{name: "hostNetwork pod", mutate: func(*corev1.Pod) {}, wantApplies: true},
		{name: "pod network", mutate: func(p *corev1.Pod) { p.Spec.HostNetwork = false }},
		{name: "excluded by pod label", mutate: func(p *corev1.Pod) {
			p.Labels = map[string]string{policy.ExcludeLabel: "true"}
		}},
		{name: "exclude label not true", mutate: func(p *corev1.Pod) {
			p.Labels = map[string]string{policy.ExcludeLabel: "false"}
		}, wantApplies: true},
		{name: "excluded by namespace label", mutate: func(*corev1.Pod) {},
			namespaceLabels: map[string]string{policy.ExcludeLabel: "true"}},
		{name: "mirror pod", mutate: func(p *corev1.Pod) {
			p.Annotations = map[string]string{policy.MirrorPodAnnotation: "abc"}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := hostNetworkPod(pinned)
			tt.mutate(pod)
			findings, applies := rule.Evaluate(policy.Target{Object: pod, NamespaceLabels: tt.namespaceLabels})
			if applies != tt.wantApplies {
				t.Fatalf("applies = %v, want %v", applies, tt.wantApplies)
			}
			if !applies && findings != nil {
				t.Fatalf("findings for a pod the rule does not apply to: %v", findings)
			}
		})
	}
	t.Run("not a pod", func(t *testing.T) {
		if _, applies := rule.Evaluate(policy.Target{Object: &corev1.ConfigMap{}}); applies {
			t.Fatal("rule applies to a ConfigMap")
		}
	})
}

func TestRuleInitContainersAndMessages(t *testing.T) {
	rule, err := hostnetwork.New(unverified())
	if err != nil {
		t.Fatal(err)
	}
	pod := hostNetworkPod(env(hostnetwork.EnvHost, "10.0.1.16", hostnetwork.EnvPort, "6443"))
	pod.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "img"}, {Name: "done", Image: "img",
		Env: env(hostnetwork.EnvHost, "localhost", hostnetwork.EnvPort, "7443")}}
	pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: "sidecar", Image: "img"})

	findings, _ := rule.Evaluate(policy.Target{Object: pod})
	var fields, msgs []string
	for _, f := range findings {
		fields = append(fields, f.Field.String())
		msgs = append(msgs, f.Message)
	}
	wantFields := []string{"spec.initContainers[0].env", "spec.containers[0].env", "spec.containers[1].env"}
	if diff := cmp.Diff(wantFields, fields); diff != "" {
		t.Fatalf("finding fields (-want +got):\n%s", diff)
	}
	wantMsgs := []string{
		`set KUBERNETES_SERVICE_HOST=localhost (was not set in the spec), KUBERNETES_SERVICE_PORT=7443 (was not set in the spec) in init container "init"`,
		`set KUBERNETES_SERVICE_HOST=localhost (was "10.0.1.16"), KUBERNETES_SERVICE_PORT=7443 (was "6443") in container "c"`,
		`set KUBERNETES_SERVICE_HOST=localhost (was not set in the spec), KUBERNETES_SERVICE_PORT=7443 (was not set in the spec) in container "sidecar"`,
	}
	if diff := cmp.Diff(wantMsgs, msgs); diff != "" {
		t.Fatalf("messages (-want +got):\n%s", diff)
	}
	patched := applyFindings(t, pod, findings)
	for _, c := range append(patched.Spec.InitContainers, patched.Spec.Containers...) {
		got := map[string]string{}
		for _, e := range c.Env {
			got[e.Name] = e.Value
		}
		if got[hostnetwork.EnvHost] != "localhost" || got[hostnetwork.EnvPort] != "7443" {
			t.Errorf("container %s env after patch: %v", c.Name, c.Env)
		}
	}
}

func TestSettingsValidate(t *testing.T) {
	tests := []struct {
		name     string
		settings hostnetwork.Settings
		wantErrs []string
	}{
		{name: "defaults", settings: hostnetwork.DefaultSettings()},
		{name: "IPv4 host", settings: hostnetwork.Settings{Host: "127.0.0.1", Port: 6443, Override: hostnetwork.OverrideNever, Verification: hostnetwork.VerificationOff}},
		{name: "IPv6 host", settings: hostnetwork.Settings{Host: "::1", Port: 1, Override: hostnetwork.OverrideAlways, Verification: hostnetwork.VerificationOff}},
		{name: "empty host", settings: hostnetwork.Settings{Port: 7443, Override: hostnetwork.OverrideIPLiterals, Verification: hostnetwork.VerificationOff},
			wantErrs: []string{"p.host: Required value"}},
		{name: "host with port", settings: hostnetwork.Settings{Host: "localhost:7443", Port: 7443, Override: hostnetwork.OverrideIPLiterals, Verification: hostnetwork.VerificationOff},
			wantErrs: []string{`p.host: Invalid value: "localhost:7443"`}},
		{name: "port 0", settings: hostnetwork.Settings{Host: "localhost", Port: 0, Override: hostnetwork.OverrideIPLiterals, Verification: hostnetwork.VerificationOff},
			wantErrs: []string{"p.port: Invalid value: 0: must be between 1 and 65535"}},
		{name: "port 65536", settings: hostnetwork.Settings{Host: "localhost", Port: 65536, Override: hostnetwork.OverrideIPLiterals, Verification: hostnetwork.VerificationOff},
			wantErrs: []string{"p.port: Invalid value: 65536"}},
		{name: "auto", settings: hostnetwork.Settings{Host: "auto", Override: hostnetwork.OverrideIPLiterals,
			Candidates: hostnetwork.DefaultCandidates(), Verification: hostnetwork.VerificationRequired}},
		{name: "auto without candidates", settings: hostnetwork.Settings{Host: "auto", Override: hostnetwork.OverrideIPLiterals,
			Verification: hostnetwork.VerificationRequired},
			wantErrs: []string{"p.candidates: Required value"}},
		{name: "auto without verification", settings: hostnetwork.Settings{Host: "auto", Override: hostnetwork.OverrideIPLiterals,
			Candidates: []string{"localhost:7443"}, Verification: hostnetwork.VerificationOff},
			wantErrs: []string{`p.verification: Invalid value: "Off": host: auto needs`}},
		{name: "bad candidates", settings: hostnetwork.Settings{Host: "localhost", Port: 7443, Override: hostnetwork.OverrideIPLiterals,
			Candidates: []string{"localhost", "[::1]:6443", "bad_host:1", "localhost:0", "[::1]:6443"}, Verification: hostnetwork.VerificationRequired},
			wantErrs: []string{`p.candidates[0]: Invalid value: "localhost": must be host:port`, `p.candidates[2]: Invalid value: "bad_host"`,
				`p.candidates[3]: Invalid value: "localhost:0": the port must be`, `p.candidates[4]: Duplicate value: "[::1]:6443"`}},
		{name: "bad preserve", settings: hostnetwork.Settings{Host: "localhost", Port: 7443, Override: hostnetwork.OverrideIPLiterals,
			Verification: hostnetwork.VerificationOff, Preserve: []string{"10.0.0.100", "10.0.0.0/33", "api.example.com", "bad_host", "fd00::/64"}},
			wantErrs: []string{`p.preserve[1]: Invalid value: "10.0.0.0/33": must be an IP address, a DNS name or a CIDR`,
				`p.preserve[3]: Invalid value: "bad_host": must be an IP address or a DNS name`}},
		{name: "bad verification", settings: hostnetwork.Settings{Host: "localhost", Port: 7443, Override: hostnetwork.OverrideIPLiterals, Verification: "Maybe"},
			wantErrs: []string{`p.verification: Unsupported value: "Maybe"`}},
		{name: "bad override", settings: hostnetwork.Settings{Host: "localhost", Port: 7443, Override: "Sometimes", Verification: hostnetwork.VerificationOff},
			wantErrs: []string{`p.override: Unsupported value: "Sometimes"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := tt.settings.Validate(field.NewPath("p"))
			if len(errs) != len(tt.wantErrs) {
				t.Fatalf("want %d errors, got %v", len(tt.wantErrs), errs)
			}
			for i, want := range tt.wantErrs {
				if !strings.Contains(errs[i].Error(), want) {
					t.Errorf("error %d = %q, want it to contain %q", i, errs[i].Error(), want)
				}
			}
			if _, err := hostnetwork.New(tt.settings); (err != nil) != (len(tt.wantErrs) > 0) {
				t.Errorf("New error = %v, want error: %v", err, len(tt.wantErrs) > 0)
			}
		})
	}
}

// Calico's calico-node reads the variables from its envFrom ConfigMap: left
// alone by default, and the message of Always says where they came from.
func TestRuleEnvFromCalico(t *testing.T) {
	pod := fixtures.CalicoNode("node-a")
	rule, err := hostnetwork.New(unverified())
	if err != nil {
		t.Fatal(err)
	}
	if findings, _ := rule.Evaluate(policy.Target{Object: pod}); len(findings) != 0 {
		t.Fatalf("calico-node rewritten by default: %v", findings)
	}
	always := unverified()
	always.Override = hostnetwork.OverrideAlways
	if rule, err = hostnetwork.New(always); err != nil {
		t.Fatal(err)
	}
	findings, _ := rule.Evaluate(policy.Target{Object: pod})
	var got []string
	for _, f := range findings {
		got = append(got, f.Message)
	}
	from := `possibly set by envFrom configMapRef "kubernetes-services-endpoint"`
	want := []string{
		`set KUBERNETES_SERVICE_HOST=localhost (was ` + from + `), KUBERNETES_SERVICE_PORT=7443 (was ` + from + `) in init container "install-cni"`,
		`set KUBERNETES_SERVICE_HOST=localhost (was ` + from + `), KUBERNETES_SERVICE_PORT=7443 (was ` + from + `) in container "calico-node"`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("messages (-want +got):\n%s", diff)
	}
}

// A Helm-rendered Cilium install (Cilium's chart with k8sServiceHost set to
// a control-plane IP: k0s #5740) is reported on its workloads, before any
// pod exists: the pods created from them will be rewritten.
func TestRuleWorkloadTemplates(t *testing.T) {
	pinned := fixtures.CiliumOperatorPinned()
	operator := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "cilium-operator", Namespace: "kube-system"},
		Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{Spec: pinned.Spec}}}
	onPodNetwork := operator.DeepCopy()
	onPodNetwork.Spec.Template.Spec.HostNetwork = false
	rewritten := operator.DeepCopy()
	for i := range rewritten.Spec.Template.Spec.Containers {
		rewritten.Spec.Template.Spec.Containers[i].Env = env(hostnetwork.EnvHost, "localhost", hostnetwork.EnvPort, "7443")
	}
	cron := &batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Name: "node-check", Namespace: "kube-system"},
		Spec: batchv1.CronJobSpec{JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: pinned.Spec}}}}}
	auto := hostnetwork.DefaultSettings()
	auto.Host = hostnetwork.HostAuto
	always := unverified()
	always.Override = hostnetwork.OverrideAlways
	unset := operator.DeepCopy()
	for i := range unset.Spec.Template.Spec.Containers {
		unset.Spec.Template.Spec.Containers[i].Env = nil
	}
	dnsName := operator.DeepCopy()
	for i := range dnsName.Spec.Template.Spec.Containers {
		dnsName.Spec.Template.Spec.Containers[i].Env = env(hostnetwork.EnvHost, "api.example.com", hostnetwork.EnvPort, "6443")
	}
	mixed := unset.DeepCopy()
	mixed.Spec.Template.Spec.Containers = append([]corev1.Container{{Name: "sidecar"}}, operator.Spec.Template.Spec.Containers...)

	for _, tc := range []struct {
		name       string
		settings   hostnetwork.Settings
		obj        client.Object
		applies    bool
		wantField  string
		wantPrefix string
		unverified bool
	}{
		{"Cilium's operator Deployment, pinned", hostnetwork.DefaultSettings(), operator, true, "spec.template.spec.containers[0].env",
			`pods created from this template will be rewritten, where the node agent verified localhost:7443 on their node: set KUBERNETES_SERVICE_HOST=localhost (was "10.0.1.16")`, false},
		{"without verification", unverified(), operator, true, "spec.template.spec.containers[0].env",
			`pods created from this template will be rewritten: set KUBERNETES_SERVICE_HOST=localhost (was "10.0.1.16")`, false},
		{"a CronJob's template", unverified(), cron, true, "spec.jobTemplate.spec.template.spec.containers[0].env",
			"pods created from this template will be rewritten: ", false},
		{"host: auto: the endpoint is not known yet", auto, operator, true, "spec.template.spec",
			"pods created from this template will be rewritten: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT pointed at", true},
		{"already pointed at the balancer", unverified(), rewritten, true, "", "", false},
		// The product working: admission sets the variables on each pod.
		{"the variables unset (kube-vip's DaemonSet)", hostnetwork.DefaultSettings(), unset, true, "", "", false},
		{"host: auto, the variables unset", auto, unset, true, "", "", false},
		{"a DNS name, even under override Always: not an address pinned", always, dnsName, true, "", "", false},
		{"one container pinned among others: only its finding", unverified(), mixed, true, "spec.template.spec.containers[1].env",
			`pods created from this template will be rewritten: set KUBERNETES_SERVICE_HOST=localhost (was "10.0.1.16")`, false},
		{"on the pod network", unverified(), onPodNetwork, false, "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rule, err := hostnetwork.New(tc.settings)
			if err != nil {
				t.Fatal(err)
			}
			findings, applies := rule.Evaluate(policy.Target{Object: tc.obj})
			if applies != tc.applies {
				t.Fatalf("applies = %v, want %v", applies, tc.applies)
			}
			if tc.wantField == "" {
				if len(findings) != 0 {
					t.Fatalf("want no finding, got %v", findings)
				}
				return
			}
			if len(findings) == 0 {
				t.Fatal("want findings, got none")
			}
			if f := findings[0]; f.Field.String() != tc.wantField || !strings.HasPrefix(f.Message, tc.wantPrefix) {
				t.Errorf("finding %s, want %s: %s...", f, tc.wantField, tc.wantPrefix)
			}
			for _, f := range findings {
				if !f.Template || f.Unverified != tc.unverified || f.Mutates() {
					t.Errorf("finding %+v: want a template finding without a patch", f)
				}
			}
			want := map[policy.Mode]policy.Action{policy.Enforce: policy.ActionMutate, policy.Audit: policy.ActionWarn}
			if tc.unverified {
				want = map[policy.Mode]policy.Action{policy.Enforce: policy.ActionUnverified, policy.Audit: policy.ActionUnverified}
			}
			for mode, action := range want {
				if got := (policy.Result{Mode: mode, Findings: findings}).Action(true); got != action {
					t.Errorf("%s: action %s, want %s (never deny: the workload is not changed)", mode, got, action)
				}
			}
		})
	}
}
