{{/* The release's full name, at most 63 characters (a DNS label). */}}
{{- define "cadre.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "cadre.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "cadre.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "cadre.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "cadre.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "cadre.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "cadre.sandboxImage" -}}
{{- printf "%s:%s" .Values.sandboxImage.repository (default .Chart.AppVersion .Values.sandboxImage.tag) -}}
{{- end -}}

{{/* What the operator does in a namespace it serves (a ClusterRole's or a Role's rules). */}}
{{- define "cadre.rules" -}}
- apiGroups: [cadre.dev]
  resources: [agents, teams, tasks]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [cadre.dev]
  resources: [agents/status, teams/status, tasks/status, policies/status]
  verbs: [get, update, patch]
# Policies: read (each harness decides its tool calls by them; the operator reports which
# Agents each selects).
- apiGroups: [cadre.dev]
  resources: [policies]
  verbs: [get, list, watch]
# Harness StatefulSets and their Services; sandbox pods, Services, workspaces, token Secrets,
# NetworkPolicies; memory ConfigMaps; the harness's ServiceAccount and its Role (which grants
# only what this role already holds, as RBAC requires).
- apiGroups: [""]
  resources: [pods, services, serviceaccounts, secrets, configmaps, persistentvolumeclaims]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [apps]
  resources: [statefulsets]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [get, create, patch]
{{- end -}}

{{- define "cadre.consoleSelectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: console
{{- end -}}

{{/* What the console may do where it looks: read what it shows; answer approvals (a spec
patch of Tasks) only with console.approvals; read memory ConfigMaps and harness transcripts
(pods/proxy) only with console.memory / console.transcripts. */}}
{{- define "cadre.consoleRules" -}}
- apiGroups: [cadre.dev]
  resources: [agents, teams, tasks]
  verbs: [get, list, watch]
{{- if .Values.console.approvals }}
- apiGroups: [cadre.dev]
  resources: [tasks]
  verbs: [patch]
{{- end }}
{{- if .Values.console.memory }}
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get]
{{- end }}
{{- if .Values.console.transcripts }}
- apiGroups: [""]
  resources: [pods/proxy]
  verbs: [get]
{{- end }}
{{- end -}}
