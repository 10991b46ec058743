{{/* Names and labels shared by every template. */}}

{{- define "vectorschema.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: the release name, with the chart name unless it contains it. */}}
{{- define "vectorschema.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "vectorschema.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "vectorschema.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "vectorschema.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vectorschema.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "vectorschema.labels" -}}
{{ include "vectorschema.selectorLabels" . }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: vectorschema
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The shards: a list of {index, name, peering} dicts, one Deployment each. */}}
{{- define "vectorschema.shards" -}}
{{- $count := int .Values.shards.count -}}
{{- if lt $count 1 -}}{{- fail "shards.count must be 1 or more" -}}{{- end -}}
{{- $full := include "vectorschema.fullname" . -}}
{{- $peering := default $full .Values.peering.name -}}
{{- $shards := list -}}
{{- range $i := until $count -}}
{{- if eq $count 1 -}}
{{- $shards = append $shards (dict "index" $i "name" $full "peering" $peering) -}}
{{- else -}}
{{- $shards = append $shards (dict "index" $i "name" (printf "%s-shard-%d" $full $i) "peering" (printf "%s-shard-%d" $peering $i)) -}}
{{- end -}}
{{- end -}}
{{- toJson (dict "items" $shards) -}}
{{- end -}}

{{/* Where the webhook's certificate comes from: cert-manager or helm. */}}
{{- define "vectorschema.webhookCertificates" -}}
{{- $mode := .Values.webhook.certificates -}}
{{- if not (has $mode (list "auto" "cert-manager" "helm")) -}}
{{- fail "webhook.certificates must be auto, cert-manager or helm" -}}
{{- end -}}
{{- if eq $mode "auto" -}}
{{- if .Capabilities.APIVersions.Has "cert-manager.io/v1" -}}cert-manager{{- else -}}helm{{- end -}}
{{- else -}}
{{- $mode -}}
{{- end -}}
{{- end -}}
