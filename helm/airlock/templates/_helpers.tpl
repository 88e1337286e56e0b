{{/*
Names, labels, images, addresses and the libconfig writer shared by every
template. Nothing here renders a resource.
*/}}

{{- define "airlock.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-<chart>, or fullnameOverride; at most 40 characters so that
"<fullname>-executor-<pool>-<suffix>" stays a valid name. */}}
{{- define "airlock.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels of every resource; ctx: dict "root" $ "c" <component object or nil> */}}
{{- define "airlock.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: airlock
{{ include "airlock.selectorLabels" . }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "airlock.selectorLabels" -}}
app.kubernetes.io/name: {{ include "airlock.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- if .c }}
app.kubernetes.io/component: {{ .c.component }}
{{- if .c.pool }}
airlock.dev/pool: {{ .c.pool }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Pod selector (NetworkPolicy peers) of every pod of one component kind. */}}
{{- define "airlock.componentSelector" -}}
matchLabels:
  app.kubernetes.io/name: {{ include "airlock.name" .root }}
  app.kubernetes.io/instance: {{ .root.Release.Name }}
  app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* "annotations:" block (commonAnnotations + extra) at indent ind, or
nothing; ctx: dict "root" $ "extra" <map or nil> "ind" N */}}
{{- define "airlock.annotations" -}}
{{- $a := merge (deepCopy (default dict .extra)) (deepCopy (default dict .root.Values.commonAnnotations)) -}}
{{- if $a }}
{{ printf "annotations:\n%s" (toYaml $a | indent 2) | indent (int (default 2 .ind)) }}
{{- end }}
{{- end -}}

{{/* image reference; ctx: dict "root" $ "image" <image values> */}}
{{- define "airlock.image" -}}
{{- $reg := default .image.registry .root.Values.global.imageRegistry -}}
{{- $repo := ternary (printf "%s/%s" $reg .image.repository) .image.repository (ne $reg "") -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repo .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{/* In-cluster DNS name of a Service; ctx: dict "root" $ "svc" <service name> */}}
{{- define "airlock.svcHost" -}}
{{- printf "%s.%s.svc.%s" .svc .root.Release.Namespace .root.Values.global.clusterDomain -}}
{{- end -}}

{{/* "<listenAddress>:<port>"; ctx: dict "root" $ "port" N */}}
{{- define "airlock.listen" -}}
{{- printf "%s:%d" .root.Values.global.listenAddress (int .port) -}}
{{- end -}}

{{/*
libconfig writer (the format of every service's --config file).
ctx: dict "v" <value> "ind" <indent string>. Maps become groups { k = v; },
lists of maps become lists ( {...}, {...} ), lists of scalars arrays [ ... ].
Whole numbers are written as integers, other numbers as floats. Setting names
are checked against libconfig's grammar, strings escaped; a value libconfig
cannot hold fails the render with the key that holds it.
*/}}
{{- define "airlock.libconfig.value" -}}
{{- $v := .v -}}
{{- $ind := .ind -}}
{{- $k := kindOf $v -}}
{{- if eq $k "string" -}}
{{- if regexMatch "[\\x00-\\x1f\\x7f]" $v -}}
{{- fail (printf "config: %q holds a control character, which the config file cannot carry" $v) -}}
{{- end -}}
"{{ $v | replace "\\" "\\\\" | replace "\"" "\\\"" }}"
{{- else if eq $k "bool" -}}
{{- ternary "true" "false" $v -}}
{{- else if has $k (list "float64" "float32" "int" "int64" "int32" "uint64") -}}
{{- if eq (float64 $v) (float64 (int64 $v)) -}}
{{- int64 $v -}}
{{- else -}}
{{- $v -}}
{{- end -}}
{{- else if eq $k "map" -}}
{
{{- range $key, $val := $v }}
{{- if not (regexMatch "^[A-Za-z*][-A-Za-z0-9_*]*$" $key) }}
{{- fail (printf "config: %q is not a valid setting name" $key) }}
{{- end }}
{{- if not (kindIs "invalid" $val) }}
{{ $ind }}  {{ $key }} = {{ include "airlock.libconfig.value" (dict "v" $val "ind" (printf "%s  " $ind)) }};
{{- end }}
{{- end }}
{{ $ind }}}
{{- else if eq $k "slice" -}}
{{- $maps := false -}}
{{- range $v }}{{ if kindIs "map" . }}{{ $maps = true }}{{ end }}{{ end -}}
{{- if $maps -}}
(
{{- range $i, $e := $v }}
{{- if not (kindIs "map" $e) }}
{{- fail "config: a list mixes groups and plain values" }}
{{- end }}
{{ $ind }}  {{ include "airlock.libconfig.value" (dict "v" $e "ind" (printf "%s  " $ind)) }}{{ if lt (add1 $i) (len $v) }},{{ end }}
{{- end }}
{{ $ind }})
{{- else -}}
[{{- range $i, $e := $v }}{{ if $i }}, {{ end }}{{ include "airlock.libconfig.value" (dict "v" $e "ind" $ind) }}{{ end -}}]
{{- end -}}
{{- else if eq $k "invalid" -}}
{{- fail "config: null values are not allowed (remove the key instead)" -}}
{{- else -}}
{{- fail (printf "config: values of kind %s cannot be written" $k) -}}
{{- end -}}
{{- end -}}

{{/* A whole config file from a map: top-level settings, one per line. */}}
{{- define "airlock.libconfig" -}}
# Rendered by the airlock Helm chart; validate with: airlock-<service> --config FILE --check-config
{{- range $key, $val := . }}
{{- if not (regexMatch "^[A-Za-z*][-A-Za-z0-9_*]*$" $key) }}
{{- fail (printf "config: %q is not a valid setting name" $key) }}
{{- end }}
{{ $key }} = {{ include "airlock.libconfig.value" (dict "v" $val "ind" "") }};
{{- end }}
{{- end -}}

{{/* Every component, as JSON {"items": [...]}: see _components.tpl. */}}
{{- define "airlock.componentList" -}}
{{- include "airlock.components" . -}}
{{- end -}}

{{/*
Deep merge that lets the override win even with false, 0, "" or an empty
list (Sprig's merge functions skip such values): maps merge key by key,
anything else is replaced. ctx: dict "base" <map> "over" <map>. JSON out.
*/}}
{{- define "airlock.deepMerge" -}}
{{- $out := deepCopy (default dict .base) -}}
{{- range $k, $v := (default dict .over) -}}
{{- if and (kindIs "map" $v) (kindIs "map" (get $out $k)) -}}
{{- $_ := set $out $k (include "airlock.deepMerge" (dict "base" (get $out $k) "over" $v) | fromJson) -}}
{{- else -}}
{{- $_ := set $out $k $v -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}
