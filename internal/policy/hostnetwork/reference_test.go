package hostnetwork_test

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
)

// configMaps is a front-end's knowledge of the endpoint ConfigMaps: listed
// ones, with their ConfigMap (nil: not loaded).
type configMaps map[types.NamespacedName]*corev1.ConfigMap

func (c configMaps) ConfigMap(namespace, name string) (*corev1.ConfigMap, policy.Knowledge) {
	cm, listed := c[types.NamespacedName{Namespace: namespace, Name: name}]
	switch {
	case !listed:
		return nil, policy.NotListed
	case cm == nil:
		return nil, policy.Unknown
	}
	return cm, policy.Known
}

func (c configMaps) Listed(namespace, name string) bool {
	_, ok := c[types.NamespacedName{Namespace: namespace, Name: name}]
	return ok
}

// refCluster is check's kind of front-end: ConfigMaps, no agent reports.
type refCluster struct{ configMaps }

func (refCluster) Node(string) (*corev1.Node, bool)     { return nil, false }
func (refCluster) APIServerPods() ([]*corev1.Pod, bool) { return nil, true }

// agentRefCluster has the agents' reports too (admission's, the audit's).
type agentRefCluster struct {
	agentCluster
	configMaps
}

func endpointConfigMap(namespace, name string, data map[string]string) configMaps {
	return configMaps{{Namespace: namespace, Name: name}: {ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}, Data: data}}
}

// ciliumHostRef is what Cilium's chart renders for the agent with
// k8sServiceHostRef {name: api-endpoint, key: host} (install/kubernetes/
// cilium/templates/cilium-agent/daemonset.yaml, v1.18): the host from the
// ConfigMap, the port a value.
func ciliumHostRef(name, key string) []corev1.EnvVar {
	return []corev1.EnvVar{
		{Name: hostnetwork.EnvHost, ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: key}}},
		{Name: hostnetwork.EnvPort, Value: "6443"},
	}
}

// calicoEnvFrom is calico-node's envFrom in Calico's manifest install
// (manifests/calico.yaml, v3.31): the ConfigMap is optional.
var calicoEnvFrom = []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{
	LocalObjectReference: corev1.LocalObjectReference{Name: "kubernetes-services-endpoint"}, Optional: new(true)}}}

func TestRuleReferences(t *testing.T) {
	def := hostnetwork.DefaultSettings()
	always := hostnetwork.DefaultSettings()
	always.Override = hostnetwork.OverrideAlways
	preserve := hostnetwork.DefaultSettings()
	preserve.Preserve = []string{"10.0.0.100"}
	apiEndpoint := func(host string) configMaps {
		return endpointConfigMap("kube-system", "api-endpoint", map[string]string{"host": host})
	}
	calico := func(host string) configMaps {
		return endpointConfigMap("kube-system", "kubernetes-services-endpoint", map[string]string{"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": "6443"})
	}
	secret := []corev1.EnvVar{{Name: hostnetwork.EnvHost, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: "api"}, Key: "host"}}}}
	tests := []struct {
		name     string
		settings hostnetwork.Settings
		env      []corev1.EnvVar
		envFrom  []corev1.EnvFromSource
		cluster  policy.Cluster
		// want is the one finding's field and a part of its message; ""
		// for none.
		wantField, want string
		wantPatch       bool
	}{
		{name: "configMapKeyRef to a node's address", settings: def, env: ciliumHostRef("api-endpoint", "host"), cluster: refCluster{apiEndpoint("10.0.0.11")},
			wantField: "spec.containers[0].env[0].valueFrom.configMapKeyRef",
			want: `KUBERNETES_SERVICE_HOST of container "c" comes from ConfigMap kube-system/api-endpoint key "host" = 10.0.0.11: not the node-local endpoint: ` +
				"set it to localhost:7443 there, where the node agent verifies it on every node its pods run on"},
		{name: "configMapKeyRef to a DNS name", settings: def, env: ciliumHostRef("api-endpoint", "host"), cluster: refCluster{apiEndpoint("api.example.com")},
			wantField: "spec.containers[0].env[0].valueFrom.configMapKeyRef", want: `= api.example.com: not the node-local endpoint`},
		{name: "configMapKeyRef already the node-local host", settings: def, env: ciliumHostRef("api-endpoint", "host"), cluster: refCluster{apiEndpoint("localhost")}},
		{name: "configMapKeyRef to a preserved VIP", settings: preserve, env: ciliumHostRef("api-endpoint", "host"), cluster: refCluster{apiEndpoint("10.0.0.100")}},
		{name: "configMapKeyRef without ConfigMaps: no verdict", settings: def, env: ciliumHostRef("api-endpoint", "host"), cluster: agentCluster{}},
		{name: "configMapKeyRef to a ConfigMap not loaded: no verdict", settings: def, env: ciliumHostRef("api-endpoint", "host"),
			cluster: refCluster{configMaps{{Namespace: "kube-system", Name: "api-endpoint"}: nil}}},
		{name: "configMapKeyRef to a key the ConfigMap lacks: no verdict", settings: def, env: ciliumHostRef("api-endpoint", "server"), cluster: refCluster{apiEndpoint("10.0.0.11")}},
		{name: "configMapKeyRef to a ConfigMap not listed", settings: def, env: ciliumHostRef("other", "host"), cluster: refCluster{apiEndpoint("10.0.0.11")},
			wantField: "spec.containers[0].env[0].valueFrom.configMapKeyRef",
			want:      `comes from ConfigMap kube-system/other key "host": the server may not read that ConfigMap, so it was not judged: add "kube-system/other" to endpointConfigMaps`},
		{name: "configMapKeyRef rewritten as a value by Always", settings: always, env: ciliumHostRef("api-endpoint", "host"), cluster: refCluster{apiEndpoint("10.0.0.11")},
			wantField: "spec.containers[0].env", want: "set KUBERNETES_SERVICE_HOST=localhost", wantPatch: true},
		{name: "secretKeyRef: never read", settings: def, env: secret, cluster: refCluster{apiEndpoint("10.0.0.11")},
			wantField: "spec.containers[0].env[0].valueFrom.secretKeyRef", want: `comes from Secret kube-system/api key "host": Secrets are never read, so it was not judged`},
		{name: "envFrom Secret with a prefix that can produce the name", settings: def, cluster: refCluster{},
			envFrom:   []corev1.EnvFromSource{{Prefix: "KUBERNETES_", SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "api"}}}},
			wantField: "spec.containers[0].envFrom[0]", want: `comes from Secret kube-system/api (envFrom, prefix "KUBERNETES_")`},
		{name: "an unprefixed envFrom Secret: unknown, most carry an application's settings", settings: def, cluster: refCluster{},
			envFrom: []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "app-credentials"}}}}},
		{name: "an unprefixed envFrom of a ConfigMap not listed: unknown", settings: def, cluster: refCluster{},
			envFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "app-settings"}}}}},
		{name: "envFrom of a ConfigMap not listed, with a prefix aimed at the variable", settings: def, cluster: refCluster{},
			envFrom:   []corev1.EnvFromSource{{Prefix: "KUBERNETES_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "api"}}}},
			wantField: "spec.containers[0].envFrom[0]", want: `comes from ConfigMap kube-system/api key "SERVICE_HOST": the server may not read that ConfigMap`},
		{name: "Calico envFrom to a node's address", settings: def, envFrom: calicoEnvFrom, cluster: refCluster{calico("10.0.0.11")},
			wantField: "spec.containers[0].envFrom[0]", want: `comes from ConfigMap kube-system/kubernetes-services-endpoint key "KUBERNETES_SERVICE_HOST" = 10.0.0.11`},
		{name: "Calico envFrom already localhost", settings: def, envFrom: calicoEnvFrom, cluster: refCluster{calico("localhost")}},
		{name: "Calico envFrom, the ConfigMap absent from the files: no verdict", settings: def, envFrom: calicoEnvFrom,
			cluster: refCluster{configMaps{{Namespace: "kube-system", Name: "kubernetes-services-endpoint"}: nil}}},
		{name: "envFrom with a prefix: the key without it", settings: def, cluster: refCluster{endpointConfigMap("kube-system", "ep", map[string]string{"SERVICE_HOST": "10.0.0.11"})},
			envFrom:   []corev1.EnvFromSource{{Prefix: "KUBERNETES_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "ep"}}}},
			wantField: "spec.containers[0].envFrom[0]", want: `ConfigMap kube-system/ep key "SERVICE_HOST" = 10.0.0.11`},
		{name: "the last envFrom source with the key wins", settings: def,
			cluster: refCluster{configMaps{
				{Namespace: "kube-system", Name: "a"}: {Data: map[string]string{"KUBERNETES_SERVICE_HOST": "localhost"}},
				{Namespace: "kube-system", Name: "b"}: {Data: map[string]string{"OTHER": "x"}},
			}},
			envFrom: []corev1.EnvFromSource{
				{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "a"}}},
				{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "b"}}},
			}},
		{name: "an env value beside the reference wins", settings: def, env: env(hostnetwork.EnvHost, "localhost"), envFrom: calicoEnvFrom, cluster: refCluster{calico("10.0.0.11")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rule, err := hostnetwork.New(tt.settings)
			if err != nil {
				t.Fatal(err)
			}
			pod := hostNetworkPod(tt.env)
			pod.Spec.Containers[0].EnvFrom = tt.envFrom
			findings, applies := rule.Evaluate(policy.Target{Object: pod, Cluster: tt.cluster})
			if !applies {
				t.Fatal("rule does not apply to a hostNetwork pod")
			}
			if tt.want == "" {
				if len(findings) != 0 {
					t.Fatalf("want no finding, got %v", findings)
				}
				return
			}
			if len(findings) != 1 {
				t.Fatalf("want 1 finding, got %v", findings)
			}
			f := findings[0]
			if got := f.Field.String(); got != tt.wantField {
				t.Errorf("field = %s, want %s", got, tt.wantField)
			}
			if !strings.Contains(f.Message, tt.want) {
				t.Errorf("message %q does not contain %q", f.Message, tt.want)
			}
			if got := len(f.Patch) > 0; got != tt.wantPatch {
				t.Errorf("patch = %v, want %v", f.Patch, tt.wantPatch)
			}
			res := policy.Result{Policy: hostnetwork.ID, Mode: policy.Enforce, Findings: findings}
			wantAction := policy.ActionWarn
			if tt.wantPatch {
				wantAction = policy.ActionMutate
			} else if f.Rule != hostnetwork.RuleServiceHostReference || !f.Advisory {
				t.Errorf("rule %q advisory %v, want %q advisory", f.Rule, f.Advisory, hostnetwork.RuleServiceHostReference)
			}
			if got := res.Action(true); got != wantAction {
				t.Errorf("action in Enforce = %s, want %s", got, wantAction)
			}
		})
	}
}

// TestRuleReferenceVerified: where the agents verified the node-local
// endpoint on every node the pods can run on, the finding says so; where
// they did not, it says what is missing.
func TestRuleReferenceVerified(t *testing.T) {
	rule, err := hostnetwork.New(hostnetwork.DefaultSettings())
	if err != nil {
		t.Fatal(err)
	}
	cl := agentRefCluster{testNodes(t, true), endpointConfigMap("kube-system", "api-endpoint", map[string]string{"host": "10.0.0.11"})}
	for _, tt := range []struct {
		name  string
		shape podShape
		want  string
	}{
		{name: "pool a: 2 nodes verified", shape: selecting("pool", "a"), want: "set it to localhost:7443 there: verified on all 2 nodes its pods can run on"},
		{name: "one node", shape: bound("w-1"), want: "set it to localhost:7443 there: verified on all 1 node its pods can run on"},
		{name: "pool b: not verified", shape: selecting("pool", "b"),
			want: "set it to localhost:7443 there, once the node agent verifies it on every node its pods run on (localhost:7443 is not verified on node(s) w-3, w-4"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pod := hostNetworkPod(ciliumHostRef("api-endpoint", "host"))
			tt.shape(pod)
			findings, _ := rule.Evaluate(policy.Target{Object: pod, Cluster: cl})
			if len(findings) != 1 || !strings.Contains(findings[0].Message, tt.want) {
				t.Fatalf("want one finding saying %q, got %v", tt.want, findings)
			}
		})
	}
}

// TestRuleReferenceTemplates: Cilium's DaemonSet, rendered with
// k8sServiceHostRef, is judged by the ConfigMap's value; a pod-network
// workload reading the same key is not the policy's.
func TestRuleReferenceTemplates(t *testing.T) {
	rule, err := hostnetwork.New(hostnetwork.DefaultSettings())
	if err != nil {
		t.Fatal(err)
	}
	ds := func(hostNetwork bool) *appsv1.DaemonSet {
		return &appsv1.DaemonSet{
			TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "DaemonSet"},
			ObjectMeta: metav1.ObjectMeta{Name: "cilium", Namespace: "kube-system"},
			Spec: appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{HostNetwork: hostNetwork,
				Containers: []corev1.Container{{Name: "cilium-agent", Image: "quay.io/cilium/cilium:v1.18.4", Env: ciliumHostRef("api-endpoint", "host")}}}}},
		}
	}
	cl := refCluster{endpointConfigMap("kube-system", "api-endpoint", map[string]string{"host": "10.0.0.11"})}
	findings, applies := rule.Evaluate(policy.Target{Object: ds(true), Cluster: cl})
	if !applies || len(findings) != 1 || !findings[0].Advisory ||
		findings[0].Field.String() != "spec.template.spec.containers[0].env[0].valueFrom.configMapKeyRef" ||
		!strings.Contains(findings[0].Message, `container "cilium-agent" comes from ConfigMap kube-system/api-endpoint key "host" = 10.0.0.11`) {
		t.Fatalf("hostNetwork DaemonSet: got %v (applies %v)", findings, applies)
	}
	if findings, applies := rule.Evaluate(policy.Target{Object: ds(false), Cluster: cl}); applies || len(findings) > 0 {
		t.Fatalf("pod-network DaemonSet: got %v (applies %v)", findings, applies)
	}
}
