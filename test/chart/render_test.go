package chart

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/apiserver"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/kubeproxy"
	"github.com/endpoint-policy/endpoint-policy/internal/registry"
	"github.com/endpoint-policy/endpoint-policy/internal/server"
)

func TestLint(t *testing.T) {
	if out, err := helm(t, "", "lint", "--strict", chartDir); err != nil {
		t.Fatalf("helm lint --strict: %v\n%s", err, out)
	}
}

// deployment returns the rendered Deployment and its one container.
func deployment(t *testing.T, m manifest, name string) (*appsv1.Deployment, corev1.Container) {
	t.Helper()
	d := &appsv1.Deployment{}
	typed(t, m.find(t, "Deployment", name), d)
	if n := len(d.Spec.Template.Spec.Containers); n != 1 {
		t.Fatalf("Deployment has %d containers, want 1", n)
	}
	return d, d.Spec.Template.Spec.Containers[0]
}

func volume(t *testing.T, d *appsv1.Deployment, name string) corev1.Volume {
	t.Helper()
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("Deployment has no volume %q", name)
	return corev1.Volume{}
}

// flag returns the value of --name=value in args.
func flag(t *testing.T, args []string, name string) string {
	t.Helper()
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	t.Fatalf("no --%s in %q", name, args)
	return ""
}

// serviceNames are the names a client in the cluster may dial the Service by.
func serviceNames(t *testing.T, m manifest, name string) []string {
	t.Helper()
	svc := &corev1.Service{}
	typed(t, m.find(t, "Service", name), svc)
	n, ns := svc.Name, svc.Namespace
	return []string{n, n + "." + ns, n + "." + ns + ".svc", n + "." + ns + ".svc.cluster.local"}
}

// The production shape of the Deployment with default values.
func TestDeploymentDefaults(t *testing.T) {
	m := render(t)
	d, c := deployment(t, m, release)
	spec := d.Spec.Template.Spec

	if got := ptr.Deref(d.Spec.Replicas, 0); got != 2 {
		t.Errorf("replicas = %d, want 2", got)
	}
	if spec.PriorityClassName != "system-cluster-critical" {
		t.Errorf("priorityClassName = %q", spec.PriorityClassName)
	}
	if ru := d.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxUnavailable.IntValue() != 0 {
		t.Errorf("rolling update may take a replica away: %+v", d.Spec.Strategy)
	}
	if spec.HostNetwork || spec.DNSPolicy != "" {
		t.Errorf("hostNetwork %v, dnsPolicy %q by default, want the pod network", spec.HostNetwork, spec.DNSPolicy)
	}
	// Spread across nodes, selecting the Deployment's own pods.
	if len(spec.TopologySpreadConstraints) != 1 {
		t.Fatalf("topologySpreadConstraints = %+v", spec.TopologySpreadConstraints)
	}
	tsc := spec.TopologySpreadConstraints[0]
	if tsc.TopologyKey != corev1.LabelHostname || !cmp.Equal(tsc.LabelSelector.MatchLabels, d.Spec.Selector.MatchLabels) {
		t.Errorf("spread constraint %+v does not spread the Deployment's pods across nodes", tsc)
	}

	// Requests, and no CPU limit.
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		t.Errorf("requests not set: %v", c.Resources.Requests)
	}
	if _, ok := c.Resources.Limits[corev1.ResourceCPU]; ok {
		t.Errorf("a CPU limit is set by default: %v", c.Resources.Limits)
	}

	// Hardened.
	psc, sc := spec.SecurityContext, c.SecurityContext
	if psc == nil || !ptr.Deref(psc.RunAsNonRoot, false) || psc.SeccompProfile == nil ||
		psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext = %+v", psc)
	}
	if sc == nil || ptr.Deref(sc.AllowPrivilegeEscalation, true) || !ptr.Deref(sc.ReadOnlyRootFilesystem, false) ||
		ptr.Deref(sc.Privileged, true) || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("container securityContext = %+v", sc)
	}

	// Probes on the health port the server binds.
	health := flag(t, c.Args, "health-probe-bind-address")
	for name, p := range map[string]*corev1.Probe{"/healthz": c.LivenessProbe, "/readyz": c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != name || p.HTTPGet.Port.String() != "health" {
			t.Errorf("probe %s = %+v", name, p)
		}
	}
	if port := containerPort(t, c, "health"); health != fmt.Sprintf(":%d", port) {
		t.Errorf("--health-probe-bind-address=%s, health port %d", health, port)
	}
	if port := containerPort(t, c, "webhook"); flag(t, c.Args, "webhook-port") != fmt.Sprint(port) {
		t.Errorf("--webhook-port does not match the webhook port %d", port)
	}

	// Graceful termination: the server's shutdown delay (not ready, the
	// endpoint leaves the Service, kept-alive connections close), then its
	// shutdown timeout for the in-flight admissions fit in the grace period
	// with room to spare.
	delay, err := time.ParseDuration(flag(t, c.Args, "shutdown-delay"))
	if err != nil || delay == 0 {
		t.Errorf("--shutdown-delay=%s: %v", flag(t, c.Args, "shutdown-delay"), err)
	}
	var timeout time.Duration
	for _, h := range webhooks(t, m) {
		timeout = max(timeout, time.Duration(ptr.Deref(h.TimeoutSeconds, 10))*time.Second)
	}
	grace := time.Duration(ptr.Deref(spec.TerminationGracePeriodSeconds, 30)) * time.Second
	if grace < delay+max(timeout, server.ShutdownTimeout)+5*time.Second {
		t.Errorf("terminationGracePeriodSeconds %s, --shutdown-delay %s, webhook timeout %s, shutdown timeout %s: in-flight admissions may be cut",
			grace, delay, timeout, server.ShutdownTimeout)
	}
	if flag(t, c.Args, "metrics-secure") != "true" || flag(t, c.Args, "metrics-bind-address") != fmt.Sprintf(":%d", containerPort(t, c, "metrics")) {
		t.Errorf("metrics not served securely on the metrics port: %q", c.Args)
	}
	if flag(t, c.Args, "leader-elect") != "true" || flag(t, c.Args, "leader-election-namespace") != namespace {
		t.Errorf("leader election not on in the release namespace: %q", c.Args)
	}

	pdb := &policyv1.PodDisruptionBudget{}
	typed(t, m.find(t, "PodDisruptionBudget", release), pdb)
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 ||
		!cmp.Equal(pdb.Spec.Selector.MatchLabels, d.Spec.Selector.MatchLabels) {
		t.Errorf("PodDisruptionBudget = %+v", pdb.Spec)
	}
}

func containerPort(t *testing.T, c corev1.Container, name string) int32 {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	t.Fatalf("container has no port %q", name)
	return 0
}

// The ConfigMap holds a PolicyConfiguration that the server loads, equal to
// the built-in defaults, mounted where --config points, as a directory (a
// subPath mount is never updated, so the server could not reload it).
func TestConfigDefaults(t *testing.T) {
	m := render(t)
	d, c := deployment(t, m, release)
	cfg := loadConfig(t, m, d, c)
	if diff := cmp.Diff(config.Default(), cfg); diff != "" {
		t.Errorf("the chart's default config differs from the built-in defaults (-builtin +chart):\n%s", diff)
	}
}

// loadConfig returns the configuration the server would load from the
// rendered ConfigMap, following --config through the volume mount.
func loadConfig(t *testing.T, m manifest, d *appsv1.Deployment, c corev1.Container) *config.PolicyConfiguration {
	t.Helper()
	path := flag(t, c.Args, "config")
	var mount corev1.VolumeMount
	for _, vm := range c.VolumeMounts {
		if strings.HasPrefix(path, vm.MountPath+"/") {
			mount = vm
		}
	}
	if mount.Name == "" || mount.SubPath != "" {
		t.Fatalf("--config=%s is not in a directory mount: %+v", path, c.VolumeMounts)
	}
	v := volume(t, d, mount.Name)
	if v.ConfigMap == nil {
		t.Fatalf("volume %s is not a ConfigMap: %+v", v.Name, v)
	}
	cm := &corev1.ConfigMap{}
	typed(t, m.find(t, "ConfigMap", v.ConfigMap.Name), cm)
	key := strings.TrimPrefix(path, mount.MountPath+"/")
	data, ok := cm.Data[key]
	if !ok {
		t.Fatalf("ConfigMap %s has no key %q", cm.Name, key)
	}
	cfg, err := config.Parse([]byte(data))
	if err != nil {
		t.Fatalf("the server would refuse the rendered configuration: %v\n%s", err, data)
	}
	return cfg
}

// config: maps 1:1 onto PolicyConfiguration, and only the podSelectors
// (built into caches at start) roll the pods.
func TestConfigValues(t *testing.T) {
	values := writeValues(t, `
config:
  mode: Audit
  policies:
    host-network-endpoint: {host: 127.0.0.1, port: 6443, override: Always}
    apiserver-probe-host: {mode: Enforce}
  audit: {interval: 30s, maxReportResults: 7}
`)
	m := render(t, "-f", values)
	d, c := deployment(t, m, release)
	got := loadConfig(t, m, d, c)
	want := config.Default()
	want.Mode = "Audit"
	want.Policies[hostnetwork.ID].Settings.(*hostnetwork.Settings).Host, want.Policies[hostnetwork.ID].Settings.(*hostnetwork.Settings).Port = "127.0.0.1", 6443
	want.Policies[hostnetwork.ID].Settings.(*hostnetwork.Settings).Override = "Always"
	want.Policies[apiserver.ProbeHostID].Mode = "Enforce"
	want.Audit.Interval.Duration, want.Audit.MaxReportResults = 30e9, 7
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}

	checksum := func(m manifest) string {
		d, _ := deployment(t, m, release)
		return d.Spec.Template.Annotations["checksum/kube-proxy-pod-selectors"]
	}
	base := checksum(render(t))
	if base == "" || checksum(m) != base {
		t.Errorf("a hot-reloadable config change changes the pod template (checksum %q -> %q)", base, checksum(m))
	}
	selectors := render(t, "--set", "config.policies.kube-proxy-node-deleting.podSelectors[0].matchLabels.app=kp")
	if checksum(selectors) == base {
		t.Errorf("a podSelectors change does not change the pod template: the server would keep the old kube-proxy caches")
	}
}

// TestEndpointConfigMapsValues: the ConfigMaps a platform adds (the one
// Cilium's k8sServiceHostRef names) are granted by name in their namespace,
// reach the webhook's matchConditions and the configuration, and roll the
// pods (the server reads the list at start).
func TestEndpointConfigMapsValues(t *testing.T) {
	m := render(t, "--set-json", `config.endpointConfigMaps=["kube-system/cilium-config","cilium/api-endpoint","cilium/api-endpoint-v6"]`)
	r := &rbacv1.Role{}
	typed(t, m.find(t, "Role", release+"-endpoint-configmaps"), r)
	var roles []string
	for _, u := range m.ofKind("Role") {
		if u.GetName() == release+"-endpoint-configmaps" {
			r := &rbacv1.Role{}
			typed(t, u, r)
			roles = append(roles, r.Namespace+": "+strings.Join(r.Rules[0].ResourceNames, ","))
		}
	}
	slices.Sort(roles)
	if want := []string{"cilium: api-endpoint,api-endpoint-v6", "kube-system: cilium-config"}; !slices.Equal(roles, want) {
		t.Errorf("endpoint ConfigMap Roles = %v, want %v", roles, want)
	}
	var condition string
	for _, h := range webhooks(t, m) {
		if h.Name == "validate-cluster-configmaps.endpoint-policy.io" {
			condition = h.MatchConditions[0].Expression
		}
	}
	if !strings.Contains(condition, "(request.namespace == 'cilium' && request.name == 'api-endpoint')") ||
		strings.Contains(condition, "tigera-operator") {
		t.Errorf("matchCondition %q does not follow endpointConfigMaps", condition)
	}
	d, c := deployment(t, m, release)
	if got := loadConfig(t, m, d, c).EndpointConfigMaps; !slices.Equal(got, []string{"kube-system/cilium-config", "cilium/api-endpoint", "cilium/api-endpoint-v6"}) {
		t.Errorf("config endpointConfigMaps = %v", got)
	}
	base, _ := deployment(t, render(t), release)
	if d.Spec.Template.Annotations["checksum/endpoint-configmaps"] == base.Spec.Template.Annotations["checksum/endpoint-configmaps"] {
		t.Errorf("an endpointConfigMaps change does not change the pod template: the server would keep the old ConfigMap caches")
	}
}

// TestExemptionsValues: config.exemptions reaches the server's
// configuration as written; the schema refuses what the server would
// (no reason, an unknown policy, a time that is not RFC 3339), before a
// ConfigMap the server would refuse is installed.
func TestExemptionsValues(t *testing.T) {
	m := render(t, "--set-json", `config.exemptions=[{"policies":["kube-vip-ipvs-backends"],"namespace":"kube-system","kinds":["DaemonSet"],`+
		`"names":["kube-vip"],"selector":{"matchLabels":{"tier":"control-plane"}},"reason":"upgrade to v0.8.10 in change CHG-4711","expires":"2026-12-20T00:00:00Z"}]`)
	d, c := deployment(t, m, release)
	got := loadConfig(t, m, d, c).EngineExemptions()
	if len(got) != 1 || got[0].Name != "exemptions[0]" || got[0].Reason != "upgrade to v0.8.10 in change CHG-4711" ||
		got[0].Expires.Format(time.RFC3339) != "2026-12-20T00:00:00Z" || got[0].Selector.String() != "tier=control-plane" {
		t.Errorf("exemptions = %+v", got)
	}
	for name, value := range map[string]string{
		"no reason":         `[{"policies":["kube-vip-ipvs-backends"],"namespace":"kube-system"}]`,
		"unknown policy":    `[{"policies":["kube-vip"],"namespace":"kube-system","reason":"r"}]`,
		"not RFC 3339":      `[{"policies":["*"],"namespace":"kube-system","reason":"r","expires":"next week"}]`,
		"unknown field":     `[{"policies":["*"],"namespace":"kube-system","reason":"r","expiry":"2026-12-20T00:00:00Z"}]`,
		"unknown kind":      `[{"policies":["*"],"kinds":["Secret"],"reason":"r"}]`,
		"misspelt selector": `[{"policies":["*"],"selector":{"matchLabel":{"a":"b"}},"reason":"r"}]`,
	} {
		args := []string{"template", release, chartDir, "--namespace", namespace, "--set-json", "config.exemptions=" + value}
		if out, err := helm(t, "", args...); err == nil || !strings.Contains(out+err.Error(), "exemptions") {
			t.Errorf("%s: helm template accepted %s (%v)", name, value, err)
		}
	}
}

// TestWorkloadsWebhookSeesCNIsOnlyFailingOpen: the workloads webhook gets
// the hostNetwork templates whose endpoint host-network-endpoint judges (a
// CNI's DaemonSet) only while it fails open: failing closed, a webhook that
// cannot be reached while the CNI is down would block the CNI's fix.
func TestWorkloadsWebhookSeesCNIsOnlyFailingOpen(t *testing.T) {
	expression := func(m manifest) string {
		for _, h := range webhooks(t, m) {
			if h.Name == "validate-workloads.endpoint-policy.io" {
				return h.MatchConditions[0].Expression
			}
		}
		t.Fatal("no validate-workloads webhook")
		return ""
	}
	const clause = "e.name == 'KUBERNETES_SERVICE_HOST'"
	if !strings.Contains(expression(render(t)), clause) {
		t.Errorf("failing open, the workloads webhook does not see hostNetwork templates that set KUBERNETES_SERVICE_HOST")
	}
	if strings.Contains(expression(render(t, "--set", "webhook.failurePolicy.validateWorkloads=Fail")), clause) {
		t.Errorf("failing closed, the workloads webhook sees the CNIs' hostNetwork templates")
	}
}

func writeValues(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// cert-manager mode: a self-signed root, a CA Issuer, a serving Certificate
// whose Secret is what the Deployment mounts as --cert-dir and whose names
// are the Service's, and its CA injected into both webhook configurations.
func TestCertManagerDefaults(t *testing.T) {
	m := render(t)
	d, c := deployment(t, m, release)

	serving := certificate(t, m, release+"-serving")
	tls := volume(t, d, "tls")
	if tls.Secret == nil || tls.Secret.SecretName != serving.Spec.SecretName {
		t.Errorf("the Deployment mounts Secret %+v, the Certificate writes Secret %q", tls.Secret, serving.Spec.SecretName)
	}
	var mountPath string
	for _, vm := range c.VolumeMounts {
		if vm.Name == "tls" {
			mountPath = vm.MountPath
		}
	}
	if dir := flag(t, c.Args, "cert-dir"); dir != mountPath {
		t.Errorf("--cert-dir=%s, the Secret is mounted at %q", dir, mountPath)
	}
	if want := serviceNames(t, m, release+"-webhook"); !cmp.Equal(serving.Spec.DNSNames, want) {
		t.Errorf("dnsNames = %q, want the Service's names %q", serving.Spec.DNSNames, want)
	}
	if !slices.Contains(serving.Spec.Usages, cmapi.UsageServerAuth) {
		t.Errorf("usages = %q, want server auth", serving.Spec.Usages)
	}

	// The chain: serving <- CA Issuer <- CA Certificate <- self-signed Issuer.
	caIssuer := issuer(t, m, serving.Spec.IssuerRef.Name)
	if serving.Spec.IssuerRef.Kind != "Issuer" || caIssuer.Spec.CA == nil {
		t.Fatalf("serving certificate issuer %+v is not a CA Issuer: %+v", serving.Spec.IssuerRef, caIssuer.Spec)
	}
	var ca *cmapi.Certificate
	for _, u := range m.ofKind("Certificate") {
		if cert := certificate(t, m, u.GetName()); cert.Spec.SecretName == caIssuer.Spec.CA.SecretName {
			ca = cert
		}
	}
	if ca == nil || !ca.Spec.IsCA {
		t.Fatalf("no CA Certificate writes the CA Issuer's Secret %q", caIssuer.Spec.CA.SecretName)
	}
	if root := issuer(t, m, ca.Spec.IssuerRef.Name); root.Spec.SelfSigned == nil {
		t.Errorf("the CA is issued by %+v, want a self-signed Issuer", root.Spec)
	}

	for _, kind := range []string{"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"} {
		for _, u := range m.ofKind(kind) {
			if got := u.GetAnnotations()["cert-manager.io/inject-ca-from"]; got != namespace+"/"+serving.Name {
				t.Errorf("%s %s: inject-ca-from = %q, want %s/%s", kind, u.GetName(), got, namespace, serving.Name)
			}
		}
	}
	if m.ofKind("Secret") != nil {
		t.Errorf("cert-manager mode renders Secrets: %v", m.ofKind("Secret").names())
	}
}

func certificate(t *testing.T, m manifest, name string) *cmapi.Certificate {
	t.Helper()
	c := &cmapi.Certificate{}
	typed(t, m.find(t, "Certificate", name), c)
	return c
}

func issuer(t *testing.T, m manifest, name string) *cmapi.Issuer {
	t.Helper()
	i := &cmapi.Issuer{}
	typed(t, m.find(t, "Issuer", name), i)
	return i
}

// An existing issuer replaces the chart's chain.
func TestCertManagerIssuerRef(t *testing.T) {
	m := render(t, "--set", "certManager.issuerRef.name=corp-ca", "--set", "certManager.issuerRef.kind=ClusterIssuer")
	if got := m.ofKind("Issuer"); got != nil {
		t.Errorf("Issuers rendered with issuerRef set: %v", got.names())
	}
	serving := certificate(t, m, release+"-serving")
	if ref := serving.Spec.IssuerRef; ref.Name != "corp-ca" || ref.Kind != "ClusterIssuer" || ref.Group != "cert-manager.io" {
		t.Errorf("issuerRef = %+v", ref)
	}
	if n := len(m.ofKind("Certificate")); n != 1 {
		t.Errorf("%d Certificates, want only the serving one", n)
	}
}

// Self-signed mode: the chart's CA signs a serving certificate for the
// Service's names, and every webhook trusts that CA.
func TestSelfSigned(t *testing.T) {
	m := render(t, "--set", "certManager.enabled=false")
	if got := append(m.ofKind("Certificate"), m.ofKind("Issuer")...); got != nil {
		t.Errorf("cert-manager objects rendered with certManager.enabled=false: %v", got.names())
	}
	d, _ := deployment(t, m, release)
	secret := &corev1.Secret{}
	typed(t, m.find(t, "Secret", volume(t, d, "tls").Secret.SecretName), secret)
	if secret.Type != corev1.SecretTypeTLS {
		t.Errorf("Secret type %q", secret.Type)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(secret.Data["ca.crt"]) {
		t.Fatalf("ca.crt holds no certificate")
	}
	block, _ := pem.Decode(secret.Data["tls.crt"])
	if block == nil {
		t.Fatalf("tls.crt holds no PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range serviceNames(t, m, release+"-webhook") {
		if _, err := cert.Verify(x509.VerifyOptions{DNSName: name, Roots: roots}); err != nil {
			t.Errorf("the serving certificate does not verify for %s: %v", name, err)
		}
	}
	for _, hook := range webhooks(t, m) {
		if string(hook.ClientConfig.CABundle) != string(secret.Data["ca.crt"]) {
			t.Errorf("webhook %s: caBundle is not the Secret's ca.crt", hook.Name)
		}
	}
	for _, kind := range []string{"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"} {
		for _, u := range m.ofKind(kind) {
			if len(u.GetAnnotations()) > 0 {
				t.Errorf("%s %s annotated in self-signed mode: %v", kind, u.GetName(), u.GetAnnotations())
			}
		}
	}
}

// hook is what the tests compare of a mutating or validating webhook.
type hook struct {
	Name              string
	ClientConfig      admissionregistrationv1.WebhookClientConfig
	Rules             []admissionregistrationv1.RuleWithOperations
	FailurePolicy     *admissionregistrationv1.FailurePolicyType
	SideEffects       *admissionregistrationv1.SideEffectClass
	TimeoutSeconds    *int32
	NamespaceSelector *metav1.LabelSelector
	ObjectSelector    *metav1.LabelSelector
	MatchConditions   []admissionregistrationv1.MatchCondition
	Reinvocation      *admissionregistrationv1.ReinvocationPolicyType
}

func webhooks(t *testing.T, m manifest) []hook {
	t.Helper()
	var out []hook
	for _, u := range m.ofKind("MutatingWebhookConfiguration") {
		c := &admissionregistrationv1.MutatingWebhookConfiguration{}
		typed(t, u, c)
		for _, w := range c.Webhooks {
			out = append(out, hook{w.Name, w.ClientConfig, w.Rules, w.FailurePolicy, w.SideEffects, w.TimeoutSeconds,
				w.NamespaceSelector, w.ObjectSelector, w.MatchConditions, w.ReinvocationPolicy})
		}
	}
	for _, u := range m.ofKind("ValidatingWebhookConfiguration") {
		c := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		typed(t, u, c)
		for _, w := range c.Webhooks {
			out = append(out, hook{w.Name, w.ClientConfig, w.Rules, w.FailurePolicy, w.SideEffects, w.TimeoutSeconds,
				w.NamespaceSelector, w.ObjectSelector, w.MatchConditions, nil})
		}
	}
	return out
}

// The chart's webhooks are config/webhook/manifests.yaml's: same names,
// paths, rules, matchConditions, selectors, failure policies and timeouts.
func TestWebhooksMatchConfig(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(configDir, "webhook", "manifests.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := decodeAll(t, string(data))
	got := render(t)
	for _, kind := range []string{"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"} {
		w, g := want.ofKind(kind), got.ofKind(kind)
		if len(w) != 1 || len(g) != 1 {
			t.Fatalf("%s: %d in config/, %d in the chart", kind, len(w), len(g))
		}
		if w[0].GetName() != g[0].GetName() {
			t.Errorf("%s named %q in config/, %q in the chart", kind, w[0].GetName(), g[0].GetName())
		}
	}
	if diff := cmp.Diff(webhooks(t, want), webhooks(t, got)); diff != "" {
		t.Errorf("the chart's webhooks drifted from config/webhook/manifests.yaml (-config +chart):\n%s", diff)
	}
	// And the defaults are the safe ones: mutation and the broad validations
	// fail open, only the one-ConfigMap kubeadm-config validation fails closed.
	expectFailurePolicies(t, webhooks(t, got), "validate-kubeadm-config.endpoint-policy.io", 3)
}

// expectFailurePolicies checks that only the webhook named failClosed fails
// closed, and that every webhook has the timeout.
func expectFailurePolicies(t *testing.T, hooks []hook, failClosed string, timeout int32) {
	t.Helper()
	for _, h := range hooks {
		want := admissionregistrationv1.Ignore
		if h.Name == failClosed {
			want = admissionregistrationv1.Fail
		}
		if *h.FailurePolicy != want || ptr.Deref(h.TimeoutSeconds, 0) != timeout {
			t.Errorf("%s: failurePolicy %s timeout %v, want %s %d", h.Name, *h.FailurePolicy, ptr.Deref(h.TimeoutSeconds, 0), want, timeout)
		}
	}
}

// Non-default webhook values reach every webhook; the release namespace and
// kube-node-lease stay excluded whatever the values.
func TestWebhookValues(t *testing.T) {
	values := writeValues(t, `
webhook:
  timeoutSeconds: 10
  failurePolicy: {mutatePods: Fail, validateKubeadmConfig: Ignore}
  namespaceSelector:
    matchExpressions:
      - {key: team, operator: NotIn, values: [sandbox]}
`)
	m := render(t, "-f", values, "--namespace", "policy-system")
	hooks := webhooks(t, m)
	expectFailurePolicies(t, hooks, "mutate-pods.endpoint-policy.io", 10)
	for _, h := range hooks {
		if svc := h.ClientConfig.Service; svc == nil || svc.Namespace != "policy-system" || svc.Name != release+"-webhook" {
			t.Errorf("%s: service %+v", h.Name, svc)
		}
		wantSel := []metav1.LabelSelectorRequirement{
			{Key: "endpoint-policy.io/exclude", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"true"}},
			{Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpNotIn, Values: []string{"kube-node-lease", "policy-system"}},
			{Key: "team", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"sandbox"}},
		}
		if diff := cmp.Diff(wantSel, h.NamespaceSelector.MatchExpressions); diff != "" {
			t.Errorf("%s: namespaceSelector (-want +got):\n%s", h.Name, diff)
		}
	}
}

// Exactly the permissions the server uses, Role-scoped where it can be.
func TestRBAC(t *testing.T) {
	m := render(t)
	d, _ := deployment(t, m, release)
	sa := d.Spec.Template.Spec.ServiceAccountName
	m.find(t, "ServiceAccount", sa)

	rule := func(group, resource string, verbs ...string) rbacv1.PolicyRule {
		return rbacv1.PolicyRule{APIGroups: []string{group}, Resources: strings.Split(resource, ","), Verbs: verbs}
	}
	want := map[string][]rbacv1.PolicyRule{
		"ClusterRole/" + release: {
			rule("", "pods", "list", "watch", "patch"),
			rule("", "nodes,namespaces", "list", "watch"),
			rule("apps", "deployments,statefulsets,daemonsets,replicasets", "list", "watch"),
			rule("batch", "jobs,cronjobs", "list", "watch"),
			rule("events.k8s.io", "events", "create", "patch"),
			rule("", "events", "list"),
			rule("wgpolicyk8s.io", "policyreports,clusterpolicyreports", "list", "create", "patch", "delete"),
			rule("openreports.io", "reports,clusterreports", "list", "create", "patch", "delete"),
			rule("admissionregistration.k8s.io", "mutatingwebhookconfigurations,validatingwebhookconfigurations", "list", "watch"),
			rule("authentication.k8s.io", "tokenreviews", "create"),
			rule("authorization.k8s.io", "subjectaccessreviews", "create"),
		},
		// Not the server's: for Prometheus to be bound to.
		"ClusterRole/" + release + "-metrics-reader": {
			{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}},
		},
		"Role/kube-system/" + release + "-kubeadm-config": {
			{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{"kubeadm-config", "kube-proxy"}, Verbs: []string{"list", "watch"}},
		},
		// config.endpointConfigMaps, by name, per namespace.
		"Role/calico-system/" + release + "-endpoint-configmaps": {
			{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{"kubernetes-services-endpoint"}, Verbs: []string{"get", "list", "watch"}},
		},
		"Role/kube-system/" + release + "-endpoint-configmaps": {
			{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{"kubernetes-services-endpoint", "cilium-config"}, Verbs: []string{"get", "list", "watch"}},
		},
		"Role/tigera-operator/" + release + "-endpoint-configmaps": {
			{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{"kubernetes-services-endpoint"}, Verbs: []string{"get", "list", "watch"}},
		},
		"Role/kube-public/" + release + "-cluster-info": {
			{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{"cluster-info"}, Verbs: []string{"list", "watch"}},
		},
		"Role/" + namespace + "/" + release + "-leader-election": {
			rule("coordination.k8s.io", "leases", "get", "list", "watch", "create", "update"),
			rule("", "events", "create", "patch"),
		},
		// The node agent's, and its only grant.
		"Role/" + namespace + "/" + release + "-agent": {
			rule("coordination.k8s.io", "leases", "get", "list", "watch", "create", "update", "patch"),
		},
	}
	got := map[string][]rbacv1.PolicyRule{}
	for _, u := range m.ofKind("ClusterRole") {
		r := &rbacv1.ClusterRole{}
		typed(t, u, r)
		got["ClusterRole/"+r.Name] = r.Rules
	}
	for _, u := range m.ofKind("Role") {
		r := &rbacv1.Role{}
		typed(t, u, r)
		got["Role/"+r.Namespace+"/"+r.Name] = r.Rules
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("RBAC rules (-want +got):\n%s", diff)
	}

	// Every role is bound to the server's ServiceAccount, and only to it;
	// the agent's to the agent's.
	bound := map[string]bool{}
	for _, u := range append(m.ofKind("ClusterRoleBinding"), m.ofKind("RoleBinding")...) {
		b := &rbacv1.RoleBinding{}
		typed(t, u, b)
		want := []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: namespace}}
		if b.RoleRef.Name == release+"-agent" {
			want[0].Name = release + "-agent"
		}
		if !cmp.Equal(b.Subjects, want) {
			t.Errorf("%s %s subjects = %+v", u.GetKind(), b.Name, b.Subjects)
		}
		key := b.RoleRef.Kind + "/" + b.RoleRef.Name
		if b.RoleRef.Kind == "Role" {
			key = "Role/" + b.Namespace + "/" + b.RoleRef.Name
		}
		bound[key] = true
	}
	for role := range want {
		if !bound[role] && !strings.HasSuffix(role, "-metrics-reader") {
			t.Errorf("%s is not bound", role)
		}
	}
}

// Optional objects and pod placement values.
func TestOptionalValues(t *testing.T) {
	values := writeValues(t, `
fullnameOverride: ep
replicaCount: 3
imagePullSecrets: [{name: regcred}]
image: {digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}
podAnnotations: {example.com/team: platform}
nodeSelector: {kubernetes.io/os: linux}
tolerations: [{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}]
affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: pool, operator: In, values: [system]}]}]}}}
shutdownDelaySeconds: 0
metrics: {secure: false}
hostNetwork: true
webhook: {bindAddress: hostIP}
resources: {requests: {cpu: 10m, memory: 32Mi}, limits: {cpu: "1", memory: 128Mi}}
podDisruptionBudget: {enabled: false}
serviceMonitor: {enabled: true, interval: 15s, labels: {release: prom}}
networkPolicy:
  enabled: true
  apiServerPeers: [{ipBlock: {cidr: 10.0.0.0/24}}]
  metricsPeers: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]
`)
	m := render(t, "-f", values)
	d, c := deployment(t, m, "ep")
	spec := d.Spec.Template.Spec
	if ptr.Deref(d.Spec.Replicas, 0) != 3 || spec.ImagePullSecrets[0].Name != "regcred" ||
		d.Spec.Template.Annotations["example.com/team"] != "platform" || spec.NodeSelector["kubernetes.io/os"] != "linux" ||
		len(spec.Tolerations) != 1 || spec.Affinity == nil || spec.Affinity.NodeAffinity == nil {
		t.Errorf("pod values not applied: replicas %v, spec %+v", d.Spec.Replicas, spec)
	}
	if !spec.HostNetwork || spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet || len(spec.TopologySpreadConstraints) != 1 {
		t.Errorf("hostNetwork: %v, dnsPolicy %q, spread %v: want the node's network, cluster DNS, the spread unchanged",
			spec.HostNetwork, spec.DNSPolicy, spec.TopologySpreadConstraints)
	}
	if !strings.HasSuffix(c.Image, "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef") {
		t.Errorf("image = %s, want the digest", c.Image)
	}
	// A hostNetwork install listens on the node's address only: the kubelet
	// expands $(HOST_IP) from the downward API.
	if flag(t, c.Args, "webhook-bind-address") != "$(HOST_IP)" || !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.Name == "HOST_IP" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.hostIP"
	}) {
		t.Errorf("webhook.bindAddress hostIP: args %q, env %v; want --webhook-bind-address=$(HOST_IP) and HOST_IP from status.hostIP", c.Args, c.Env)
	}
	if flag(t, c.Args, "shutdown-delay") != "0s" || flag(t, c.Args, "metrics-secure") != "false" {
		t.Errorf("shutdownDelaySeconds, metrics.secure not applied: %q", c.Args)
	}
	if m.get("ClusterRole", "ep-metrics-reader") != nil {
		t.Errorf("metrics-reader ClusterRole rendered with metrics.secure false")
	}
	if !c.Resources.Limits.Cpu().Equal(resource.MustParse("1")) {
		t.Errorf("limits = %v", c.Resources.Limits)
	}
	if m.get("PodDisruptionBudget", "ep") != nil {
		t.Errorf("PodDisruptionBudget rendered although disabled")
	}

	np := &networkingv1.NetworkPolicy{}
	typed(t, m.find(t, "NetworkPolicy", "ep"), np)
	if len(np.Spec.Ingress) != 2 || np.Spec.Ingress[0].Ports[0].Port.String() != "webhook" ||
		np.Spec.Ingress[0].From[0].IPBlock.CIDR != "10.0.0.0/24" || np.Spec.Ingress[1].Ports[0].Port.String() != "metrics" {
		t.Errorf("NetworkPolicy ingress = %+v", np.Spec.Ingress)
	}
	if !cmp.Equal(np.Spec.PodSelector.MatchLabels, d.Spec.Selector.MatchLabels) {
		t.Errorf("NetworkPolicy selects %v", np.Spec.PodSelector)
	}

	sm := m.find(t, "ServiceMonitor", "ep")
	if sm.GetLabels()["release"] != "prom" {
		t.Errorf("ServiceMonitor labels %v", sm.GetLabels())
	}
	metrics := &corev1.Service{}
	typed(t, m.find(t, "Service", "ep-metrics"), metrics)
	selector, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
	for k, v := range selector {
		if metrics.Labels[k] != v {
			t.Errorf("ServiceMonitor selector %v does not select the metrics Service %v", selector, metrics.Labels)
		}
	}
	if metrics.Spec.Ports[0].TargetPort.String() != "metrics" {
		t.Errorf("metrics Service targets %v", metrics.Spec.Ports[0].TargetPort)
	}
	if scheme, _, _ := unstructured.NestedString(sm.Object, "spec", "endpoints", "0", "scheme"); scheme != "" {
		t.Errorf("ServiceMonitor scheme %q with metrics.secure false", scheme)
	}
}

// With the default secure metrics, the ServiceMonitor scrapes over HTTPS
// with Prometheus' own token.
func TestServiceMonitorSecure(t *testing.T) {
	sm := render(t, "--set", "serviceMonitor.enabled=true").find(t, "ServiceMonitor", release)
	endpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	if len(endpoints) != 1 {
		t.Fatalf("ServiceMonitor endpoints = %v", endpoints)
	}
	e := endpoints[0].(map[string]any)
	if e["scheme"] != "https" || e["bearerTokenFile"] != "/var/run/secrets/kubernetes.io/serviceaccount/token" {
		t.Errorf("ServiceMonitor endpoint %v: want https with Prometheus' token", e)
	}
}

// A typo or a wrong type in a value fails with a message naming it.
func TestValuesRejected(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags []string
		want  string
	}{
		{"misspelt top-level key", []string{"--set", "replicas=3"}, "additional properties 'replicas' not allowed"},
		{"misspelt policy field", []string{"--set", "config.policies.host-network-endpoint.prot=1"}, "'prot' not allowed"},
		{"unknown policy", []string{"--set", "config.policies.host-network=1"}, "'host-network' not allowed"},
		{"bad mode", []string{"--set", "config.policies.kube-vip-ipvs-backends.mode=Warn"}, "/config/policies/kube-vip-ipvs-backends/mode"},
		{"global Disabled", []string{"--set", "config.mode=Disabled"}, "/config/mode"},
		{"port out of range", []string{"--set", "config.policies.host-network-endpoint.port=70000"}, "/config/policies/host-network-endpoint/port"},
		{"bad interval", []string{"--set", "config.audit.interval=often"}, "/config/audit/interval"},
		{"failure policy", []string{"--set", "webhook.failurePolicy.mutatePods=Open"}, "/webhook/failurePolicy/mutatePods"},
		{"timeout above 30", []string{"--set", "webhook.timeoutSeconds=31"}, "/webhook/timeoutSeconds"},
		{"string for a number", []string{"--set-string", "replicaCount=two"}, "/replicaCount"},
		{"network policy without peers", []string{"--set", "networkPolicy.enabled=true"}, "networkPolicy.apiServerPeers"},
		{"kube-system", []string{"--namespace", "kube-system"}, "must not be installed into kube-system"},
		{"no agent with verification Required", []string{"--set", "agent.enabled=false"},
			"agent.enabled=false with config.policies.host-network-endpoint.verification=Required"},
		{"bad verification", []string{"--set", "config.policies.host-network-endpoint.verification=Maybe"},
			"/config/policies/host-network-endpoint/verification"},
		{"candidate without a port", []string{"--set", "config.policies.host-network-endpoint.candidates[0]=localhost"},
			"/config/policies/host-network-endpoint/candidates/0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"template", release, chartDir, "--namespace", namespace}, tc.flags...)
			out, err := helm(t, "", args...)
			if err == nil {
				t.Fatalf("accepted:\n%s", out)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error does not name %q:\n%v", tc.want, err)
			}
		})
	}
}

// `--set ...podSelectors=null` drops the key (Helm's way to unset a value):
// the server's default selectors apply, never an empty list.
func TestPodSelectorsNull(t *testing.T) {
	m := render(t, "--set", "config.policies.kube-proxy-node-deleting.podSelectors=null")
	d, c := deployment(t, m, release)
	if got := loadConfig(t, m, d, c); len(got.Policies[kubeproxy.NodeDeletingID].Settings.(*kubeproxy.Settings).PodSelectors) == 0 {
		t.Errorf("no kube-proxy selectors in force")
	}
}

// Every PolicyConfiguration field can be set through values, and the schema
// knows no field the server does not: the schema's config properties are the
// Go type's JSON fields, level by level.
func TestSchemaCoversConfig(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := yaml.Unmarshal(data, &schema); err != nil {
		t.Fatal(err)
	}
	cfg := schema["properties"].(map[string]any)["config"].(map[string]any)
	compareFields(t, "config", reflect.TypeFor[config.PolicyConfiguration](), cfg, map[string]bool{"apiVersion": true, "kind": true})
}

// comparePolicies checks config.policies against the registry: one property
// per registered policy, each with mode and its settings' fields.
func comparePolicies(t *testing.T, path string, schema map[string]any) {
	t.Helper()
	if schema["additionalProperties"] != false {
		t.Errorf("%s: schema allows additional properties", path)
	}
	props, _ := schema["properties"].(map[string]any)
	for _, d := range registry.Policies {
		sub, ok := props[string(d.ID)].(map[string]any)
		if !ok {
			t.Errorf("%s.%s: registered, not in values.schema.json", path, d.ID)
			continue
		}
		fields := []reflect.StructField{{Name: "Mode", Type: reflect.TypeFor[policy.Mode](), Tag: `json:"mode"`}}
		if d.DefaultSettings != nil {
			settings := reflect.TypeOf(d.DefaultSettings()).Elem()
			for i := range settings.NumField() {
				fields = append(fields, settings.Field(i))
			}
		}
		compareFields(t, path+"."+string(d.ID), reflect.StructOf(fields), sub, nil)
	}
	for name := range props {
		if _, ok := registry.Lookup(policy.ID(name)); !ok {
			t.Errorf("%s.%s: in values.schema.json, not a registered policy", path, name)
		}
	}
}

// leaves are types whose schema is not derived from their Go fields.
var leaves = map[string]bool{"Duration": true}

func compareFields(t *testing.T, path string, typ reflect.Type, schema map[string]any, skip map[string]bool) {
	t.Helper()
	if typ == reflect.TypeFor[config.Policies]() {
		comparePolicies(t, path, schema)
		return
	}
	for typ.Kind() == reflect.Slice || typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
		if items, ok := schema["items"].(map[string]any); ok {
			schema = items
		}
	}
	if typ.Kind() != reflect.Struct || leaves[typ.Name()] {
		return
	}
	if schema["additionalProperties"] != false {
		t.Errorf("%s: schema allows additional properties", path)
	}
	props, _ := schema["properties"].(map[string]any)
	fields := map[string]reflect.Type{}
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != "" && name != "-" && !skip[name] {
			fields[name] = f.Type
		}
	}
	for name, ft := range fields {
		sub, ok := props[name].(map[string]any)
		if !ok {
			t.Errorf("%s.%s: in PolicyConfiguration, not in values.schema.json", path, name)
			continue
		}
		compareFields(t, path+"."+name, ft, sub, nil)
	}
	for name := range props {
		if _, ok := fields[name]; !ok {
			t.Errorf("%s.%s: in values.schema.json, not in PolicyConfiguration", path, name)
		}
	}
}

// The node agent: a DaemonSet on every node, on the host's network, with
// its own ServiceAccount and nothing it does not need.
func TestAgent(t *testing.T) {
	m := render(t)
	ds := &appsv1.DaemonSet{}
	typed(t, m.find(t, "DaemonSet", release+"-agent"), ds)
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork || spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("hostNetwork %v, dnsPolicy %s; want the host's network with cluster DNS", spec.HostNetwork, spec.DNSPolicy)
	}
	if !cmp.Equal(spec.Tolerations, []corev1.Toleration{{Operator: corev1.TolerationOpExists}}) {
		t.Errorf("tolerations %+v, want every taint tolerated", spec.Tolerations)
	}
	if spec.PriorityClassName != "system-node-critical" || spec.ServiceAccountName != release+"-agent" {
		t.Errorf("priority class %q, ServiceAccount %q", spec.PriorityClassName, spec.ServiceAccountName)
	}
	m.find(t, "ServiceAccount", release+"-agent")
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	if c.Args[0] != "agent" || flag(t, c.Args, "interval") != "30s" || flag(t, c.Args, "heartbeat") != "5m" ||
		flag(t, c.Args, "config") != "/etc/endpoint-policy/config/config.yaml" {
		t.Errorf("args %q", c.Args)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			env[e.Name] = e.ValueFrom.FieldRef.FieldPath
		}
	}
	if !cmp.Equal(env, map[string]string{"NODE_NAME": "spec.nodeName", "POD_NAMESPACE": "metadata.namespace"}) {
		t.Errorf("downward API env %v", env)
	}
	sc := c.SecurityContext
	if sc == nil || !ptr.Deref(sc.ReadOnlyRootFilesystem, false) || ptr.Deref(sc.AllowPrivilegeEscalation, true) ||
		sc.Capabilities == nil || !cmp.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 ||
		spec.SecurityContext == nil || !ptr.Deref(spec.SecurityContext.RunAsNonRoot, false) {
		t.Errorf("security context %+v / %+v: want non-root, read-only root, no capabilities", spec.SecurityContext, sc)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v: want small requests and a memory limit", c.Resources)
	}

	// Without the agent, the rewrite must not need it: verification Off
	// renders, and no agent.
	m = render(t, "--set", "agent.enabled=false", "--set", "config.policies.host-network-endpoint.verification=Off")
	if m.ofKind("DaemonSet") != nil {
		t.Errorf("agent.enabled=false rendered a DaemonSet")
	}
}

// TestGoMemoryLimit: the server's and the agent's GOMEMLIMIT are their
// containers' memory limits, read by the downward API, so that the garbage
// collector works harder near the limit instead of the pod being OOM-killed.
func TestGoMemoryLimit(t *testing.T) {
	m := render(t, "--set", "resources.limits.memory=300Mi")
	_, server := deployment(t, m, release)
	ds := &appsv1.DaemonSet{}
	typed(t, m.find(t, "DaemonSet", release+"-agent"), ds)
	for _, c := range []corev1.Container{server, ds.Spec.Template.Spec.Containers[0]} {
		var ref *corev1.ResourceFieldSelector
		for _, e := range c.Env {
			if e.Name == "GOMEMLIMIT" && e.ValueFrom != nil {
				ref = e.ValueFrom.ResourceFieldRef
			}
		}
		if ref == nil || ref.ContainerName != c.Name || ref.Resource != "limits.memory" {
			t.Errorf("container %s: GOMEMLIMIT from %+v, want its own limits.memory", c.Name, ref)
		}
		if c.Resources.Limits.Memory().IsZero() {
			t.Errorf("container %s has no memory limit for GOMEMLIMIT", c.Name)
		}
	}
	if got := server.Resources.Limits.Memory().String(); got != "300Mi" {
		t.Errorf("the server's memory limit %s, want the value's 300Mi", got)
	}
}

// AKS's Admissions Enforcer excludes kube-system from every webhook's
// namespaceSelector unless the configuration opts out: kube-system's
// hostNetwork pods are the ones host-network-endpoint is for.
func TestWebhooksOptOutOfAKSAdmissionsEnforcer(t *testing.T) {
	m := render(t)
	for _, kind := range []string{"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"} {
		for _, u := range m.ofKind(kind) {
			if got := u.GetLabels()["admissions.enforcer/disabled"]; got != "true" {
				t.Errorf("%s %s: label admissions.enforcer/disabled = %q, want \"true\"", kind, u.GetName(), got)
			}
		}
		if len(m.ofKind(kind)) == 0 {
			t.Errorf("no %s rendered", kind)
		}
	}
}
