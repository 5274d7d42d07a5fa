{{/* Chart name, for the app.kubernetes.io/name label. */}}
{{- define "endpoint-policy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every resource name. Leaves room for the longest suffix ("-validating")
within 63 characters.
*/}}
{{- define "endpoint-policy.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "endpoint-policy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "endpoint-policy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "endpoint-policy.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "endpoint-policy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "endpoint-policy.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The webhook Service, and the names its serving certificate must hold. */}}
{{- define "endpoint-policy.serviceName" -}}
{{ include "endpoint-policy.fullname" . }}-webhook
{{- end }}

{{- define "endpoint-policy.dnsNames" -}}
{{- $svc := include "endpoint-policy.serviceName" . -}}
{{- $ns := .Release.Namespace -}}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | toJson }}
{{- end }}

{{/* The Secret holding tls.crt, tls.key and ca.crt, mounted as --cert-dir. */}}
{{- define "endpoint-policy.servingSecretName" -}}
{{ include "endpoint-policy.fullname" . }}-tls
{{- end }}

{{- define "endpoint-policy.servingCertificateName" -}}
{{ include "endpoint-policy.fullname" . }}-serving
{{- end }}

{{/*
The pods a webhook call is about: they run kube-apiserver, kube-vip or
kube-proxy. The argument is the CEL path of the pod spec.
*/}}
{{/*
A hostNetwork pod template whose containers take KUBERNETES_SERVICE_HOST from
env (a value or a reference) or may from envFrom: host-network-endpoint
judges its endpoint, by reference too (Cilium's k8sServiceHostRef, Calico's
kubernetes-services-endpoint). Argument: the pod spec's CEL path.
*/}}
{{- define "endpoint-policy.hostNetworkEndpoint" -}}
(has({{ . }}.hostNetwork) && {{ . }}.hostNetwork && ({{ . }}.containers + (has({{ . }}.initContainers) ? {{ . }}.initContainers : [])).exists(c, has(c.envFrom) || (has(c.env) && c.env.exists(e, e.name == 'KUBERNETES_SERVICE_HOST'))))
{{- end }}

{{- define "endpoint-policy.controlPlaneComponent" -}}
{{ . }}.containers.exists(c, c.name == 'kube-apiserver' || (has(c.image) && c.image.contains('kube-vip')) || (has(c.command) && size(c.command) > 0 && c.command[0].endsWith('kube-apiserver')) || (has(c.args) && size(c.args) > 0 && c.args[0].endsWith('kube-apiserver')) || c.name == 'kube-proxy' || (has(c.command) && size(c.command) > 0 && c.command[0].endsWith('kube-proxy')) || (has(c.args) && size(c.args) > 0 && c.args[0].endsWith('kube-proxy')))
{{- end }}

{{/*
What every webhook shares: the Service, the selectors that keep the release
namespace, kube-node-lease and opted-out objects out, the timeout.
Argument: (dict "root" $ "path" "/mutate-v1-pod" "failurePolicy" "Ignore").
*/}}
{{- define "endpoint-policy.webhookCommon" -}}
{{- $root := .root -}}
admissionReviewVersions: ["v1"]
clientConfig:
  service:
    name: {{ include "endpoint-policy.serviceName" $root }}
    namespace: {{ $root.Release.Namespace }}
    path: {{ .path }}
  {{- if not $root.Values.certManager.enabled }}
  caBundle: {{ .caBundle }}
  {{- end }}
failurePolicy: {{ .failurePolicy }}
timeoutSeconds: {{ $root.Values.webhook.timeoutSeconds }}
namespaceSelector:
  matchExpressions:
    - key: endpoint-policy.io/exclude
      operator: NotIn
      values: ["true"]
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values: ["kube-node-lease", {{ $root.Release.Namespace | quote }}]
    {{- with $root.Values.webhook.namespaceSelector.matchExpressions }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
objectSelector:
  matchExpressions:
    - key: endpoint-policy.io/exclude
      operator: NotIn
      values: ["true"]
{{- end }}

{{- define "endpoint-policy.webhookAnnotations" -}}
{{- if .Values.certManager.enabled -}}
annotations:
  cert-manager.io/inject-ca-from: {{ printf "%s/%s" .Release.Namespace (include "endpoint-policy.servingCertificateName" .) }}
{{- end }}
{{- end }}
