{{/* The chart name, truncated to the 63 characters a label value allows. */}}
{{- define "lro-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name of the release's objects. */}}
{{- define "lro-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lro-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lro-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lro-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "lro-operator.labels" -}}
helm.sh/chart: {{ include "lro-operator.chart" . }}
{{ include "lro-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "lro-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lro-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "lro-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The webhook's Service (also the DNS name in its serving certificate). */}}
{{- define "lro-operator.webhookServiceName" -}}
{{- printf "%s-webhook" (include "lro-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The kubernetes.io/tls Secret holding the webhook's serving certificate (and ca.crt). */}}
{{- define "lro-operator.webhookSecretName" -}}
{{- printf "%s-webhook-tls" (include "lro-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The cert-manager Certificate (and self-signed Issuer) of the webhook. */}}
{{- define "lro-operator.webhookCertificateName" -}}
{{- printf "%s-webhook" (include "lro-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The DNS names the webhook's serving certificate is valid for, as a list. */}}
{{- define "lro-operator.webhookDNSNames" -}}
{{- $svc := include "lro-operator.webhookServiceName" . }}
{{- $ns := .Release.Namespace -}}
- {{ $svc }}
- {{ $svc }}.{{ $ns }}
- {{ $svc }}.{{ $ns }}.svc
- {{ $svc }}.{{ $ns }}.svc.cluster.local
{{- end }}

{{/* The leader-election Lease: leaseName, or lro-operator-<shard> for a shard left at the default. */}}
{{- define "lro-operator.leaseName" -}}
{{- $name := .Values.operator.leaderElection.leaseName -}}
{{- if and .Values.operator.shard (eq $name "lro-operator") -}}
{{- printf "%s-%s" $name .Values.operator.shard -}}
{{- else -}}
{{- $name -}}
{{- end -}}
{{- end }}

{{/* The metrics Service: also the `job` label the chart's ServiceMonitor gives its targets. */}}
{{- define "lro-operator.metricsServiceName" -}}
{{- printf "%s-metrics" (include "lro-operator.fullname" .) }}
{{- end }}

{{/* The PromQL label matchers of the operator's scrape targets: job and namespace. */}}
{{- define "lro-operator.alertSelector" -}}
{{- $job := .Values.monitoring.prometheusRule.job | default (include "lro-operator.metricsServiceName" .) -}}
{{- printf "job=%q, namespace=%q" $job .Release.Namespace -}}
{{- end }}
