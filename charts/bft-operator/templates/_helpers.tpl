{{/* The name of every object of the release: the release name when it already says bft-operator. */}}
{{- define "bft-operator.fullname" -}}
{{- if contains "bft-operator" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-bft-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The labels the Deployment selects its pods by, and the Service and ServiceMonitor theirs. */}}
{{- define "bft-operator.selectorLabels" -}}
app.kubernetes.io/name: bft-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The labels of every object. */}}
{{- define "bft-operator.labels" -}}
{{ include "bft-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The namespace whose ByzantineClusters are managed when rbac.clusterWide is false. */}}
{{- define "bft-operator.watchNamespace" -}}
{{- .Values.watchNamespace | default .Release.Namespace -}}
{{- end -}}
