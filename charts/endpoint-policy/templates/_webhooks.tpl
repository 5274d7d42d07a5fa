{{/*
The two webhook configurations, rendered into the cluster by webhook.yaml and,
as the server's reference for drift detection, into the -webhooks ConfigMap
(configmap.yaml). Argument: (dict "root" $ "caBundle" "<base64 PEM or empty>").
*/}}
{{- define "endpoint-policy.webhookConfigurations" -}}
{{- $root := .root }}
{{- $caBundle := .caBundle }}
{{- $fp := $root.Values.webhook.failurePolicy }}
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: {{ include "endpoint-policy.fullname" $root }}-mutating
  labels:
    {{- include "endpoint-policy.labels" $root | nindent 4 }}
    # AKS's Admissions Enforcer adds a kube-system exclusion to every
    # webhook's namespaceSelector unless this is set: the kube-system
    # hostNetwork pods are the ones this webhook is for.
    admissions.enforcer/disabled: "true"
  {{- with include "endpoint-policy.webhookAnnotations" $root }}
  {{- . | nindent 2 }}
  {{- end }}
webhooks:
  # host-network-endpoint and kube-proxy-node-deleting. Only hostNetwork pods
  # and pods created bound to a node are sent (see config/webhook/manifests.yaml).
  - name: mutate-pods.endpoint-policy.io
    {{- include "endpoint-policy.webhookCommon" (dict "root" $root "path" "/mutate-v1-pod" "failurePolicy" $fp.mutatePods "caBundle" $caBundle) | nindent 4 }}
    sideEffects: None
    reinvocationPolicy: IfNeeded
    rules:
      - apiGroups: [""]
        apiVersions: ["v1"]
        operations: ["CREATE"]
        resources: ["pods"]
        scope: Namespaced
    matchConditions:
      - name: host-network-or-bound
        expression: "(has(object.spec.hostNetwork) && object.spec.hostNetwork) || (has(object.spec.nodeName) && object.spec.nodeName != '')"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: {{ include "endpoint-policy.fullname" $root }}-validating
  labels:
    {{- include "endpoint-policy.labels" $root | nindent 4 }}
    # AKS's Admissions Enforcer adds a kube-system exclusion to every
    # webhook's namespaceSelector unless this is set: the kube-system
    # hostNetwork pods are the ones this webhook is for.
    admissions.enforcer/disabled: "true"
  {{- with include "endpoint-policy.webhookAnnotations" $root }}
  {{- . | nindent 2 }}
  {{- end }}
webhooks:
  # The validating policies on control-plane pods, on workloads' pod
  # templates, and on kube-system/kubeadm-config.
  - name: validate-pods.endpoint-policy.io
    {{- include "endpoint-policy.webhookCommon" (dict "root" $root "path" "/validate-workloads" "failurePolicy" $fp.validatePods "caBundle" $caBundle) | nindent 4 }}
    # Events are recorded on mirror pods and controllers' pods, never on dry runs.
    sideEffects: NoneOnDryRun
    rules:
      - apiGroups: [""]
        apiVersions: ["v1"]
        operations: ["CREATE"]
        resources: ["pods"]
        scope: Namespaced
    matchConditions:
      - name: control-plane-component
        expression: {{ include "endpoint-policy.controlPlaneComponent" "object.spec" | quote }}
  - name: validate-workloads.endpoint-policy.io
    {{- include "endpoint-policy.webhookCommon" (dict "root" $root "path" "/validate-workloads" "failurePolicy" $fp.validateWorkloads "caBundle" $caBundle) | nindent 4 }}
    sideEffects: NoneOnDryRun
    rules:
      - apiGroups: ["apps"]
        apiVersions: ["v1"]
        operations: ["CREATE", "UPDATE"]
        resources: ["deployments", "statefulsets", "daemonsets", "replicasets"]
        scope: Namespaced
      - apiGroups: ["batch"]
        apiVersions: ["v1"]
        operations: ["CREATE", "UPDATE"]
        resources: ["jobs"]
        scope: Namespaced
    # Control-plane components, and while the webhook fails open (the
    # default) the hostNetwork templates whose API endpoint it judges (a CNI's
    # DaemonSet with a reference or a pinned address: a warning). Failing
    # closed, it leaves the CNI's workloads alone: a webhook that cannot be
    # reached while the CNI is down must not block the CNI's fix. The audit
    # reports them either way.
    matchConditions:
      - name: control-plane-component
        {{- $expr := include "endpoint-policy.controlPlaneComponent" "object.spec.template.spec" }}
        {{- if eq $fp.validateWorkloads "Ignore" }}
        {{- $expr = printf "%s || %s" $expr (include "endpoint-policy.hostNetworkEndpoint" "object.spec.template.spec") }}
        {{- end }}
        expression: {{ $expr | quote }}
  - name: validate-cronjobs.endpoint-policy.io
    {{- include "endpoint-policy.webhookCommon" (dict "root" $root "path" "/validate-workloads" "failurePolicy" $fp.validateCronJobs "caBundle" $caBundle) | nindent 4 }}
    sideEffects: NoneOnDryRun
    rules:
      - apiGroups: ["batch"]
        apiVersions: ["v1"]
        operations: ["CREATE", "UPDATE"]
        resources: ["cronjobs"]
        scope: Namespaced
    matchConditions:
      - name: control-plane-component
        expression: {{ include "endpoint-policy.controlPlaneComponent" "object.spec.jobTemplate.spec.template.spec" | quote }}
  # control-plane-endpoint's ConfigMaps besides kubeadm-config: the discovery
  # kubeconfig and kube-proxy's, and config.endpointConfigMaps (where CNIs
  # keep the API endpoint: a warning, never a denial, in the default Audit).
  # Written by kubeadm mid-init and mid-upgrade, and by CNI installers: it
  # fails open.
  - name: validate-cluster-configmaps.endpoint-policy.io
    {{- include "endpoint-policy.webhookCommon" (dict "root" $root "path" "/validate-configmaps" "failurePolicy" $fp.validateClusterConfigMaps "caBundle" $caBundle) | nindent 4 }}
    sideEffects: None
    rules:
      - apiGroups: [""]
        apiVersions: ["v1"]
        operations: ["CREATE", "UPDATE"]
        resources: ["configmaps"]
        scope: Namespaced
    matchConditions:
      - name: cluster-configmaps
        expression: {{ include "endpoint-policy.clusterConfigMapsCondition" $root | quote }}
  # Narrowed to the one ConfigMap, so it may fail closed.
  - name: validate-kubeadm-config.endpoint-policy.io
    {{- include "endpoint-policy.webhookCommon" (dict "root" $root "path" "/validate-kubeadm-config" "failurePolicy" $fp.validateKubeadmConfig "caBundle" $caBundle) | nindent 4 }}
    sideEffects: None
    rules:
      - apiGroups: [""]
        apiVersions: ["v1"]
        operations: ["CREATE", "UPDATE"]
        resources: ["configmaps"]
        scope: Namespaced
    matchConditions:
      - name: kubeadm-config
        expression: "request.namespace == 'kube-system' && request.name == 'kubeadm-config'"
{{- end }}

{{/*
The CEL condition of the cluster ConfigMaps webhook: cluster-info,
kube-proxy, and each of config.endpointConfigMaps.
*/}}
{{- define "endpoint-policy.clusterConfigMapsCondition" -}}
{{- $terms := list "(request.namespace == 'kube-public' && request.name == 'cluster-info')" "(request.namespace == 'kube-system' && request.name == 'kube-proxy')" -}}
{{- range .Values.config.endpointConfigMaps -}}
{{- $parts := splitList "/" . -}}
{{- $terms = append $terms (printf "(request.namespace == '%s' && request.name == '%s')" (index $parts 0) (index $parts 1)) -}}
{{- end -}}
{{- join " || " $terms -}}
{{- end }}
