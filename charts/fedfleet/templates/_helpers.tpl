{{/* Names, labels and the RBAC rules of the fedfleet hub. */}}

{{- define "fedfleet.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fedfleet.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "fedfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fedfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "fedfleet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "fedfleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fedfleet
{{- end -}}

{{/* The labels the operator puts on every aggregator Pod and Service it creates. */}}
{{- define "fedfleet.aggregatorLabels" -}}
app.kubernetes.io/name: fedfleet
app.kubernetes.io/component: aggregator
app.kubernetes.io/managed-by: fedfleet-operator
{{- end -}}

{{- define "fedfleet.serviceAccountName" -}}
{{- default (include "fedfleet.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* repository:tag, pinned to a digest when image.digest is set (then the digest is what runs). */}}
{{- define "fedfleet.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- with .Values.image.digest }}@{{ . }}{{ end -}}
{{- end -}}

{{- define "fedfleet.peering" -}}
{{- gt (int .Values.replicas) 1 -}}
{{- end -}}

{{/*
What the operator does inside a namespace it acts in. Every verb is one the operator's code or
kopf calls (tests/charts/test_rbac.py checks this against the requests of the end-to-end tests):
kopf lists, watches and patches (finalizer, progress annotations) the watched resources, keeps
an index of the trainings' pods from a watch, and posts Events; the reconciler reads trainings
and pods from those watches, writes the trainings' and rounds' status, creates what is missing
(create only: a conflict means it exists) — the manifest ConfigMaps, the aggregator Service,
Pod, NetworkPolicy and state claim, the rounds (read back on a conflict or after a restart) and the client
pods — deletes failed pods and replaced rounds, and annotates a client pod it gives up on; it
issues each training's CA and the pods' certificates as Secrets (listed by label, replaced
when they rotate, deleted with the training) and reads a user's issuer Secret.
*/}}
{{- define "fedfleet.namespacedRules" -}}
- apiGroups: [fedfleet.io]
  resources: [federatedtrainings]
  verbs: [get, list, watch, patch]
- apiGroups: [fedfleet.io]
  resources: [federatedtrainings/status, federatedrounds/status, federationsites/status]
  verbs: [patch]
- apiGroups: [fedfleet.io]
  resources: [federatedrounds]
  verbs: [create, get, list, delete]
- apiGroups: [fedfleet.io]
  resources: [federationsites]
  verbs: [list, watch, patch]
- apiGroups: [""]
  resources: [pods]
  verbs: [create, list, watch, patch, delete]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [create, list, delete]
- apiGroups: [""]
  resources: [secrets]
  verbs: [create, get, list, update, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [create]
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [create, get, delete]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [create]
{{- end -}}

{{/* Cluster-scoped: kopf's scan of the CRDs, a site's namespace (does it exist), the platform's pod defaults, access reviews. */}}
{{- define "fedfleet.clusterRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [namespaces]
  verbs: [get]
# the platform's pod defaults: one cluster-scoped ClusterPodTemplate, kept in kopf's index
- apiGroups: [fedfleet.io]
  resources: [clusterpodtemplates]
  verbs: [list, watch]
# may the operator create a site's pods (its READY); Kubernetes' system:basic-user grants it
# to every authenticated identity too, named here so the chart says what the operator does
- apiGroups: [authorization.k8s.io]
  resources: [selfsubjectaccessreviews]
  verbs: [create]
{{- end -}}

{{/* kopf peering (leader election) when replicas > 1. */}}
{{- define "fedfleet.peeringRules" -}}
- apiGroups: [kopf.dev]
  resources: [{{ if .Values.namespaces }}kopfpeerings{{ else }}clusterkopfpeerings{{ end }}]
  verbs: [get, list, watch, patch]
{{- end -}}
