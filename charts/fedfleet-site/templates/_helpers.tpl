{{/* Names and labels of one fedfleet site. */}}

{{- define "site.fullname" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "site.name" -}}
{{- default .Release.Name .Values.site.name -}}
{{- end -}}

{{- define "site.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fedfleet
fedfleet.io/site: {{ include "site.name" . }}
{{- end -}}

{{- define "site.claim" -}}
{{- if .Values.data.existingClaim -}}
{{- .Values.data.existingClaim -}}
{{- else if .Values.data.create -}}
{{- include "site.fullname" . }}-data
{{- end -}}
{{- end -}}

{{- define "site.queueName" -}}
{{- default .Release.Name .Values.kueue.queueName -}}
{{- end -}}

{{/* The labels of the client pods the operator starts here (controller/resources.py). */}}
{{- define "site.clientPodLabels" -}}
app.kubernetes.io/name: fedfleet
app.kubernetes.io/component: client
{{- end -}}
