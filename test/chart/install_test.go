package chart

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/apiserver"
	"github.com/onsi/gomega"
)

// The README's commands, verbatim (TestReadmeCommands checks that the README
// still shows them): what users run is what this test runs.
const (
	installCertManager = "helm install endpoint-policy ./charts/endpoint-policy -n endpoint-policy --create-namespace"
	installSelfSigned  = "helm install endpoint-policy ./charts/endpoint-policy -n endpoint-policy --create-namespace --set certManager.enabled=false"
	installAudit       = "helm install endpoint-policy ./charts/endpoint-policy -n endpoint-policy --create-namespace --set config.mode=Audit"
	upgradeToEnforce   = "helm upgrade endpoint-policy ./charts/endpoint-policy -n endpoint-policy --reuse-values --set config.mode=Enforce"
	uninstall          = "helm uninstall endpoint-policy -n endpoint-policy"

	// Not in the README: a policy value changed on a running release.
	upgradeProbeHost = "helm upgrade endpoint-policy ./charts/endpoint-policy -n endpoint-policy --reuse-values " +
		"--set config.policies.apiserver-probe-host.mode=Enforce"
)

func TestReadmeCommands(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{installCertManager, installSelfSigned, installAudit, upgradeToEnforce, uninstall} {
		if !strings.Contains(string(readme), "\n"+cmd+"\n") {
			t.Errorf("README.md does not show the tested command on a line of its own:\n%s", cmd)
		}
	}
}

// cluster is a real kube-apiserver with cert-manager's CRDs (from the
// cert-manager Go module's deploy/crds), and a kubeconfig for helm.
type cluster struct {
	k8s        client.Client
	kubeconfig string
	// serverKubeconfig authenticates as the chart's ServiceAccount in the
	// release namespace, so that RBAC gives it exactly the chart's roles.
	serverKubeconfig string
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/cert-manager/cert-manager").Output()
	if err != nil || len(out) == 0 {
		t.Fatalf("locating the cert-manager module (its deploy/crds): %v", err)
	}
	return startClusterWith(t,
		filepath.Join(strings.TrimSpace(string(out)), "deploy", "crds"),
		filepath.Join(chartDir, "files", "crds"), // PolicyReports and OpenReports, as upstream publishes them
		filepath.Join("testdata", "crds"),        // prometheus-operator's ServiceMonitor and PrometheusRule
	)
}

// startClusterWith starts an API server with the CRDs in crdDirs.
func startClusterWith(t *testing.T, crdDirs ...string) *cluster {
	t.Helper()
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set. Run `make test`, which builds kube-apiserver and etcd from Go modules into bin/ and sets it.")
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     crdDirs,
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting the API server: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Error(err)
		}
	})
	admin, err := env.AddUser(envtest.User{Name: "helm", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{kubeconfig: filepath.Join(t.TempDir(), "kubeconfig"), serverKubeconfig: filepath.Join(t.TempDir(), "kubeconfig")}
	if err := os.WriteFile(c.kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	sa, err := env.AddUser(envtest.User{
		Name:   serviceaccount.MakeUsername(namespace, release),
		Groups: serviceaccount.MakeGroupNames(namespace),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if kc, err = sa.KubeConfig(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.serverKubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	if c.k8s, err = client.New(cfg, client.Options{}); err != nil {
		t.Fatal(err)
	}
	return c
}

// run runs a helm command line from the repository root, as a user would.
func (c *cluster) run(t *testing.T, line string) string {
	t.Helper()
	args := strings.Fields(line)
	if args[0] != "helm" {
		t.Fatalf("not a helm command: %s", line)
	}
	out, err := helmAt(t, repoRoot, c.kubeconfig, args[1:]...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", line, err, out)
	}
	return out
}

// uninstallOnFailure leaves the cluster to the next subtest if this one
// fails half-way.
func (c *cluster) uninstallOnFailure(t *testing.T, release, namespace string) {
	t.Cleanup(func() {
		if t.Failed() {
			_, _ = helmAt(t, repoRoot, c.kubeconfig, "uninstall", release, "-n", namespace, "--ignore-not-found")
		}
	})
}

// installed returns the release's manifest as helm recorded it.
func (c *cluster) installed(t *testing.T) manifest {
	t.Helper()
	return decodeAll(t, c.run(t, "helm get manifest endpoint-policy -n endpoint-policy"))
}

// live reads u from the API server.
func (c *cluster) live(t *testing.T, u *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	t.Helper()
	got := &unstructured.Unstructured{}
	got.SetGroupVersionKind(u.GroupVersionKind())
	err := c.k8s.Get(context.Background(), client.ObjectKeyFromObject(u), got)
	return got, err
}

func (c *cluster) get(t *testing.T, key client.ObjectKey, obj client.Object) {
	t.Helper()
	if err := c.k8s.Get(context.Background(), key, obj); err != nil {
		t.Fatalf("get %T %s: %v", obj, key, err)
	}
}

// The chart installs, upgrades and uninstalls cleanly against a real API
// server in both certificate modes, with the README's commands.
func TestInstall(t *testing.T) {
	c := startCluster(t)
	ns := func(name string) client.ObjectKey { return client.ObjectKey{Namespace: namespace, Name: name} }

	t.Run("cert-manager", func(t *testing.T) {
		c.uninstallOnFailure(t, release, namespace)
		notes := c.run(t, installCertManager)
		// NOTES.txt tells how to verify the install.
		for _, want := range []string{
			"kubectl -n endpoint-policy rollout status deployment/endpoint-policy",
			"kubectl -n endpoint-policy get certificate endpoint-policy-serving",
			"--set config.mode=Audit",
		} {
			if !strings.Contains(notes, want) {
				t.Errorf("helm install's notes lack %q:\n%s", want, notes)
			}
		}
		m := c.installed(t)
		c.expectLive(t, m)
		if len(m.ofKind("Certificate")) != 2 || len(m.ofKind("Issuer")) != 2 {
			t.Errorf("installed %v", m.names())
		}
		for _, u := range append(m.ofKind("MutatingWebhookConfiguration"), m.ofKind("ValidatingWebhookConfiguration")...) {
			live, err := c.live(t, u)
			if err != nil {
				t.Fatal(err)
			}
			if got := live.GetAnnotations()["cert-manager.io/inject-ca-from"]; got != namespace+"/"+release+"-serving" {
				t.Errorf("%s: inject-ca-from = %q", u.GetName(), got)
			}
		}

		// A changed policy value reaches the ConfigMap and rolls nothing.
		before := c.generation(t)
		c.run(t, upgradeProbeHost)
		after := c.generation(t)
		if after != before {
			t.Errorf("a policy mode change rolled the Deployment (generation %d -> %d)", before, after)
		}
		if got := c.config(t).Policies[apiserver.ProbeHostID].Mode; got != "Enforce" {
			t.Errorf("apiserver-probe-host mode after upgrade = %s, want Enforce", got)
		}

		// The kube-proxy selectors are built into caches at start: changing
		// them rolls the pods.
		c.run(t, "helm upgrade endpoint-policy ./charts/endpoint-policy -n endpoint-policy --reuse-values "+
			"--set config.policies.kube-proxy-node-deleting.podSelectors[0].matchLabels.app=kube-proxy")
		if c.generation(t) == after {
			t.Errorf("a podSelectors change did not roll the Deployment")
		}

		c.run(t, uninstall)
		c.expectGone(t, m)
	})

	t.Run("self-signed", func(t *testing.T) {
		c.uninstallOnFailure(t, release, namespace)
		c.run(t, installSelfSigned)
		m := c.installed(t)
		c.expectLive(t, m)
		if m.ofKind("Certificate") != nil {
			t.Errorf("cert-manager objects installed: %v", m.names())
		}
		secret := &corev1.Secret{}
		c.get(t, ns(release+"-tls"), secret)
		caBundles := c.caBundles(t)
		for name, bundle := range caBundles {
			if bundle != string(secret.Data["ca.crt"]) {
				t.Errorf("webhook %s does not trust the Secret's CA", name)
			}
		}

		// What the chart installed is what the server needs to run.
		c.serveInstalled(t, secret.Data["ca.crt"])

		// An upgrade keeps the certificate: the Secret is reused, not regenerated.
		c.run(t, upgradeProbeHost)
		again := &corev1.Secret{}
		c.get(t, ns(release+"-tls"), again)
		for _, k := range []string{"ca.crt", "tls.crt", "tls.key"} {
			if string(again.Data[k]) != string(secret.Data[k]) {
				t.Errorf("helm upgrade regenerated %s", k)
			}
		}
		for name, bundle := range c.caBundles(t) {
			if bundle != caBundles[name] {
				t.Errorf("helm upgrade changed webhook %s's caBundle", name)
			}
		}
		if got := c.config(t).Policies[apiserver.ProbeHostID].Mode; got != "Enforce" {
			t.Errorf("apiserver-probe-host mode after upgrade = %s, want Enforce", got)
		}

		c.run(t, uninstall)
		c.expectGone(t, m)
	})

	// The README's rollout: install in Audit, enforce once the reports are clean.
	t.Run("audit first", func(t *testing.T) {
		c.uninstallOnFailure(t, release, namespace)
		c.run(t, installAudit)
		m := c.installed(t)
		if got := c.config(t).Mode; got != "Audit" {
			t.Errorf("config mode = %s, want Audit", got)
		}
		before := c.generation(t)
		c.run(t, upgradeToEnforce)
		if got := c.config(t).Mode; got != "Enforce" {
			t.Errorf("config mode after upgrade = %s, want Enforce", got)
		}
		if after := c.generation(t); after != before {
			t.Errorf("switching to Enforce rolled the Deployment (generation %d -> %d)", before, after)
		}
		c.run(t, uninstall)
		c.expectGone(t, m)
	})

	// Every optional object is accepted by the API server too: the
	// ServiceMonitor and PrometheusRule by prometheus-operator's CRDs
	// (testdata/crds), the dashboard ConfigMap.
	t.Run("optional values", func(t *testing.T) {
		values := writeValues(t, `
certManager: {issuerRef: {name: corp-ca, kind: ClusterIssuer}}
networkPolicy:
  enabled: true
  apiServerPeers: [{ipBlock: {cidr: 10.0.0.0/24}}]
  metricsPeers: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]
imagePullSecrets: [{name: regcred}]
tolerations: [{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}]
hostNetwork: true
webhook: {namespaceSelector: {matchExpressions: [{key: team, operator: NotIn, values: [sandbox]}]}}
serviceMonitor: {enabled: true, interval: 30s, labels: {release: kube-prometheus-stack}}
prometheusRule: {enabled: true, labels: {release: kube-prometheus-stack}}
dashboards: {enabled: true, annotations: {grafana_folder: Kubernetes}}
`)
		c.uninstallOnFailure(t, "ep-options", "options")
		out, err := helmAt(t, repoRoot, c.kubeconfig, "install", "ep-options", "./charts/endpoint-policy",
			"-n", "options", "--create-namespace", "-f", values)
		if err != nil {
			t.Fatalf("install: %v\n%s", err, out)
		}
		d := &appsv1.Deployment{}
		c.get(t, client.ObjectKey{Namespace: "options", Name: "ep-options-endpoint-policy"}, d)
		if s := d.Spec.Template.Spec; !s.HostNetwork || s.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
			t.Errorf("installed with hostNetwork: %v, dnsPolicy %q", s.HostNetwork, s.DNSPolicy)
		}
		for _, gvk := range []schema.GroupVersionKind{
			{Group: "monitoring.coreos.com", Version: "v1", Kind: "PrometheusRule"},
			{Group: "monitoring.coreos.com", Version: "v1", Kind: "ServiceMonitor"},
		} {
			u := &unstructured.Unstructured{}
			u.SetGroupVersionKind(gvk)
			if err := c.k8s.Get(t.Context(), client.ObjectKey{Namespace: "options", Name: "ep-options-endpoint-policy"}, u); err != nil {
				t.Errorf("%s not installed: %v", gvk.Kind, err)
			}
		}
		c.get(t, client.ObjectKey{Namespace: "options", Name: "ep-options-endpoint-policy-dashboard"}, &corev1.ConfigMap{})
		if _, err := helmAt(t, repoRoot, c.kubeconfig, "uninstall", "ep-options", "-n", "options"); err != nil {
			t.Fatalf("uninstall: %v", err)
		}
	})

	// Nothing is left that would intercept requests after uninstalling.
	var mutating admissionregistrationv1.MutatingWebhookConfigurationList
	var validating admissionregistrationv1.ValidatingWebhookConfigurationList
	if err := c.k8s.List(context.Background(), &mutating); err != nil {
		t.Fatal(err)
	}
	if err := c.k8s.List(context.Background(), &validating); err != nil {
		t.Fatal(err)
	}
	if len(mutating.Items)+len(validating.Items) > 0 {
		t.Errorf("webhook configurations left behind: %d mutating, %d validating", len(mutating.Items), len(validating.Items))
	}
	var roles rbacv1.RoleList
	if err := c.k8s.List(context.Background(), &roles, client.InNamespace("kube-system"),
		client.MatchingLabels{"app.kubernetes.io/name": "endpoint-policy"}); err != nil {
		t.Fatal(err)
	}
	if len(roles.Items) > 0 {
		t.Errorf("Roles left in kube-system: %d", len(roles.Items))
	}
}

// generation is the Deployment's: it changes when the pod template does,
// that is when a rollout would restart the pods.
func (c *cluster) generation(t *testing.T) int64 {
	t.Helper()
	d := &appsv1.Deployment{}
	c.get(t, client.ObjectKey{Namespace: namespace, Name: release}, d)
	return d.Generation
}

// expectLive checks that every object of the release exists in the API server.
func (c *cluster) expectLive(t *testing.T, m manifest) {
	t.Helper()
	if len(m) == 0 {
		t.Fatal("the release has no objects")
	}
	for _, u := range m {
		if _, err := c.live(t, u); err != nil {
			t.Errorf("%s %s/%s: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
		}
	}
}

// expectGone checks that uninstalling removed every object of the release.
func (c *cluster) expectGone(t *testing.T, m manifest) {
	t.Helper()
	for _, u := range m {
		if _, err := c.live(t, u); !apierrors.IsNotFound(err) {
			t.Errorf("%s %s/%s left after uninstall (err %v)", u.GetKind(), u.GetNamespace(), u.GetName(), err)
		}
	}
}

// config is the PolicyConfiguration in the installed ConfigMap, as the
// server would load it.
func (c *cluster) config(t *testing.T) *config.PolicyConfiguration {
	t.Helper()
	cm := &corev1.ConfigMap{}
	c.get(t, client.ObjectKey{Namespace: namespace, Name: release + "-config"}, cm)
	cfg, err := config.Parse([]byte(cm.Data["config.yaml"]))
	if err != nil {
		t.Fatalf("the server would refuse the installed configuration: %v", err)
	}
	return cfg
}

// caBundles returns each installed webhook's caBundle by webhook name.
func (c *cluster) caBundles(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	mutating := &admissionregistrationv1.MutatingWebhookConfiguration{}
	c.get(t, client.ObjectKey{Name: release + "-mutating"}, mutating)
	for _, w := range mutating.Webhooks {
		out[w.Name] = string(w.ClientConfig.CABundle)
	}
	validating := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	c.get(t, client.ObjectKey{Name: release + "-validating"}, validating)
	for _, w := range validating.Webhooks {
		out[w.Name] = string(w.ClientConfig.CABundle)
	}
	if len(out) != 6 {
		t.Fatalf("%d webhooks installed, want 6", len(out))
	}
	return out
}

// TestInstallReportCRDs: on a cluster without them, reports.installCRDs
// installs the four report CRDs, as upstream publishes them, which then
// accept a report; uninstalling keeps them (and every tool's reports).
func TestInstallReportCRDs(t *testing.T) {
	c := startClusterWith(t)
	g := gomega.NewWithT(t)
	ctx := t.Context()
	c.uninstallOnFailure(t, release, namespace)
	c.run(t, installSelfSigned+" --set reports.installCRDs=true")
	names := []string{"policyreports.wgpolicyk8s.io", "clusterpolicyreports.wgpolicyk8s.io", "reports.openreports.io", "clusterreports.openreports.io"}
	established := func(name string) func() (bool, error) {
		return func() (bool, error) {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			if err := c.k8s.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
				return false, err
			}
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextensionsv1.Established {
					return cond.Status == apiextensionsv1.ConditionTrue, nil
				}
			}
			return false, nil
		}
	}
	for _, name := range names {
		g.Eventually(established(name), 30*time.Second, 100*time.Millisecond).Should(gomega.BeTrue(), name)
	}
	g.Eventually(func() error {
		report := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "openreports.io/v1alpha1", "kind": "Report",
			"metadata": map[string]any{"name": "probe", "namespace": namespace},
			"source":   "endpoint-policy",
			"summary":  map[string]any{"pass": int64(0), "fail": int64(1), "warn": int64(0), "error": int64(0), "skip": int64(0)},
			"results": []any{map[string]any{"policy": "host-network-endpoint", "result": "fail", "severity": "high",
				"timestamp": map[string]any{"seconds": int64(1), "nanos": int64(0)}}},
		}}
		return c.k8s.Create(ctx, report)
	}, 30*time.Second, 100*time.Millisecond).Should(gomega.Succeed(), "a Report is accepted once the CRD is served")

	c.run(t, uninstall)
	for _, name := range names {
		g.Expect(established(name)()).To(gomega.BeTrue(), "%s kept after uninstall", name)
	}
}
